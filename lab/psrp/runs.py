"""A pipeline from its Command to its end: when it runs, and how its statements run.

Each statement goes through `cmdlets.run_pipeline`; its output is rendered by the pool and
its errors become error records, or end the invocation when they are terminating.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from psrpcore import (
    ServerPipeline,
)
from psrpcore.types import (
    PSInvocationState,
)

from lab import cmdlets
from lab.org import Org
from lab.psrp.error_records import error_record_parts, fail_pipeline, internal_error, is_terminating
from lab.psrp.runspace_pool import LabPool

log = logging.getLogger(__name__)


TERMINAL = {PSInvocationState.Completed, PSInvocationState.Failed, PSInvocationState.Stopped}


@dataclass
class PipelineRun:
    """A pipeline from Command to completion: it runs once defined and its input is in."""

    pipeline: ServerPipeline
    command_id: str
    defined: bool = False
    needs_input: bool = False
    input_ended: bool = False
    started: bool = False
    statements: list[list[cmdlets.Invocation]] = field(default_factory=list)


def statements_of(commands: list[Any]) -> list[list[cmdlets.Invocation]]:
    """psrpcore commands -> statements of `Invocation`s (`add_statement` splits them)."""
    statements: list[list[cmdlets.Invocation]] = [[]]
    for command in commands:
        statements[-1].append(
            cmdlets.Invocation(
                name=str(command.command_text),
                parameters=[
                    (None if name is None else str(name), value)
                    for name, value in command.parameters
                ],
                is_script=bool(command.is_script),
            )
        )
        if command.end_of_statement:
            statements.append([])
    return [s for s in statements if s]


def run_when_ready(run: PipelineRun, pool: LabPool, org: Org,
                   session: cmdlets.Session) -> None:
    """Run a pipeline once it is defined and its input (if it takes any) has ended."""
    if run.started or not run.defined or (run.needs_input and not run.input_ended):
        return
    run.started = True
    pipeline = run.pipeline
    pipeline.start()
    for statement in run.statements:
        failure = _run_statement(pipeline, statement, pool, org, session)
        if failure is not None:
            fail_pipeline(pipeline, failure)
            return
    pipeline.complete()


def _run_statement(
    pipeline: ServerPipeline, statement: list[cmdlets.Invocation], pool: LabPool, org: Org,
    session: cmdlets.Session,
) -> cmdlets.CommandError | None:
    """Run one statement; returns the error if it ends the invocation."""
    try:
        outputs = cmdlets.run_pipeline(org, session, statement)
    except cmdlets.CommandError as error:
        if is_terminating(error):
            return error
        pipeline.write_error(**error_record_parts(error))
        return None
    except Exception as exc:  # a bug in the model must not take the transport down
        log.exception("lab command %s failed", statement[0].name if statement else "?")
        pipeline.write_error(**internal_error(exc))
        return None
    for value in outputs:
        try:
            pipeline.write_output(pool.render(value))
        except Exception as exc:
            log.exception("lab output of %s could not be serialized", statement[0].name)
            pipeline.write_error(**internal_error(exc))
    return None
