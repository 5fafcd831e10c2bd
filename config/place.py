"""Where in the config a problem is: the file and the key, and the one-line error naming both.

Every config problem, found when the file is read or later at connect time (a password
variable that is not set), reads `<file>: <key>: <what is wrong>`, e.g.
`exauth.toml: org[0].exchange.auth: must be one of kerberos, negotiate, ntlm, basic, credssp
(got "foo")`, so the person fixing it knows which line to open.
"""

from __future__ import annotations

from dataclasses import dataclass

from config.errors import ConfigError

# The file read when no other is named (`--config`, $EXAUTH_CONFIG): see config/load.py.
DEFAULT_FILE = "exauth.toml"


@dataclass(frozen=True)
class Place:
    """A table's file and key (`org[0].exchange`); "" is the top of the file."""

    source: str = DEFAULT_FILE
    key: str = ""

    def child(self, name: str) -> Place:
        """The place of the table `name` inside this one."""
        return Place(self.source, f"{self.key}.{name}" if self.key else name)

    def error(self, field: str, problem: str) -> ConfigError:
        """The error for one key of this table."""
        return ConfigError(self.source, self.child(field).key, problem)
