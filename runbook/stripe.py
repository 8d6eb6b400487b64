"""Stripe webhook signatures (the ``Stripe-Signature`` header): signing a payload as
Stripe does, and checking one as the platform must. Pure functions."""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_TOLERANCE_S = 300  # Stripe's default


def sign_stripe_payload(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A Stripe-Signature header value for ``payload`` (what Stripe sends)."""
    stamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


def check_stripe_signature(payload: bytes, header: str | None, secret: str, now: float | None = None) -> str | None:
    """None when the header signs ``payload`` with ``secret`` within the tolerance, else why not."""
    if not header:
        return "no Stripe-Signature header"
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        stamp = int(parts["t"][0])
    except (KeyError, ValueError):
        return "no timestamp in the signature"
    if abs((now or time.time()) - stamp) > SIGNATURE_TOLERANCE_S:
        return "timestamp outside the tolerance"
    expected = hmac.new(secret.encode(), f"{stamp}.".encode() + payload, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, candidate) for candidate in parts.get("v1", [])):
        return "signature does not match"
    return None
