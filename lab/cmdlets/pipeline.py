"""Running one pipeline of commands on one endpoint, and recording every command.

Before a command runs, the lab checks what real Exchange checks first: NoLanguage refuses
script text, a command exists only on its endpoint (or on the host after the snap-in), a
scenario fault or a broken back end/serialization-signing state fails Exchange cmdlets the
way it does on a real server. `-WhatIf` on a changing command does nothing.
"""

from __future__ import annotations

from typing import Any

from lab.cmdlets.binder import Call, Command, CommandError, Invocation, Session, bind, recorded
from lab.cmdlets.table import COMMANDS
from lab.org import Org


def run_pipeline(org: Org, session: Session, commands: list[Invocation]) -> list[Any]:
    """Run one pipeline; record each command; return its output or raise CommandError."""
    output: list[Any] = []
    for position, invocation in enumerate(commands):
        try:
            output = _run_one(org, session, invocation, output if position else [])
        except CommandError as error:
            org.record_call(server=session.server, endpoint=session.endpoint,
                            command=invocation.name,
                            parameters=recorded(invocation.parameters),
                            outcome=f"error: {error.message}")
            raise
        org.record_call(server=session.server, endpoint=session.endpoint,
                        command=invocation.name, parameters=recorded(invocation.parameters),
                        outcome="ok")
    return output


def _run_one(org: Org, session: Session, invocation: Invocation,
             pipeline_input: list[Any]) -> list[Any]:
    if invocation.is_script:
        if session.endpoint == "exchange":
            raise CommandError(
                "The syntax is not supported by this runspace. This can occur if the runspace"
                " is in no-language mode.",
                exception_type="System.Management.Automation.RemoteException",
                category="ParserError", error_id="ScriptsNotAllowed")
        raise CommandError(
            "The lab's host endpoint runs commands only; send script text nowhere.",
            exception_type="System.Management.Automation.RemoteException",
            category="ParserError", error_id="ScriptsNotAllowed")
    command = _lookup(session, invocation.name)
    args = bind(command, invocation)
    if pipeline_input and not command.takes_input:
        raise CommandError(
            "The input object cannot be bound to any parameters for the command either because "
            "the command does not take pipeline input or the input and its properties do not "
            "match any of the parameters that take pipeline input.",
            exception_type="System.Management.Automation.ParameterBindingException",
            category="InvalidArgument", error_id=f"InputObjectNotBound,{command.error_suffix}")
    call = Call(org=org, session=session, command=command, args=args, input=pipeline_input)
    fault = org.command_fault(session.server, session.endpoint, command.name)
    if fault is not None:
        raise call.fail(fault)
    if command.endpoint == "exchange" and session.endpoint == "exchange":
        broken = org.exchange_endpoint_failure(session.server)
        if broken is not None:
            raise CommandError(
                f"Processing data from remote server {org.server_info(session.server)['fqdn']} "
                f"failed with the following error message: {broken}",
                exception_type="System.Management.Automation.Remoting."
                               "PSRemotingTransportException",
                category="ResourceUnavailable", error_id="JobFailure")
        signing = org.signing_failure(session.server)
        if signing is not None:
            raise call.fail(signing, code="SerializationSigning")
    if command.changes and call.get("WhatIf"):
        return []
    return command.run(call)


def _lookup(session: Session, name: str) -> Command:
    command = COMMANDS.get(name.strip().lower())
    available = command is not None and (
        command.endpoint in ("any", session.endpoint)
        or (command.endpoint == "exchange" and session.snapin_loaded))
    if command is None or not available:
        raise CommandError(
            f"The term '{name}' is not recognized as the name of a cmdlet, function, script "
            "file, or operable program. Check the spelling of the name, or if a path was "
            "included, verify that the path is correct and try again.",
            exception_type="System.Management.Automation.CommandNotFoundException",
            category="ObjectNotFound", error_id="CommandNotFoundException", target=name)
    return command
