"""The runspace pool psrpcore runs for each shell, minus the work that repeats per request.

Decoded client messages and rendered CLIXML (output templates, constant protocol messages)
are cached process-wide in small LRU maps; nothing here changes a byte on the wire.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree

from psrpcore import (
    PSRPCoreError,
    PSRPEvent,
    ServerRunspacePool,
    StreamType,
)
from psrpcore._payload import PSRPMessage, PSRPMessageType, create_message
from psrpcore.types import (
    ApplicationPrivateData,
    EndOfPipelineInput,
    PipelineState,
    RunspacePoolStateMsg,
    SessionCapability,
    serialize,
)
from psrpcore.types._serializer import _serialize_string

from lab import objects


class _Memo:
    """A small least-recently-used map shared by every shell in the lab process."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


# A client sends the same CreatePipeline bytes for the same command every time (the
# pipeline id sits in the message header, not the data) and the same SessionCapability and
# InitRunspacePool for every pool; decoding them was about half of the lab's CPU per
# request. The decoded objects are only read afterwards, so one decoding serves repeats.
_DECODED_KINDS = frozenset({PSRPMessageType.CreatePipeline, PSRPMessageType.InitRunspacePool,
                            PSRPMessageType.SessionCapability})
_DECODED = _Memo(1024)
# CLIXML of output templates (`objects.Recipe`) and of constant protocol messages.
_RENDERED = _Memo(1024)


@dataclass(frozen=True)
class Rendered:
    """Pipeline output already serialized to CLIXML, queued as it is."""

    clixml: bytes


def _constant_key(message: Any) -> tuple[Any, ...] | None:
    """A cache key for the protocol messages that read the same every time, else None.

    State changes without an error, and the server's capability and private data (the
    same for every pool the lab opens): psrpcore would serialize them afresh each time.
    """
    if isinstance(message, PipelineState | RunspacePoolStateMsg):
        if getattr(message, "ExceptionAsErrorRecord", None) is not None:
            return None
        state = message.PipelineState if isinstance(message, PipelineState) \
            else message.RunspaceState
        return (type(message).__name__, int(state))
    if isinstance(message, SessionCapability | ApplicationPrivateData):
        return (type(message).__name__, *(
            (p.name, repr(p.get_value(message))) for p in message.PSObject.extended_properties))
    return None


def escape_to_strings(element: ElementTree.Element) -> None:
    """Escape every `<ToString>` text as PowerShell escapes its strings in CLIXML.

    psrpcore 0.3 writes `<S>` texts and property names escaped - a control character as
    `_xHHHH_`, a literal `_x` as `_x005F_x` - and reads `<ToString>` back unescaped, but
    writes `<ToString>` raw. An ErrorRecord's ToString is its message, so a message with a
    control character made XML no parser accepts (pypsrp then lost the whole error record),
    and a certificate's CRLF line ends arrived as bare LFs. Real PowerShell writes them
    `_x000D__x000A_` (as in the CLIXML fixtures taken from Exchange).
    """
    for node in element.iter("ToString"):
        if node.text:
            node.text = _serialize_string(node.text)


class LabPool(ServerRunspacePool):
    """psrpcore's server pool, minus the work that repeats from request to request.

    Hooks into psrpcore's own flow, none of which changes a byte on the wire: a repeated
    client message reuses its earlier decoding; output already in CLIXML (`Rendered`) and
    protocol messages that never vary (`_constant_key`) are framed without going through
    the serializer again. Everything else is psrpcore's serializer, with one correction
    (`escape_to_strings`) so that every message reads as PowerShell writes it. (They lean on
    psrpcore 0.3's internal `_process_message`, `_send_buffer`, `_fragment_counter` and
    `_serialize_string`; pyproject keeps psrpcore below 0.4.)
    """

    def _process_message(self, message: PSRPMessage) -> PSRPEvent:
        kind = message.message_type
        # SecureStrings are encrypted with this pool's session key: never share those.
        if kind not in _DECODED_KINDS or b"<SS" in message.data:
            return super()._process_message(message)
        key = (kind, bytes(message.data))
        known = _DECODED.get(key)
        if known is None:
            event = super()._process_message(message)
            pipeline = self.pipeline_table.get(message.pipeline_id)  # type: ignore[arg-type]
            _DECODED.put(key, (event._ps_object, getattr(pipeline, "metadata", None)))
            return event
        ps_object, metadata = known
        event = PSRPEvent.create(kind, ps_object, message.runspace_pool_id, message.pipeline_id)
        if kind == PSRPMessageType.CreatePipeline:
            pipeline = self.pipeline_table.get(message.pipeline_id)  # type: ignore[arg-type]
            if pipeline is None:  # as psrpcore itself would refuse it
                raise PSRPCoreError(
                    f"Failed to find pipeline for incoming event {message.pipeline_id!s}")
            pipeline.metadata = metadata
        else:  # psrpcore's own handling, which only reads the decoded message
            getattr(self, f"_process_{kind.name}")(event)
        return event

    def prepare_message(
        self,
        message: Any,
        message_type: PSRPMessageType | None = None,
        pipeline_id: uuid.UUID | None = None,
        stream_type: StreamType = StreamType.default,
    ) -> None:
        if isinstance(message, Rendered):
            self._queue(PSRPMessageType.PipelineOutput, message.clixml, pipeline_id, stream_type)
            return
        key = _constant_key(message)
        if key is None:
            if message is None or isinstance(message, EndOfPipelineInput):  # no CLIXML
                super().prepare_message(message, message_type, pipeline_id, stream_type)
                return
            try:
                kind = message_type or PSRPMessageType.get_message_id(type(message))
            except KeyError:  # as psrpcore says it
                raise ValueError("message_type must be specified when the message is not a "
                                 "PSRP message") from None
            self._queue(kind, self._clixml(message), pipeline_id, stream_type)
            return
        clixml = _RENDERED.get(key)
        if clixml is None:
            clixml = self._clixml(message)
            _RENDERED.put(key, clixml)
        kind = message_type or PSRPMessageType.get_message_id(type(message))
        self._queue(kind, clixml, pipeline_id, stream_type)

    def _queue(self, kind: PSRPMessageType, clixml: bytes, pipeline_id: uuid.UUID | None,
               stream_type: StreamType) -> None:
        """Frame CLIXML as a PSRP message and queue it, as psrpcore's own would be."""
        data = create_message(False, kind, clixml, self.runspace_pool_id, pipeline_id)
        self._send_buffer.append(PSRPMessage(
            kind, bytearray(data), self.runspace_pool_id, pipeline_id, self._fragment_counter,
            stream_type))

    def _clixml(self, value: Any) -> bytes:
        element = serialize(value, self._cipher, our_capability=self.our_capability,
                            their_capability=self.their_capability)
        escape_to_strings(element)
        return ElementTree.tostring(element, encoding="utf-8", method="xml")

    def render(self, value: Any) -> Any:
        """`value` as `Rendered` CLIXML when it comes from an `objects.Recipe`, else as is.

        The template is serialized once; each output only swaps its time stamp's text in,
        which gives byte for byte what psrpcore makes of the finished object.
        """
        recipe = objects.recipe_of(value)
        if recipe is None:
            return value
        capability = self.their_capability
        key = (recipe.key, None if capability is None else str(capability.protocolversion))
        clixml = _RENDERED.get(key)
        if clixml is None:
            clixml = self._clixml(recipe.template)
            _RENDERED.put(key, clixml)
        if recipe.stamp is not None:
            clixml = clixml.replace(objects.STAMP_TEXT, objects.clixml_time(recipe.stamp))
        return Rendered(clixml)
