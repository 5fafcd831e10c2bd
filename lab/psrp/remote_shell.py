"""A WS-Man shell: one runspace pool on one endpoint of one server, driven by requests.

Create/Command/Send feed PSRP fragments into the pool; its replies are sorted into one
outbox per target (the pool or one pipeline), because WinRM delivers a pipeline's output
only to a Receive that names its CommandId; Receive long-polls its outbox.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
import uuid

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
    SetMaxRunspacesEvent,
    SetMinRunspacesEvent,
    StreamType,
)
from psrpcore.types import (
    PSInvocationState,
    RunspacePoolState,
)

from lab import cmdlets
from lab.org import Org
from lab.psrp.runs import TERMINAL, PipelineRun, run_when_ready, statements_of
from lab.psrp.runspace_pool import LabPool

log = logging.getLogger(__name__)


_FRAGMENT_HEADER = 21  # object id (8) + fragment id (8) + flags (1) + length (4)


class ShellClosed(Exception):
    """The shell was deleted (or the lab stopped) while a request was using it."""


class UnknownCommand(KeyError):
    """A Receive/Send/Signal named a CommandId this shell never created."""


class ProtocolError(ValueError):
    """The client's PSRP data could not be processed."""


def pipeline_id_of(fragment: bytes) -> uuid.UUID:
    """The pipeline id in the PSRP message header of a start fragment (MS-PSRP 2.2.1)."""
    if len(fragment) < _FRAGMENT_HEADER + 40 or not fragment[16] & 0x1:
        raise ProtocolError("Command data is not the start of a PSRP message")
    (length,) = struct.unpack(">I", fragment[17:21])
    message = fragment[_FRAGMENT_HEADER : _FRAGMENT_HEADER + length]
    return uuid.UUID(bytes_le=bytes(message[24:40]))


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
        self._pool = LabPool()
        self._cond = threading.Condition(threading.Lock())
        self._outbox: dict[uuid.UUID | None, bytearray] = {None: bytearray()}
        self._runs: dict[uuid.UUID, PipelineRun] = {}
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
                self._runs[pipeline_id] = PipelineRun(pipeline=pipeline, command_id=key)
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
                done = run is not None and run.pipeline.state in TERMINAL
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
            run.statements = statements_of(definition.commands)
            run_when_ready(run, self._pool, self.org, self.session)
        elif isinstance(event, EndOfPipelineInputEvent):
            run = self._runs[event.pipeline_id]
            run.input_ended = True
            run_when_ready(run, self._pool, self.org, self.session)
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
