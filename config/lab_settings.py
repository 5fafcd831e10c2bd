"""Settings for a running lab, built in memory from its ready line (the CLI's fallback when
no config file exists). Here, not in lab/: the lab imports nothing of exauth, so the glue
between the two lives on the config side. (`exauth lab serve --write-config` writes a config
file as text, in lab/serve.py, for the same reason.)
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from config.errors import ConfigError
from config.load import settings_from_dict
from config.schema import Settings


def settings_for_lab(info: dict[str, Any], password: str, writer: str | None = None,
                     auth: str = "basic") -> Settings:
    """Settings for a running lab (its ready-line dict), built in memory, for the CLI's
    no-config fallback. The writer is the first server unless named; a lab with a Graph
    stand-in (ready line "graph") gets `[org.hybrid_app]` pointing at it."""
    servers = info.get("servers") or []
    if not servers:
        raise ConfigError("lab", "servers", "the lab reported no servers")
    fqdns = [s["fqdn"] for s in servers]
    chosen = (writer or fqdns[0]).lower()
    by_fqdn = {s["fqdn"].lower(): s for s in servers}
    by_name = {s["name"].lower(): s for s in servers}
    match = by_fqdn.get(chosen) or by_name.get(chosen)
    if match is None:
        raise ConfigError("lab", "writer", f'no lab server named "{writer}"')
    data: dict[str, Any] = {
        "org": [
            {
                "name": info.get("org", "lab"),
                "channel": "",
                "writer": match["fqdn"],
                "exchange": {
                    "url": match["exchange_url"],
                    "auth": auth,
                    "username": info["username"],
                    "verify_tls": False,
                    # The password itself, in memory only: no file or variable to name.
                    "lab_password": SecretStr(password),
                },
                "endpoints": {
                    s["fqdn"]: {"exchange_url": s["exchange_url"], "host_url": s["host_url"]}
                    for s in servers
                },
            }
        ]
    }
    graph = info.get("graph")
    if graph:  # a lab with an Entra tenant: its Graph stand-in, its lab credentials
        data["org"][0]["hybrid_app"] = {
            "tenant_id": graph["tenant_id"],
            "app_id": graph["app_id"],
            "client_id": graph["client_id"],
            "authority": graph["authority"],
            "graph_url": graph["graph_url"],
            "ca_bundle": graph["ca_file"],
            "lab_secret": SecretStr(graph["client_secret"]),
        }
    return settings_from_dict(data, source="lab")
