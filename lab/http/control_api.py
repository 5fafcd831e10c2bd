"""The control API under `/_lab/`: read the org's state and calls, move its clock, add faults.

Tests and demos drive the lab through it (see DESIGN "control API"): GET state and calls,
POST clock `{"advance": "49h"}`, faults (one, a list, or `{"clear": true}`) and reset.
Bad input is a `ControlError`, answered 400 with its one-line message.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from lab.clock import DurationTooLong, NotADuration, read_duration
from lab.org import Org

if TYPE_CHECKING:
    from lab.http.request_handler import LabRequestHandler


class ControlError(ValueError):
    """Bad input to the control API; answered with 400 and the message."""


def parse_advance(text: Any) -> timedelta:
    """"49h", "30m", "2d", "90s" (or several: "1d12h") -> timedelta, at most MAX_DAYS."""
    if not isinstance(text, str) or not text.strip():
        raise ControlError(
            '"advance" must be a duration string such as "49h", "30m", "2d" or "90s"'
        )
    try:
        return read_duration(text, units="smhd", signed=False, several=True)
    except NotADuration:
        raise ControlError(
            f'"advance" {text!r} is not a duration; use a number with s, m, h or d, e.g. "49h"'
        ) from None
    except DurationTooLong as exc:
        raise ControlError(f'"advance" {exc}') from None


def serve_control(handler: LabRequestHandler, path: str, body: bytes) -> None:
    """Answer one `/_lab/...` request: 200 with JSON, 400 on bad input, 404/405 off route."""
    if not handler.authorized():
        handler.reply_unauthorized()
        return
    route = path.removeprefix("/_lab").strip("/")
    org = handler.server.org
    routes = {
        ("GET", "state"): _get_state,
        ("GET", "calls"): _get_calls,
        ("POST", "clock"): _post_clock,
        ("POST", "faults"): _post_faults,
        ("POST", "reset"): _post_reset,
    }
    route_handler = routes.get((handler.command, route))
    if route_handler is None:
        known = {name for _, name in routes}
        if route in known:
            handler.reply_json(405, {"error": f"{handler.command} is not allowed on /_lab/{route}"})
        else:
            handler.reply_json(404, {"error": f"no control route /_lab/{route}"})
        return
    try:
        payload = _json_body(body) if handler.command == "POST" else None
        handler.reply_json(200, route_handler(org, payload))
    except ControlError as exc:
        handler.reply_json(400, {"error": str(exc)})


def _json_body(body: bytes) -> Any:
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ControlError(f"body is not JSON: {exc}") from exc


def _get_state(org: Org, _: Any) -> Any:
    return org.state()


def _get_calls(org: Org, _: Any) -> Any:
    return org.calls()


def _post_clock(org: Org, payload: Any) -> Any:
    if not isinstance(payload, dict) or "advance" not in payload:
        raise ControlError('body must be a JSON object like {"advance": "49h"}')
    unknown = sorted(set(payload) - {"advance"})
    if unknown:
        raise ControlError(f"unknown key(s) {', '.join(unknown)}; only \"advance\" is accepted")
    delta = parse_advance(payload["advance"])
    if delta <= timedelta(0):
        raise ControlError('"advance" must be a positive duration')
    try:
        org.advance(delta)
    except ValueError as exc:  # past the clock's end: the lab's time range is finite
        raise ControlError(f'"advance" {payload["advance"]!r}: {exc}') from exc
    return {"clock": org.clock_state()}


def _post_faults(org: Org, payload: Any) -> Any:
    if isinstance(payload, dict) and "clear" in payload:
        if payload.get("clear") is not True or len(payload) != 1:
            raise ControlError('to clear faults send exactly {"clear": true}')
        org.clear_faults()
        return {"cleared": True}
    faults = payload if isinstance(payload, list) else [payload]
    if not faults or not all(isinstance(f, dict) for f in faults):
        raise ControlError(
            "body must be a fault object, a list of fault objects, or {\"clear\": true}"
        )
    for index, fault in enumerate(faults):
        try:
            org.add_fault(fault)
        except (ValueError, KeyError, TypeError) as exc:
            where = f"fault[{index}]: " if isinstance(payload, list) else ""
            raise ControlError(f"{where}{exc}") from exc
    return {"added": len(faults)}


def _post_reset(org: Org, _: Any) -> Any:
    org.reset()
    return {"reset": True, "clock": org.clock_state()}
