"""What a step does: `StepKind`, set by the plan and stored with the step.

Execution, approval batching and gating choose a step's behaviour by its kind; a step's
title is text for people and may change freely. The kind is a str enum, so it is stored in
the operation document and shown in `exauth plan --json` as a plain string.

`legacy_kind` is the upgrade path for operation documents written before steps had kinds
(their steps said what they were only through their titles and cmdlets). It is the one
place that reads a title, and only `workers.changes.operation` calls it, once per step without a
kind, when such a document is loaded; the next save stores the kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class StepKind(StrEnum):
    """One value per distinct behaviour of a step."""

    # Read-only: judged from a fresh status, or the cmdlet is run (it only reads).
    REREAD_AUTH_CONFIG = "reread_auth_config"  # first step: stop if nothing is left to do
    VERIFY_NEW_CERT_REACHED = "verify_new_cert_reached"  # waits until it is on the server
    WATCH_PUBLICATION = "watch_publication"  # waits until the new certificate is current
    WATCH_CURRENT_SPREAD = "watch_current_spread"  # reports where it is still missing
    HYBRID_WIZARD_REMINDER = "hybrid_wizard_reminder"  # manual: re-run the HCW
    REREAD_IMPORT_SOURCE = "reread_import_source"  # fails if AuthConfig or the source moved
    EXPORT_CERT = "export_cert"  # the PFX an import step exports again right before it
    VERIFY_IMPORTED = "verify_imported"  # fails if the import did not land
    REREAD_BACKEND_BINDING = "reread_backend_binding"
    VERIFY_BACKEND_BINDING = "verify_backend_binding"  # fails unless *:444: is bound and valid
    CHECK_REPLICATION = "check_replication"
    FIND_SERVERS = "find_servers"
    WAIT_FOR_SERVER = "wait_for_server"
    # State-changing: each runs after its own approval, re-validated just before.
    CREATE_AUTH_CERT = "create_auth_cert"  # recorded before use; a retry reuses or adopts
    # The same with `[org.rotation] lifetime_days`: New-SelfSignedCertificate on the
    # writer's host endpoint (New-ExchangeCertificate has no lifetime); dates at run time.
    CREATE_AUTH_CERT_WITH_LIFETIME = "create_auth_cert_with_lifetime"
    STAGE_NEXT = "stage_next"
    PUBLISH_NEXT = "publish_next"
    CLEAR_PREVIOUS = "clear_previous"
    RESTART_SERVICE_HOST = "restart_service_host"
    RECYCLE_APP_POOL = "recycle_app_pool"  # batched per approval; a failure is not fatal
    IMPORT_CERT = "import_cert"
    REMOVE_OLD_AUTH_CERT = "remove_old_auth_cert"  # batched; waits 24 h after publication
    CREATE_BACKEND_CERT = "create_backend_cert"
    REMOVE_BACKEND_BINDING = "remove_backend_binding"
    BIND_BACKEND_CERT = "bind_backend_cert"
    RESTART_IIS = "restart_iis"
    # The dedicated hybrid application in Entra ID (Microsoft Graph, endpoint "graph").
    UPLOAD_HYBRID_KEY = "upload_hybrid_key"  # every key it holds + this one, verified after
    REMOVE_STALE_HYBRID_KEYS = "remove_stale_hybrid_keys"  # waits 24 h after publication
    # No kind-specific handling: the cmdlet runs as written. Only `legacy_kind` gives it,
    # to a step of an old document it does not recognise (the old code's fall-through).
    COMMAND = "command"


CREATES_CERTIFICATE = frozenset({StepKind.CREATE_AUTH_CERT, StepKind.CREATE_AUTH_CERT_WITH_LIFETIME,
                                 StepKind.CREATE_BACKEND_CERT})


def kind_of(step: Mapping[str, Any]) -> StepKind:
    """The kind of a stored step (every loaded step has one; see `legacy_kind`)."""
    return StepKind(step["kind"])


def legacy_kind(op_kind: str, step: Mapping[str, Any]) -> StepKind:
    """The kind of a step stored before kinds existed, from its title and cmdlet.

    The upgrade path for operation documents written by exauth before steps carried a
    kind: it mirrors exactly how that code chose a step's behaviour (read-only steps by
    title, in the order it tested them; state-changing ones by cmdlet and parameters).
    The titles below are frozen copies of what the plan wrote then; never read titles
    anywhere else, and never change these to follow new titles.
    """
    title, cmdlet = str(step.get("title") or ""), str(step.get("cmdlet") or "")
    if not step.get("changes_state"):
        if cmdlet == "Get-AuthConfig" and step.get("index") == 0:
            return StepKind.REREAD_AUTH_CONFIG
        by_title = (
            ("Verify the new certificate reached", StepKind.VERIFY_NEW_CERT_REACHED, True),
            ("Watch for publication", StepKind.WATCH_PUBLICATION, False),
            ("Watch the new certificate reach every server", StepKind.WATCH_CURRENT_SPREAD,
             False),
        )
        for text, kind, prefix in by_title:
            if title.startswith(text) if prefix else title == text:
                return kind
        if cmdlet == "Get-HybridConfiguration":
            return StepKind.HYBRID_WIZARD_REMINDER
        if title.startswith("Re-read the ") and cmdlet == "Get-ExchangeCertificate":
            return StepKind.REREAD_IMPORT_SOURCE
        for text, kind in (
            ("Verify it is on ", StepKind.VERIFY_IMPORTED),
            ("Verify the back end binding of", StepKind.VERIFY_BACKEND_BINDING),
            ("Re-read the back end binding of", StepKind.REREAD_BACKEND_BINDING),
            ("Check whether the next certificate reached", StepKind.CHECK_REPLICATION),
        ):
            if title.startswith(text):
                return kind
    if cmdlet == "Export-ExchangeCertificate":
        return StepKind.EXPORT_CERT
    if not step.get("changes_state"):
        return StepKind.COMMAND
    if cmdlet == "New-ExchangeCertificate":
        backend = op_kind == "repair_backend"
        return StepKind.CREATE_BACKEND_CERT if backend else StepKind.CREATE_AUTH_CERT
    if cmdlet == "Set-AuthConfig":
        names = {str(pair[0]) for pair in _pairs(step.get("parameters"))}
        for name, kind in (("NewCertificateThumbprint", StepKind.STAGE_NEXT),
                           ("PublishCertificate", StepKind.PUBLISH_NEXT),
                           ("ClearPreviousCertificate", StepKind.CLEAR_PREVIOUS)):
            if name in names:
                return kind
    by_cmdlet = {
        "Import-ExchangeCertificate": StepKind.IMPORT_CERT,
        "Remove-ExchangeCertificate": StepKind.REMOVE_OLD_AUTH_CERT,
        "New-IISSiteBinding": StepKind.BIND_BACKEND_CERT,
        "Remove-IISSiteBinding": StepKind.REMOVE_BACKEND_BINDING,
        "Restart-WebAppPool": StepKind.RECYCLE_APP_POOL,
        "Restart-Service": StepKind.RESTART_SERVICE_HOST,
        "iisreset": StepKind.RESTART_IIS,
    }
    return by_cmdlet.get(cmdlet, StepKind.COMMAND)


def _pairs(parameters: Any) -> list[Any]:
    if isinstance(parameters, Mapping):
        return list(parameters.items())
    return [p for p in parameters or [] if isinstance(p, list | tuple) and p]
