"""Why the first connection to a server failed, said in one line with the fix.

The failures every new deployment meets first (wrong password, no Kerberos ticket or no
KDC, no service principal for the name used, clock skew, an untrusted TLS certificate,
Basic refused, encryption required) reach pypsrp's caller as a bare 401, a GSSAPI status
text or an SSL error. `workers.exchange.errors.classify` hands them here: the Kerberos texts are
read as they are; for a 401 and a TLS failure the server is asked once more, without
credentials, what it offers (its WWW-Authenticate) and which certificate it shows, because
that is what names the cause. Nothing here sends a password.
"""

from __future__ import annotations

import re
import socket
import ssl
from urllib.parse import urlsplit

import requests
from cryptography import x509

KERBEROS_SKEW_MINUTES = 5  # MIT's and Active Directory's default tolerance


def _table(endpoint: str) -> str:
    return "[org.exchange]" if endpoint == "exchange" else "[org.host]"


def kerberos_cause(text: str, *, url: str, username: str | None, endpoint: str) -> str | None:
    """The line for a GSSAPI/Kerberos failure text, or None when it is not one."""
    low = text.lower()
    host = urlsplit(url).hostname or "?"
    who = username or "the account"
    if "server not found in kerberos database" in low or (
        "not found in kerberos database" in low and "client" not in low
    ):
        match = re.search(r"server\s+(\S+@\S+)\s+not found", text, re.I)
        spn = match.group(1).rstrip(",") if match else f"host/{host}"
        return (
            f"no Kerberos service principal {spn} for the name used ({host}): connect by the "
            "server's own FQDN, not an IP address or a load-balanced name (Kerberos needs "
            f"the SPN), or register it (setspn -S HTTP/{host} <server>)"
        )
    if "client" in low and "not found in kerberos database" in low:
        return (f"Kerberos does not know the account {who}: set username to its principal "
                "(user@REALM, realm in upper case)")
    if "clock skew too great" in low or "krb_ap_err_skew" in low:
        return (
            "clock skew too great between this machine and the KDC/server (Kerberos allows "
            f"{KERBEROS_SKEW_MINUTES} min): sync this machine's clock (NTP) with the domain"
        )
    if ("preauthentication failed" in low or "password incorrect" in low
            or "decrypt integrity check failed" in low):
        return (f"Kerberos refused the password for {who} (preauthentication failed): fix "
                "password_file/password_env, and check the account is not locked")
    if "cannot find kdc for realm" in low:
        realm = re.search(r"realm\s+['\"]?([A-Za-z0-9.-]+)", text)
        name = realm.group(1) if realm else "of the account"
        return (
            f"no Kerberos ticket for {who}: krb5.conf names no KDC for realm {name} - add it "
            "under [realms] (or dns_lookup_kdc = true), and give username as user@REALM"
        )
    if "cannot contact any kdc" in low or "unable to reach" in low:
        realm = re.search(r"realm '?\"?([A-Za-z0-9.-]+)", text)
        name = f" for realm {realm.group(1)}" if realm else ""
        return (
            f"no KDC reachable{name}: check [realms] kdc in krb5.conf (or DNS SRV "
            "_kerberos._tcp) and that port 88 to a domain controller is open"
        )
    if (
        "no kerberos credentials available" in low
        or "no credentials cache found" in low
        or "no credentials were supplied" in low
        or ("credentials cache" in low and "not found" in low)
    ):
        return (f"no Kerberos ticket for {who}: run kinit {who} (or a keytab via "
                "KRB5_CLIENT_KTNAME), or set password_file/password_env")
    if "configuration file does not specify default realm" in low:
        return ("no Kerberos realm configured: give this machine a krb5.conf with "
                "default_realm and [realms] (KRB5_CONFIG names another file)")
    return None


def encryption_cause(text: str, *, url: str) -> str | None:
    """The line for a server refusing unencrypted messages, or None."""
    low = text.lower()
    if "unencrypted" not in low and "allowunencrypted" not in low:
        return None
    return ("the server refuses unencrypted messages (AllowUnencrypted = false): use "
            'auth = "kerberos" or "ntlm" over http (message encryption) or an https URL '
            f"instead of {urlsplit(url).scheme}")


def offered_schemes(url: str, cert_validation: bool | str, timeout: float) -> list[str]:
    """The auth schemes a 401 without credentials offers ([] when there is no 401)."""
    try:
        response = requests.post(url, data=b"", timeout=timeout, verify=cert_validation,
                                 headers={"Content-Type": "application/soap+xml;charset=UTF-8"})
    except requests.RequestException:
        return []
    if response.status_code != 401:
        return []
    header = response.headers.get("WWW-Authenticate", "")
    return [s for s in ("Negotiate", "Kerberos", "NTLM", "Basic", "CredSSP")
            if re.search(rf"(^|[\s,]){s}\b", header, re.I)]


def auth_refused_cause(
    *, url: str, auth: str, username: str | None, endpoint: str,
    cert_validation: bool | str, timeout: float,
) -> str | None:
    """The line for a 401 at the end of the logon when its cause can be named: Basic not
    offered, or NTLM credentials refused; None leaves the generic "access denied"."""
    offered = offered_schemes(url, cert_validation, timeout)
    who = username or "the account"
    if auth == "basic" and offered and "Basic" not in offered:
        return (f"the server refuses Basic (it offers {', '.join(offered)}): set auth = "
                f'"kerberos" in {_table(endpoint)} (or "ntlm"), as Exchange and WinRM expect')
    if auth in ("ntlm", "negotiate") and offered:
        also = (' If the password is right, this endpoint may take Kerberos only: '
                'auth = "kerberos".') if endpoint == "exchange" else ""
        return (f"NTLM logon refused for {who}: wrong user name or password - fix "
                f"password_file/password_env (user as DOMAIN\\user) - or the account lacks "
                f"remote PowerShell rights.{also}")
    return None


def _name(name: x509.Name) -> str:
    return name.rfc4514_string() or "(empty)"


def peer_certificate(url: str, timeout: float) -> x509.Certificate | None:
    """The certificate the server presents, read without verifying it."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    return x509.load_der_x509_certificate(der) if der else None


def tls_cause(
    text: str, *, url: str, endpoint: str, cert_validation: bool | str, timeout: float
) -> str:
    """The line for a failed TLS verification: whose certificate, issued by whom, and the
    `ca_bundle` option that makes it trusted."""
    cert = peer_certificate(url, timeout)
    host = urlsplit(url).hostname or "?"
    table = _table(endpoint)
    if cert is None:
        return (f"TLS certificate of {host} not verified ({text[:120]}): set ca_bundle in "
                f"{table} to a PEM file holding the issuing CA's certificate")
    subject, issuer = _name(cert.subject), _name(cert.issuer)
    if "hostname" in text.lower() or "doesn't match" in text.lower():
        return (f"TLS certificate {subject} (issued by {issuer}) is not valid for the name "
                f"{host}: connect by a name the certificate lists")
    given = f" (ca_bundle {cert_validation} does not hold it)" if isinstance(
        cert_validation, str) else ""
    return (f"TLS verification failed: certificate {subject} issued by {issuer} is not "
            f"trusted{given}: set ca_bundle in {table} to a PEM file holding the CA "
            f"certificate {issuer} (verify_tls = false only for a lab)")
