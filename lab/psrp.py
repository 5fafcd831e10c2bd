"""One WS-Man shell = one psrpcore `ServerRunspacePool` serving the lab's commands.

psrpcore keeps PSRP free of I/O: bytes go in with `receive_data`, events come out of
`next_event`, and replies queue up until `data_to_send` hands them out. This module is
the glue between that and WS-Man: it feeds Create/Command/Send payloads in, runs each
pipeline through `cmdlets.run_pipeline` when it is complete, and sorts the outgoing
fragments into one outbox per target (the pool itself or one pipeline), because WinRM
delivers a pipeline's output only to a Receive that names its CommandId.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

from psrpcore import (
    CreatePipelineEvent,
    EndOfPipelineInputEvent,
    GetAvailableRunspacesEvent,
    GetCommandMetadataEvent,
    PipelineInputEvent,
    PSRPCoreError,
    PSRPEvent,
    PSRPPayload,
    ResetRunspaceStateEvent,
    ServerPipeline,
    ServerRunspacePool,
    SetMaxRunspacesEvent,
    SetMinRunspacesEvent,
    StreamType,
)
from psrpcore._payload import PSRPMessage, PSRPMessageType, create_message
from psrpcore.types import (
    ApplicationPrivateData,
    EndOfPipelineInput,
    ErrorCategory,
    ErrorCategoryInfo,
    ErrorRecord,
    NETException,
    PipelineState,
    PSInvocationState,
    RunspacePoolState,
    RunspacePoolStateMsg,
    SessionCapability,
    serialize,
)
from psrpcore.types._serializer import _serialize_string

from lab import cmdlets, objects
from lab.org import Org

log = logging.getLogger(__name__)

_FRAGMENT_HEADER = 21  # object id (8) + fragment id (8) + flags (1) + length (4)
_TERMINAL = {PSInvocationState.Completed, PSInvocationState.Failed, PSInvocationState.Stopped}

# Errors PowerShell raises before or around a cmdlet rather than from inside it: they end
# the whole invocation (PipelineState Failed, pypsrp `had_errors`). An Exchange cmdlet's own
# failures are non-terminating: an error record on the error stream, then Completed.
TERMINATING_EXCEPTIONS = frozenset({
    "System.Management.Automation.ParameterBindingException",
    "System.Management.Automation.CommandNotFoundException",
    "System.Management.Automation.Host.HostException",
    "System.Management.Automation.RemoteException",  # NoLanguage: script text refused
})


class ShellClosed(Exception):
    """The shell was deleted (or the lab stopped) while a request was using it."""


class UnknownCommand(KeyError):
    """A Receive/Send/Signal named a CommandId this shell never created."""


class ProtocolError(ValueError):
    """The client's PSRP data could not be processed."""


@dataclass
class _Run:
    """A pipeline from Command to completion: it runs once defined and its input is in."""

    pipeline: ServerPipeline
    command_id: str
    defined: bool = False
    needs_input: bool = False
    input_ended: bool = False
    started: bool = False
    statements: list[list[cmdlets.Invocation]] = field(default_factory=list)


def pipeline_id_of(fragment: bytes) -> uuid.UUID:
    """The pipeline id in the PSRP message header of a start fragment (MS-PSRP 2.2.1)."""
    if len(fragment) < _FRAGMENT_HEADER + 40 or not fragment[16] & 0x1:
        raise ProtocolError("Command data is not the start of a PSRP message")
    (length,) = struct.unpack(">I", fragment[17:21])
    message = fragment[_FRAGMENT_HEADER : _FRAGMENT_HEADER + length]
    return uuid.UUID(bytes_le=bytes(message[24:40]))


def is_terminating(error: cmdlets.CommandError) -> bool:
    return error.exception_type in TERMINATING_EXCEPTIONS


def error_record_parts(error: cmdlets.CommandError) -> dict[str, Any]:
    """Keyword arguments for `ServerPipeline.write_error` that mirror a .NET ErrorRecord.

    The exception carries the .NET type name chain so clients see e.g.
    `System.InvalidOperationException`; the category's Reason is the short type name, as
    PowerShell fills it.
    """
    exception_type = error.exception_type or "System.Exception"
    exception = NETException(Message=error.message, HResult=-2146233087)
    chain = [exception_type]
    for base in ("System.SystemException", "System.Exception", "System.Object"):
        if base not in chain:
            chain.append(base)
    exception.PSObject.type_names = chain
    try:
        category = ErrorCategory[error.category or "NotSpecified"]
    except KeyError:
        category = ErrorCategory.NotSpecified
    target = error.target
    return {
        "exception": exception,
        "category_info": ErrorCategoryInfo(
            Category=category,
            Reason=exception_type.rsplit(".", 1)[-1],
            TargetName=None if target is None else str(target),
            TargetType=None if target is None else "String",
        ),
        "target_object": target,
        "fully_qualified_error_id": error.error_id or exception_type,
    }


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
class _Rendered:
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


class _Pool(ServerRunspacePool):
    """psrpcore's server pool, minus the work that repeats from request to request.

    Hooks into psrpcore's own flow, none of which changes a byte on the wire: a repeated
    client message reuses its earlier decoding; output already in CLIXML (`_Rendered`) and
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
        if isinstance(message, _Rendered):
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
        """`value` as `_Rendered` CLIXML when it comes from an `objects.Recipe`, else as is.

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
        return _Rendered(clixml)


class Shell:
    """A runspace pool on one endpoint of one server, driven by WS-Man requests.

    Every method may be called from any HTTP worker thread; one lock guards the
    psrpcore state and a condition wakes long-poll Receives when output is queued.
    """

    def __init__(
        self,
        *,
        org: Org,
        session: cmdlets.Session,
        shell_id: str,
        resource_uri: str,
        owner: str,
        client_ip: str,
        input_streams: str = "stdin pr",
        output_streams: str = "stdout",
    ) -> None:
        self.org = org
        self.session = session
        self.id = shell_id.upper()
        self.resource_uri = resource_uri
        self.owner = owner
        self.client_ip = client_ip
        self.input_streams = input_streams
        self.output_streams = output_streams
        self._pool = _Pool()
        self._cond = threading.Condition(threading.Lock())
        self._outbox: dict[uuid.UUID | None, bytearray] = {None: bytearray()}
        self._runs: dict[uuid.UUID, _Run] = {}
        self._closed = False
        self.last_used = time.monotonic()

    @property
    def state(self) -> str:
        return "Disconnected" if self._closed else "Connected"

    # -- WS-Man operations -------------------------------------------------------------

    def open(self, creation: bytes) -> None:
        """Feed the `creationXml` fragments (SessionCapability + InitRunspacePool)."""
        with self._cond:
            self._feed(creation, None)

    def command(self, command_id: str | None, fragment: bytes) -> str:
        """Start a pipeline from the first CreatePipeline fragment; returns its CommandId."""
        pipeline_id = pipeline_id_of(fragment)
        key = (command_id or str(pipeline_id)).upper()
        with self._cond:
            self._check_open()
            if pipeline_id not in self._runs:
                pipeline = ServerPipeline(self._pool, pipeline_id)
                self._runs[pipeline_id] = _Run(pipeline=pipeline, command_id=key)
                self._outbox[pipeline_id] = bytearray()
            self._feed(fragment, pipeline_id)
        return key

    def send(self, command_id: str | None, data: bytes) -> None:
        """Input on stdin/pr: the rest of a pipeline, its input, host responses or a key."""
        with self._cond:
            self._check_open()
            pipeline_id = self._lookup(command_id) if command_id else None
            self._feed(data, pipeline_id)

    def receive(self, command_id: str | None, timeout: float) -> tuple[bytes, bool] | None:
        """Wait up to `timeout` s for output; None when nothing came (WS-Man TimedOut).

        Returns (fragments, done) where done marks a pipeline whose output is complete.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            self._check_open()
            target = self._lookup(command_id) if command_id else None
            while True:
                box = self._outbox.get(target)
                if box is None:
                    raise UnknownCommand(command_id)
                run = self._runs.get(target) if target is not None else None
                done = run is not None and run.pipeline.state in _TERMINAL
                if box or done:
                    data = bytes(box)
                    box.clear()
                    return data, done
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
                self._check_open()

    def signal(self, command_id: str | None, code: str) -> None:
        """Terminate frees a finished pipeline; ctrl_c stops a running one."""
        with self._cond:
            self._check_open()
            if not command_id or command_id.upper() == self.id:
                return
            pipeline_id = self._lookup(command_id)
            run = self._runs[pipeline_id]
            if code.lower().endswith("ctrl_c"):  # WinRM's signal/ctrl_c or PowerShell's
                if run.pipeline.state == PSInvocationState.Running:
                    run.pipeline.stop()
                    self._drain()
                return
            if run.pipeline.state == PSInvocationState.Running:
                run.pipeline.stop()
            run.pipeline.close()
            del self._runs[pipeline_id]
            self._outbox.pop(pipeline_id, None)
            self._cond.notify_all()

    def close(self) -> None:
        """Delete: end every pipeline and the pool, and wake any waiting Receive."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            for run in self._runs.values():
                try:
                    if run.pipeline.state == PSInvocationState.Running:
                        run.pipeline.stop()
                    run.pipeline.close()
                except PSRPCoreError:
                    log.debug("pipeline %s could not be closed cleanly", run.command_id)
            self._runs.clear()
            if self._pool.state in (RunspacePoolState.Opened, RunspacePoolState.Closing):
                try:
                    self._pool.close()
                except PSRPCoreError:
                    log.debug("shell %s pool could not be closed cleanly", self.id)
            self._cond.notify_all()

    # -- internals (called with the lock held) ----------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ShellClosed(self.id)
        self.last_used = time.monotonic()

    def _lookup(self, command_id: str) -> uuid.UUID:
        try:
            pipeline_id = uuid.UUID(command_id)
        except ValueError:
            pipeline_id = None
        if pipeline_id is None or pipeline_id not in self._runs:
            for candidate, run in self._runs.items():
                if run.command_id == command_id.upper():
                    return candidate
            raise UnknownCommand(command_id)
        return pipeline_id

    def _feed(self, data: bytes, pipeline_id: uuid.UUID | None) -> None:
        try:
            self._pool.receive_data(PSRPPayload(data, StreamType.default, pipeline_id))
            while (event := self._pool.next_event()) is not None:
                self._handle(event)
        except ProtocolError:
            raise
        except Exception as exc:  # psrpcore raises more than PSRPCoreError on odd input
            log.debug("shell %s rejected PSRP data", self.id, exc_info=True)
            raise ProtocolError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            self._drain()

    def _drain(self) -> None:
        queued = False
        while (payload := self._pool.data_to_send()) is not None:
            box = self._outbox.get(payload.pipeline_id)
            if box is None:  # output of a pipeline the client already terminated
                continue
            box.extend(payload.data)
            queued = True
        if queued:
            self._cond.notify_all()

    def _handle(self, event: PSRPEvent) -> None:
        if isinstance(event, CreatePipelineEvent):
            run = self._runs[event.pipeline_id]
            # psrpcore already rebuilt the pipeline into `metadata`; `event.pipeline`
            # would deserialize it all over again.
            definition = run.pipeline.metadata
            run.defined = True
            run.needs_input = not definition.no_input
            run.statements = _statements(definition.commands)
            self._maybe_run(run)
        elif isinstance(event, EndOfPipelineInputEvent):
            run = self._runs[event.pipeline_id]
            run.input_ended = True
            self._maybe_run(run)
        elif isinstance(event, PipelineInputEvent):
            pass  # the lab's commands take parameters only, never pipeline input
        elif isinstance(event, GetCommandMetadataEvent):
            run = self._runs[event.pipeline_id]
            run.pipeline.start()
            run.pipeline.complete()
        elif isinstance(
            event, SetMaxRunspacesEvent | SetMinRunspacesEvent | ResetRunspaceStateEvent
        ):
            self._pool.runspace_availability_response(event.ci, True)
        elif isinstance(event, GetAvailableRunspacesEvent):
            self._pool.runspace_availability_response(event.ci, 1)

    def _maybe_run(self, run: _Run) -> None:
        if run.started or not run.defined or (run.needs_input and not run.input_ended):
            return
        run.started = True
        pipeline = run.pipeline
        pipeline.start()
        for statement in run.statements:
            failure = self._run_statement(pipeline, statement)
            if failure is not None:
                _fail(pipeline, failure)
                return
        pipeline.complete()

    def _run_statement(
        self, pipeline: ServerPipeline, statement: list[cmdlets.Invocation]
    ) -> cmdlets.CommandError | None:
        """Run one statement; returns the error if it ends the invocation."""
        try:
            outputs = cmdlets.run_pipeline(self.org, self.session, statement)
        except cmdlets.CommandError as error:
            if is_terminating(error):
                return error
            pipeline.write_error(**error_record_parts(error))
            return None
        except Exception as exc:  # a bug in the model must not take the transport down
            log.exception("lab command %s failed", statement[0].name if statement else "?")
            pipeline.write_error(**_internal_error(exc))
            return None
        for value in outputs:
            try:
                pipeline.write_output(self._pool.render(value))
            except Exception as exc:
                log.exception("lab output of %s could not be serialized", statement[0].name)
                pipeline.write_error(**_internal_error(exc))
        return None


def _fail(pipeline: ServerPipeline, error: cmdlets.CommandError) -> None:
    """End the invocation as Failed with the error as its reason (MS-PSRP PIPELINE_STATE)."""
    parts = error_record_parts(error)
    record = ErrorRecord(
        Exception=parts["exception"],
        CategoryInfo=parts["category_info"],
        TargetObject=parts["target_object"],
        FullyQualifiedErrorId=parts["fully_qualified_error_id"],
    )
    pipeline.prepare_message(
        PipelineState(
            PipelineState=int(PSInvocationState.Failed), ExceptionAsErrorRecord=record
        )
    )
    pipeline.state = PSInvocationState.Failed


def _statements(commands: list[Any]) -> list[list[cmdlets.Invocation]]:
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


def _internal_error(exc: Exception) -> dict[str, Any]:
    exception = NETException(Message=f"Internal lab error: {exc}", HResult=-2146233087)
    exception.PSObject.type_names = [
        "System.Management.Automation.RuntimeException",
        "System.SystemException",
        "System.Exception",
        "System.Object",
    ]
    return {
        "exception": exception,
        "category_info": ErrorCategoryInfo(
            Category=ErrorCategory.NotSpecified, Reason="RuntimeException"
        ),
        "fully_qualified_error_id": "LabInternalError",
    }
