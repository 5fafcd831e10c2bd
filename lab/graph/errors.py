"""The two error shapes of the Microsoft cloud that the Graph stand-in answers with.

Graph (`/v1.0/...`) answers `{"error": {"code", "message", "innerError"}}`; the identity
platform (`/{tenant}/oauth2/v2.0/token`, discovery) answers OAuth 2.0's
`{"error", "error_description", "error_codes", ...}` with the AADSTS number leading the
description. A client reports whichever it gets, so the lab must send the real ones.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")


class GraphError(Exception):
    """A Graph answer other than success: HTTP status, Graph error code and message."""

    def __init__(self, status: int, code: str, message: str, *,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def body(self, client_request_id: str = "") -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "innerError": {
            "date": _stamp(), "request-id": str(uuid.uuid4()),
            "client-request-id": client_request_id or str(uuid.uuid4())}}}


class TokenError(Exception):
    """An identity platform error: OAuth error, AADSTS number and its description."""

    def __init__(self, status: int, error: str, code: int, description: str, *,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.code = code
        self.description = description
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = _stamp() + "Z"
        return {
            "error": self.error,
            "error_description": f"AADSTS{self.code}: {self.description} Trace ID: {trace} "
                                 f"Correlation ID: {correlation} Timestamp: {stamp}",
            "error_codes": [self.code], "timestamp": stamp, "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": f"https://login.microsoftonline.com/error?code={self.code}",
        }
