"""TLS certificates of the platform's hosts (§4.3): expiry, chain and hostname, read
with a real handshake."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

HOSTNAME_MISMATCH = 62  # X509_V_ERR_HOSTNAME_MISMATCH


@dataclass(frozen=True)
class CertInfo:
    target: str  # host:port as configured
    not_after: datetime | None = None
    subject: str = ""
    issuer: str = ""
    chain_ok: bool = False
    hostname_ok: bool = False
    problem: str | None = None  # why the verified handshake failed, or why nothing could be read


def split_target(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":") if target.count(":") == 1 else (target, "", "")
    return (host, int(port)) if port else (target, 443)


def _peer_certificate(host: str, port: int, context: ssl.SSLContext, timeout_s: float) -> bytes:
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        with context.wrap_socket(sock, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError("the server sent no certificate")
    return der


def inspect_certificate(target: str, ca_bundle: Path | None = None, timeout_s: float = 10.0) -> CertInfo:
    """Handshake with verification (chain and hostname); when that fails, read the
    certificate anyway, without verification, to report its expiry."""
    host, port = split_target(target)
    verified = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    chain_ok = hostname_ok = True
    problem = None
    try:
        der = _peer_certificate(host, port, verified, timeout_s)
    except ssl.SSLCertVerificationError as err:
        problem = err.verify_message or str(err)
        hostname_ok = err.verify_code != HOSTNAME_MISMATCH
        chain_ok = err.verify_code == HOSTNAME_MISMATCH
        unverified = ssl.create_default_context()
        unverified.check_hostname = False
        unverified.verify_mode = ssl.CERT_NONE
        try:
            der = _peer_certificate(host, port, unverified, timeout_s)
        except (OSError, ssl.SSLError) as again:
            return CertInfo(target=target, problem=f"{problem}; then: {again}")
    except (OSError, ssl.SSLError) as err:
        return CertInfo(target=target, problem=f"{type(err).__name__}: {err}")
    cert = x509.load_der_x509_certificate(der)
    return CertInfo(
        target=target,
        not_after=cert.not_valid_after_utc,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        chain_ok=chain_ok,
        hostname_ok=hostname_ok,
        problem=problem,
    )


@task(name="inspect-certificate", retries=2, retry_delay_seconds=[2, 4], cache_policy=NO_CACHE)
def inspect_certificate_task(target: str, ca_bundle: Path | None, timeout_s: float) -> CertInfo:
    """Read one host's certificate: expiry, subject, issuer, chain and hostname."""
    info = inspect_certificate(target, ca_bundle, timeout_s)
    when = info.not_after.isoformat(timespec="minutes") if info.not_after else "unknown"
    get_run_logger().info("%s: expires %s%s", target, when, f" ({info.problem})" if info.problem else "")
    return info


def now_utc() -> datetime:
    return datetime.now(timezone.utc)
