"""A Microsoft Graph stand-in: the Entra ID tenant that holds the dedicated Exchange hybrid
application, so a rehearsal covers the hybrid side of a rotation too.

Only what exauth uses, with Graph's and Entra's semantics (errors in their shapes, status
codes and AADSTS numbers), and still nothing imported from exauth:

- `directory`        the tenant: application registrations, their keyCredentials, client
                     credentials and permissions, issued tokens, injected faults.
- `key_credentials`  one keyCredential of a PATCH body checked as Graph checks it (400s)
                     and a stored key as Graph shows it.
- `client_assertion` the signed JWT a client sends instead of a secret (msal's
                     certificate credential), verified with `cryptography` alone.
- `errors`           the two error shapes: Graph's `{"error": {"code", "message"}}` and
                     the identity platform's `{"error", "error_description", ...}`.

HTTP (routes, TLS with the lab's own CA) lives in `lab.http.graph_endpoint`.
"""

from lab.graph.directory import Directory, Grant
from lab.graph.errors import GraphError, TokenError

__all__ = ["Directory", "Grant", "GraphError", "TokenError"]
