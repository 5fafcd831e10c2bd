"""A pypsrp `Command` that is not deep-copied each time its pipeline is serialized.

pypsrp's `Pipeline._get_statements` deep-copies every command each time the pipeline is
packed (twice per message: once for Cmds, once for ExtraCmds), a leftover from when it
built XML with lxml, where appending one element to two parents moved it. Its serializer
now builds fresh ElementTree elements on every call, so the copies buy nothing; yet each
copies the command's whole property metadata, and in a profile of a 50-server status they
were the largest single share of the client's CPU (about a third of it). The commands of
one invocation are built here and never changed after it is sent, so sharing them is
safe.
"""

from __future__ import annotations

from typing import Any

from pypsrp.complex_objects import Command


class PipelineCommand(Command):
    """A `Command` whose deep copy is itself (see the module docstring)."""

    def __deepcopy__(self, memo: dict[int, Any]) -> PipelineCommand:
        return self


def command(cmdlet: str, protocol_version: str) -> PipelineCommand:
    """The command for one cmdlet, as `PowerShell.add_cmdlet` would build it."""
    return PipelineCommand(cmdlet, protocol_version=protocol_version, is_script=False,
                           use_local_scope=None)
