"""A local stand-in for Slack's Web API, over real HTTP on 127.0.0.1.

slack_sdk's WebClient talks to it exactly as to slack.com (point `base_url` / `[slack]
api_url` at `mock.api_url`). It answers the methods exauth uses with Slack-shaped JSON,
records every call (method, decoded params, headers) for assertions, enforces the Block
Kit limits Slack enforces (so a message that Slack would reject fails here too), and can
answer HTTP 429 with Retry-After to exercise rate-limit retries. It also accepts posts to
response URLs (`/response/...`), which is how `respond()` answers a slash command.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from websockets.sync.server import ServerConnection, serve

BOT_TOKEN = "xoxb-test-0000-exauth"
APP_TOKEN = "xapp-1-A0EXAUTH-0000-exauthtest"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TEAM_ID = "T0EXAUTH"
BOT_USER_ID = "U0EXBOT"

MAX_BLOCKS = 50
MAX_TEXT = 3000
MAX_HEADER = 150


@dataclass
class Call:
    method: str  # e.g. "chat.update"; "response" for response-URL posts
    params: dict[str, Any]
    headers: dict[str, str]
    status: int = 200
    response: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)  # when the mock answered it


class SlackMock:
    """Start with `SlackMock().start()` (or the `slack` fixture)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.usergroups: dict[str, list[str]] = {}
        self.channel_members: dict[str, list[str]] = {}  # conversations.members, paged by 2
        self.uploads: dict[str, bytes] = {}  # file id -> bytes posted to its upload URL
        self.published: dict[str, dict[str, Any]] = {}  # user -> the Home view (views.publish)
        self._files = 0
        self.users: dict[str, dict[str, Any]] = {}
        self._rate_limits: dict[str, list[int]] = {}
        self._errors: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._ts = 0
        self._changed = threading.Condition(self._lock)
        self._server: ThreadingHTTPServer | None = None
        self.socket_url = ""  # what apps.connections.open hands out (a SocketModeMock's)

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> SlackMock:
        mock = self

        class Handler(_Handler):
            owner = mock

        server = _Server(("127.0.0.1", 0), Handler)
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         name="slack-mock", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the mock first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def api_url(self) -> str:
        return self.url + "/api/"

    def response_url(self, name: str = "cmd") -> str:
        return f"{self.url}/response/{name}"

    # --- behaviour knobs -----------------------------------------------------------------

    def rate_limit_next(self, method: str, retry_after: int = 1, times: int = 1) -> None:
        """The next `times` calls of `method` get HTTP 429 with this Retry-After."""
        with self._lock:
            self._rate_limits.setdefault(method, []).extend([retry_after] * times)

    def fail_next(self, method: str, error: str) -> None:
        """The next call of `method` gets `{"ok": false, "error": error}` (HTTP 200)."""
        with self._lock:
            self._errors.setdefault(method, []).append(error)

    # --- assertions helpers --------------------------------------------------------------

    def calls_of(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def wait_for(self, method: str, count: int = 1, timeout: float = 10.0) -> list[Call]:
        """Block until `count` calls of `method` were answered; returns them."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [c for c in self.calls if c.method == method]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"Slack mock: expected {count} {method} call(s), got "
                                         f"{len(found)}: {[c.method for c in self.calls]}")
                self._changed.wait(left)

    # --- the API -------------------------------------------------------------------------

    def handle(self, method: str, params: dict[str, Any], headers: dict[str, str]) -> tuple[
            int, dict[str, Any], dict[str, str]]:
        with self._lock:
            pending = self._rate_limits.get(method)
            if pending:
                retry_after = pending.pop(0)
                body = {"ok": False, "error": "ratelimited"}
                self._record(Call(method, params, headers, 429, body))
                return 429, body, {"Retry-After": str(retry_after)}
            status, body = 200, self._answer(method, params, headers)
            self._record(Call(method, params, headers, status, body))
            return status, body, {}

    def _record(self, call: Call) -> None:
        self.calls.append(call)
        self._changed.notify_all()

    def _answer(self, method: str, params: dict[str, Any], headers: dict[str, str]) -> dict:
        if method == "response":
            return {"ok": True}
        auth = headers.get("authorization", "")
        if method == "apps.connections.open":  # the one method that takes the app token
            if auth != f"Bearer {APP_TOKEN}":
                return {"ok": False, "error": "invalid_auth"}
            if not self.socket_url:
                return {"ok": False, "error": "socket_mode_not_enabled"}
            return {"ok": True, "url": self.socket_url}
        if auth != f"Bearer {BOT_TOKEN}" and params.get("token") != BOT_TOKEN:
            return {"ok": False, "error": "not_authed" if not auth else "invalid_auth"}
        errors = self._errors.get(method)
        if errors:
            return {"ok": False, "error": errors.pop(0)}
        if method == "auth.test":
            return {"ok": True, "url": "https://exauth-test.slack.com/", "team": "exauth test",
                    "user": "exauth", "team_id": TEAM_ID, "user_id": BOT_USER_ID,
                    "bot_id": "B0EXBOT", "is_enterprise_install": False}
        if method in ("chat.postMessage", "chat.update"):
            problem = block_problem(params)
            if problem:
                return {"ok": False, "error": "invalid_blocks", "errors": [problem]}
            channel = params.get("channel")
            if not channel:
                return {"ok": False, "error": "channel_not_found"}
            if method == "chat.postMessage":
                self._ts += 1
                ts = f"1700000000.{self._ts:06d}"
            else:
                ts = params.get("ts")
                if not ts:
                    return {"ok": False, "error": "message_not_found"}
            return {"ok": True, "channel": channel, "ts": ts,
                    "text": params.get("text", ""),
                    "message": {"type": "message", "user": BOT_USER_ID, "bot_id": "B0EXBOT",
                                "text": params.get("text", ""), "ts": ts}}
        if method == "chat.postEphemeral":
            self._ts += 1
            return {"ok": True, "message_ts": f"1700000000.{self._ts:06d}"}
        if method == "views.open":
            view = params.get("view")
            view = json.loads(view) if isinstance(view, str) else view
            if not params.get("trigger_id") or not isinstance(view, dict):
                return {"ok": False, "error": "invalid_arguments"}
            return {"ok": True, "view": {**view, "id": "V0EXAUTH"}}
        if method == "views.publish":
            view = params.get("view")
            view = json.loads(view) if isinstance(view, str) else view
            user = params.get("user_id")
            if not user or not isinstance(view, dict) or view.get("type") != "home":
                return {"ok": False, "error": "invalid_arguments"}
            problem = view_problem(view)
            if problem:
                return {"ok": False, "error": "invalid_arguments", "errors": [problem]}
            self.published[str(user)] = view
            return {"ok": True, "view": {**view, "id": f"VHOME{user}"}}
        if method == "views.update":
            view = params.get("view")
            view = json.loads(view) if isinstance(view, str) else view
            if not params.get("view_id") or not isinstance(view, dict):
                return {"ok": False, "error": "invalid_arguments"}
            problem = view_problem(view)
            if problem:
                return {"ok": False, "error": "invalid_arguments", "errors": [problem]}
            return {"ok": True, "view": {**view, "id": params["view_id"]}}
        if method == "conversations.members":
            channel = str(params.get("channel"))
            if channel not in self.channel_members:
                return {"ok": False, "error": "channel_not_found"}
            members = self.channel_members[channel]
            start = int(params.get("cursor") or 0)
            page = members[start:start + 2]  # small pages: the caller must follow cursors
            cursor = str(start + 2) if start + 2 < len(members) else ""
            return {"ok": True, "members": page, "response_metadata": {"next_cursor": cursor}}
        if method == "files.getUploadURLExternal":
            if not params.get("filename") or not str(params.get("length") or "").isdigit():
                return {"ok": False, "error": "invalid_arguments"}
            self._files += 1
            file_id = f"F0EXAUTH{self._files:04d}"
            return {"ok": True, "file_id": file_id,
                    "upload_url": f"{self.url}/upload/{file_id}"}
        if method == "files.completeUploadExternal":
            files = params.get("files")
            files = json.loads(files) if isinstance(files, str) else files
            if not files or any(f.get("id") not in self.uploads for f in files):
                return {"ok": False, "error": "file_not_found"}
            return {"ok": True, "files": [{"id": f["id"], "title": f.get("title"),
                                           "channels": [params.get("channel_id")]}
                                          for f in files]}
        if method == "usergroups.users.list":
            group = params.get("usergroup")
            if group not in self.usergroups:
                return {"ok": False, "error": "no_such_subteam"}
            return {"ok": True, "users": list(self.usergroups[group])}
        if method == "views.open":  # the deny modal; fail_next("views.open", ...) refuses it
            return {"ok": True, "view": {"id": "V0EXAUTH", "type": "modal"}}
        if method == "users.info":
            user = self.users.get(str(params.get("user")))
            if user is None:
                return {"ok": False, "error": "user_not_found"}
            return {"ok": True, "user": user}
        return {"ok": False, "error": "unknown_method"}


def view_problem(view: dict[str, Any]) -> str | None:
    """What Slack would reject in a view: over 100 blocks, a modal title over 24
    characters, or a block text out of bounds."""
    blocks = view.get("blocks") or []
    if len(blocks) > 100:
        return "must be no more than 100 items [json-pointer:/view/blocks]"
    title = (view.get("title") or {}).get("text", "")
    if view.get("type") == "modal" and not 0 < len(title) <= 24:
        return "title must be 1-24 characters [json-pointer:/view/title/text]"
    limited = {"blocks": blocks[:MAX_BLOCKS]}
    return block_problem(limited) if blocks else None


def block_problem(params: dict[str, Any]) -> str | None:
    """What Slack would reject in a message's blocks, or None."""
    blocks = params.get("blocks")
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    if not blocks:
        return None
    if len(blocks) > MAX_BLOCKS:
        return f"must be no more than {MAX_BLOCKS} items [json-pointer:/blocks]"
    for i, block in enumerate(blocks):
        texts = []
        if isinstance(block.get("text"), dict):
            texts.append(block["text"].get("text", ""))
        for element in block.get("elements") or []:
            if isinstance(element, dict) and "text" in element:
                texts.append(element["text"] if isinstance(element["text"], str)
                             else element["text"].get("text", ""))
        limit = MAX_HEADER if block.get("type") == "header" else MAX_TEXT
        for text in texts:
            if not text:
                return f"must be more than 0 characters [json-pointer:/blocks/{i}/text]"
            if len(text) > limit:
                return f"must be less than {limit + 1} characters [json-pointer:/blocks/{i}/text]"
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # read by listen() in __init__, so a class attribute


class _Handler(BaseHTTPRequestHandler):
    owner: SlackMock
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        if path.startswith("/upload/"):  # a file upload URL (files.getUploadURLExternal)
            with self.owner._lock:
                self.owner.uploads[path[len("/upload/"):]] = data
                self.owner._record(Call("upload", {"bytes": len(data)}, {}))
            self._reply(200, {"ok": True}, {})
            return
        raw = data.decode("utf-8")
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            params = json.loads(raw) if raw else {}
        else:
            params = dict(parse_qsl(raw, keep_blank_values=True))
        params = {**dict(parse_qsl(query, keep_blank_values=True)), **params}
        if path.startswith("/api/"):
            method = path[len("/api/"):]
        elif path.startswith("/response/"):
            method = "response"
        else:
            self._reply(404, {"ok": False, "error": "not_found"}, {})
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, body, extra = self.owner.handle(method, params, headers)
        self._reply(status, body, extra)

    def _reply(self, status: int, body: dict[str, Any], extra: dict[str, str]) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture()
def slack() -> Iterator[SlackMock]:
    """A running mock for one test (a pytest plugin: tests/conftest.py loads this module)."""
    mock = SlackMock().start()
    yield mock
    mock.stop()


# --- what Slack sends to the bot: signed slash-command requests ----------------------------


def app_home_opened_body(user: str, *, tab: str = "home", event_id: str = "Ev0HOME") -> str:
    """The Events API envelope Slack POSTs (JSON) when a user opens the app's Home tab."""
    return json.dumps({
        "token": "legacy-verification-token-unused", "team_id": TEAM_ID,
        "api_app_id": "A0EXAUTH", "type": "event_callback", "event_id": event_id,
        "event_time": int(time.time()), "authorizations": [
            {"team_id": TEAM_ID, "user_id": BOT_USER_ID, "is_bot": True}],
        "event": {"type": "app_home_opened", "user": user, "channel": "D0EXAUTH",
                  "tab": tab, "event_ts": f"{time.time():.6f}"},
    })


def signed_json_headers(body: str, **kwargs: Any) -> dict[str, str]:
    return {**signed_headers(body, **kwargs), "Content-Type": "application/json"}


def slash_command(text: str, *, channel_id: str, trigger_id: str, user_id: str = "U0ALICE",
                  response_url: str = "", command: str = "/exauth") -> dict[str, str]:
    """The fields of a slash command, as Slack sends them in either mode."""
    return {
        "token": "legacy-verification-token-unused",
        "team_id": TEAM_ID, "team_domain": "exauth-test",
        "channel_id": channel_id, "channel_name": "exchange-ops",
        "user_id": user_id, "user_name": "alice",
        "command": command, "text": text, "api_app_id": "A0EXAUTH",
        "is_enterprise_install": "false",
        "response_url": response_url, "trigger_id": trigger_id,
    }


def slash_command_body(text: str, **fields: str) -> str:
    """The form-encoded body Slack POSTs for a slash command (HTTP mode)."""
    return urlencode(slash_command(text, **fields))


def signed_headers(body: str, *, secret: str = SIGNING_SECRET,
                   timestamp: int | None = None) -> dict[str, str]:
    """Headers with Slack's v0 signature: HMAC-SHA256 of "v0:<ts>:<body>" with the secret."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


# --- Socket Mode: Slack's side of the WebSocket ------------------------------------------


class SocketModeMock:
    """The WebSocket end of Socket Mode (websockets' sync server on 127.0.0.1).

    Set `slack.socket_url = socket.url` so apps.connections.open hands it out. On connect it
    says hello as Slack does; `deliver` sends an envelope, and every message the app sends
    back (its acks) is kept in `acks` by envelope_id.
    """

    def __init__(self) -> None:
        self.acks: dict[str, dict[str, Any]] = {}
        self.connections = 0
        self._changed = threading.Condition()
        self._current: ServerConnection | None = None
        self._server = serve(self._handle, "127.0.0.1", 0, compression=None)
        threading.Thread(target=self._server.serve_forever, name="socket-mode-mock",
                         daemon=True).start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._server.socket.getsockname()[1]}/link/?ticket=t"

    def stop(self) -> None:
        self._server.shutdown()

    def _handle(self, connection: ServerConnection) -> None:
        connection.send(json.dumps({"type": "hello", "num_connections": 1,
                                    "connection_info": {"app_id": "A0EXAUTH"}}))
        with self._changed:
            self._current = connection
            self.connections += 1
            self._changed.notify_all()
        for raw in connection:  # until the app disconnects
            message = json.loads(raw)
            with self._changed:
                self.acks[str(message.get("envelope_id"))] = message
                self._changed.notify_all()

    def wait_connected(self, timeout: float = 20.0) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: self._current is not None, timeout):
                raise AssertionError("Socket Mode mock: the app never connected")

    def deliver(self, kind: str, payload: dict[str, Any], *, envelope_id: str,
                retry_attempt: int = 0) -> None:
        """Send one envelope (e.g. kind "slash_commands") as Slack does."""
        assert self._current is not None, "wait_connected() first"
        envelope: dict[str, Any] = {"envelope_id": envelope_id, "type": kind, "payload": payload,
                                    "accepts_response_payload": kind != "events_api"}
        if kind == "events_api" or retry_attempt:  # Slack numbers Events API deliveries
            envelope.update(retry_attempt=retry_attempt,
                            retry_reason="timeout" if retry_attempt else "")
        self._current.send(json.dumps(envelope))

    def wait_ack(self, envelope_id: str, timeout: float = 10.0) -> dict[str, Any]:
        with self._changed:
            if not self._changed.wait_for(lambda: envelope_id in self.acks, timeout):
                raise AssertionError(f"Socket Mode mock: no ack for {envelope_id}")
            return self.acks[envelope_id]
