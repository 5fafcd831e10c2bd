"""The answers to shell requests: Create, Get, Command, Send/Signal/Delete and Receive."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET

from lab.wsman.envelope_writer import new_envelope, qname, serialize_envelope
from lab.wsman.request_parsing import Request
from lab.wsman.vocabulary import (
    COMMAND_DONE,
    COMMAND_RUNNING,
    RESPONSE_ACTIONS,
)


def _response(request: Request) -> tuple[ET.Element, ET.Element]:
    return new_envelope(RESPONSE_ACTIONS[request.action], request.message_id)


def create_response(
    request: Request,
    *,
    shell_id: str,
    address: str,
    input_streams: str,
    output_streams: str,
    owner: str,
    client_ip: str,
) -> bytes:
    envelope, body = _response(request)
    created = ET.SubElement(body, qname("wst", "ResourceCreated"))
    ET.SubElement(created, qname("wsa", "Address")).text = address
    params = ET.SubElement(created, qname("wsa", "ReferenceParameters"))
    ET.SubElement(params, qname("wsman", "ResourceURI")).text = request.resource_uri
    selectors = ET.SubElement(params, qname("wsman", "SelectorSet"))
    ET.SubElement(selectors, qname("wsman", "Selector"), Name="ShellId").text = shell_id
    _shell_element(
        body,
        shell_id=shell_id,
        resource_uri=request.resource_uri,
        owner=owner,
        client_ip=client_ip,
        state=None,
        input_streams=input_streams,
        output_streams=output_streams,
    )
    return serialize_envelope(envelope)


def _shell_element(
    parent: ET.Element,
    *,
    shell_id: str,
    resource_uri: str,
    owner: str,
    client_ip: str,
    state: str | None,
    input_streams: str,
    output_streams: str,
) -> None:
    shell = ET.SubElement(parent, qname("rsp", "Shell"))
    ET.SubElement(shell, qname("rsp", "ShellId")).text = shell_id
    ET.SubElement(shell, qname("rsp", "ResourceUri")).text = resource_uri
    ET.SubElement(shell, qname("rsp", "Owner")).text = owner
    ET.SubElement(shell, qname("rsp", "ClientIP")).text = client_ip
    if state is not None:
        ET.SubElement(shell, qname("rsp", "State")).text = state
    ET.SubElement(shell, qname("rsp", "IdleTimeOut")).text = "PT7200.000S"
    ET.SubElement(shell, qname("rsp", "InputStreams")).text = input_streams
    ET.SubElement(shell, qname("rsp", "OutputStreams")).text = output_streams
    ET.SubElement(shell, qname("rsp", "ShellRunTime")).text = "P0DT0H0M0S"
    ET.SubElement(shell, qname("rsp", "ShellInactivity")).text = "P0DT0H0M0S"


def get_shell_response(
    request: Request,
    *,
    shell_id: str,
    resource_uri: str,
    owner: str,
    client_ip: str,
    state: str,
    input_streams: str,
    output_streams: str,
) -> bytes:
    envelope, body = _response(request)
    _shell_element(
        body,
        shell_id=shell_id,
        resource_uri=resource_uri,
        owner=owner,
        client_ip=client_ip,
        state=state,
        input_streams=input_streams,
        output_streams=output_streams,
    )
    return serialize_envelope(envelope)


def command_response(request: Request, command_id: str) -> bytes:
    envelope, body = _response(request)
    response = ET.SubElement(body, qname("rsp", "CommandResponse"))
    ET.SubElement(response, qname("rsp", "CommandId")).text = command_id
    return serialize_envelope(envelope)


def empty_response(request: Request) -> bytes:
    """SendResponse / SignalResponse / DeleteResponse: an acknowledgement only."""

    envelope, body = _response(request)
    if request.action == "Send":
        ET.SubElement(body, qname("rsp", "SendResponse"))
    elif request.action == "Signal":
        ET.SubElement(body, qname("rsp", "SignalResponse"))
    return serialize_envelope(envelope)


def receive_response(
    request: Request,
    *,
    stream: str,
    command_id: str | None,
    data: bytes,
    done: bool,
) -> bytes:
    """One Receive answer. `done` marks a command whose output is complete."""
    envelope, body = _response(request)
    response = ET.SubElement(body, qname("rsp", "ReceiveResponse"))
    attrib = {"Name": stream}
    if command_id is not None:
        attrib["CommandId"] = command_id
    ET.SubElement(response, qname("rsp", "Stream"), attrib).text = base64.b64encode(data).decode()
    if command_id is not None:
        state_attrib = {"CommandId": command_id, "State": COMMAND_DONE if done else COMMAND_RUNNING}
        state = ET.SubElement(response, qname("rsp", "CommandState"), state_attrib)
        if done:
            ET.SubElement(state, qname("rsp", "ExitCode")).text = "0"
    return serialize_envelope(envelope)

