"""Secrets in output: every form a secret value can take in a command's output, and
masking them all. Pure functions, no I/O.

A DSN's password shows up in many shapes: alone, percent-encoded inside a
``postgresql://`` URL, quoted and escaped inside a ``key=value`` conninfo, escaped by
``json.dumps`` or ``repr``. Masking only the value as configured misses most of them, so
each secret is expanded to all of its forms first, and the longest are masked first (a
whole URL becomes ``***`` rather than leaving its user and host around a masked password).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus, urlencode

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

MASK = "***"
MIN_LENGTH = 4  # shorter values would mask ordinary words; no real secret is this short

_URL_HOST_KEYS = ("host", "port")


def dsn_url(dsn: str) -> str:
    """Any libpq DSN (URL or ``key=value`` conninfo) as a ``postgresql://`` URL that
    libpq and psycopg read back to the same parameters: user, password and database
    percent-encoded; a Unix-socket directory, several hosts or a socket's port as
    ``?host=``/``?port=``; every other parameter (sslmode, options...) in the query."""
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    user, password = params.pop("user", None), params.pop("password", None)
    database = params.pop("dbname", None)
    host, port = params.get("host"), params.get("port")
    netloc = ""
    if user is not None or password is not None:
        netloc = quote(user or "", safe="") + (":" + quote(password, safe="") if password is not None else "") + "@"
    if host and not host.startswith("/") and "," not in host and "," not in (port or ""):
        netloc += f"[{host}]" if ":" in host else quote(host, safe="")
        if port:
            netloc += f":{port}"
        params = {k: v for k, v in params.items() if k not in _URL_HOST_KEYS}
    path = "/" + quote(database, safe="") if database is not None else "/"
    # host and port first when they stay in the query: that is how people write them
    ordered = {k: params[k] for k in _URL_HOST_KEYS if k in params} | params
    query = urlencode(ordered, quote_via=quote, safe="/") if ordered else ""
    return f"postgresql://{netloc}{path}" + (f"?{query}" if query else "")


def _dsn_params(value: str) -> dict[str, str] | None:
    """The parameters of ``value`` when it is a DSN, else None (a plain token)."""
    looks_like_url = value.startswith(("postgresql://", "postgres://"))
    if not looks_like_url and "=" not in value:
        return None
    try:
        params = conninfo_to_dict(value)
    except psycopg.ProgrammingError:
        return None
    return {k: str(v) for k, v in params.items() if v is not None}


def _text_forms(value: str) -> set[str]:
    """A plain value as it appears raw, percent-encoded, and escaped in a conninfo."""
    return {
        value,
        quote(value, safe=""),
        quote(value),
        quote_plus(value),
        value.replace("\\", "\\\\").replace("'", "\\'"),  # inside a conninfo's quotes
    }


def secret_forms(value: str) -> set[str]:
    """Every form of one secret worth masking: for a DSN, the DSN as given, as a URL and
    as a conninfo, and its password in each of its own forms; each of them also as
    ``json.dumps`` and ``repr`` escape it (a JSON log line, a printed dict)."""
    forms = _text_forms(value)
    params = _dsn_params(value)
    if params is not None:
        forms |= {dsn_url(value), make_conninfo("", **params)}
        if params.get("password"):
            forms |= _text_forms(params["password"])
    forms |= {json.dumps(form)[1:-1] for form in forms} | {repr(form)[1:-1] for form in forms}
    return {form for form in forms if len(form) >= MIN_LENGTH}


def secret_forms_sorted(secrets: Iterable[str]) -> list[str]:
    """Every form of every secret, longest first: the order masking needs (a whole URL
    becomes ``***`` before its password alone would). Computed once for many texts."""
    forms: set[str] = set()
    for secret in secrets:
        if secret:
            forms |= secret_forms(secret)
    return sorted(forms, key=lambda form: (-len(form), form))


def mask_forms(text: str, forms: list[str]) -> str:
    """``text`` with each of ``forms`` (from :func:`secret_forms_sorted`) replaced by
    ``***``; percent-encoded forms whatever the case of their hex digits."""
    for form in forms:
        if "%" in form:
            text = re.sub(re.escape(form), MASK, text, flags=re.IGNORECASE)
        else:
            text = text.replace(form, MASK)
    return text


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every form of every secret replaced by ``***``; percent-encoded
    forms whatever the case of their hex digits."""
    return mask_forms(text, secret_forms_sorted(secrets))
