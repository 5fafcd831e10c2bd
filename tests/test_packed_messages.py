"""PSRP messages serialized once per process say exactly what pypsrp would have said."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from pypsrp.complex_objects import (
    ApartmentState,
    CommandParameter,
    HostInfo,
    Pipeline,
    RemoteStreamOptions,
)
from pypsrp.messages import CreatePipeline
from pypsrp.serializer import Serializer, TaggedValue

from workers.exchange.packed_messages import PackedMessages
from workers.exchange.pipeline_command import command


def pipeline(*statements: tuple[str, dict[str, object]]) -> CreatePipeline:
    commands = []
    for cmdlet, params in statements:
        one = command(cmdlet, "2.3")
        for name, value in params.items():
            one.args.append(CommandParameter(name=name, value=value))
        one.end_of_statement = True
        commands.append(one)
    return CreatePipeline(
        no_input=True, apartment_state=ApartmentState(value=ApartmentState.UNKNOWN),
        remote_stream_options=RemoteStreamOptions(value=RemoteStreamOptions.ADD_INVOCATION_INFO),
        add_to_history=False, host_info=HostInfo(),
        pipeline=Pipeline(is_nested=False, cmds=commands, history=None,
                          redirect_err_to_out=False),
        is_nested=False)


def plain(message: CreatePipeline) -> bytes:
    return ET.tostring(Serializer().serialize(message), encoding="utf-8", method="xml")


def test_the_same_message_twice_is_the_same_bytes_as_pypsrp_makes() -> None:
    packed = PackedMessages()
    serializer = Serializer()
    first = pipeline(("Get-WebBinding", {"Name": "Exchange Back End", "Port": 444}),
                     ("Get-ChildItem", {"Path": "Cert:\\LocalMachine\\My"}))
    again = pipeline(("Get-WebBinding", {"Name": "Exchange Back End", "Port": 444}),
                     ("Get-ChildItem", {"Path": "Cert:\\LocalMachine\\My"}))
    assert packed.serialize(first, serializer.serialize) == plain(first)
    assert packed.serialize(again, serializer.serialize) == plain(again)
    assert len(packed) == 1


def test_any_difference_is_another_message() -> None:
    packed = PackedMessages()
    serializer = Serializer()
    messages = [pipeline(("Get-ExchangeCertificate", {"Server": "ex1"})),
                pipeline(("Get-ExchangeCertificate", {"Server": "ex2"})),
                pipeline(("Get-ExchangeCertificate", {"Server": 2})),
                pipeline(("Get-ExchangeCertificate", {"Server": True})),
                pipeline(("Get-ExchangeCertificate", {"Identity": "ex1"}))]
    out = [packed.serialize(m, serializer.serialize) for m in messages]
    assert out == [plain(m) for m in messages]
    assert len(set(out)) == len(messages) == len(packed)


def test_a_secure_string_is_never_kept() -> None:
    packed = PackedMessages()
    serializer = Serializer()
    secret = pipeline(("Export-ExchangeCertificate",
                       {"Password": TaggedValue("S", "not-kept")}))
    result = packed.serialize(secret, serializer.serialize)
    assert isinstance(result, ET.Element)  # serialized as pypsrp always does
    assert len(packed) == 0
