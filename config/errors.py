"""The root of every exauth exception, and the configuration error.

Imports run bot -> workers -> config, so the one base class every product exception derives
from lives here, where all three can reach it. A caller that must stop on any product error
(and only on those) catches `ExauthError`; everyone else catches the subclass they can act
on. Each subclass's text is one line for people, never a traceback.

`permanent` says whether running the same job again can help: a wrong password or a bad
config fails the same way on every attempt (and retrying a wrong password locks the account
out), so the read jobs' retries stop for those (workers.jobs.read_jobs). It belongs to the class, so
whoever adds an exception decides it there.

One product exception is deliberately outside this tree: `workers.jobs.deadline.JobDeadline`
derives from BaseException so that no `except Exception` (ExauthError included) can swallow
a job's time limit.
"""

from __future__ import annotations

from typing import ClassVar


class ExauthError(Exception):
    """Any failure exauth itself reports; str() is one line for people."""

    # True when the same job fails the same way on every attempt (workers.jobs.read_jobs).
    permanent: ClassVar[bool] = False


class ConfigError(ExauthError, ValueError):
    """A configuration problem, rendered as `<file>: <key>: <what is wrong>`."""

    permanent = True  # the file does not change between two attempts of one job

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")
