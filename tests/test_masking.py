"""Secrets in output, pure: a DSN as a postgresql:// URL, and masking a secret in every
form it takes (alone, percent-encoded, in a URL, in a conninfo, JSON-escaped)."""

from __future__ import annotations

import json
from urllib.parse import quote, quote_plus

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from runbook.masking import dsn_url, mask, secret_forms

PASSWORD = "p@ss:w/rd?#%&+ 'q\"\\x="  # every character a URL or a conninfo treats specially


@pytest.mark.parametrize(
    ("dsn", "url"),
    [
        (make_conninfo("", user="rb", password=PASSWORD, host="/run/pg", dbname="platform"),
         "postgresql://rb:" + quote(PASSWORD, safe="") + "@/platform?host=/run/pg"),
        ("host=/tmp/s port=5433 dbname='d b' user=u", "postgresql://u@/d%20b?host=/tmp/s&port=5433"),
        ("host=db.example.com port=6543 dbname=postgres user=postgres.abc sslmode=require",
         "postgresql://postgres.abc@db.example.com:6543/postgres?sslmode=require"),
        ("host=::1 dbname=x", "postgresql://[::1]/x"),
        ("host=h1,h2 port=5432,5433 dbname=x", "postgresql:///x?host=h1%2Ch2&port=5432%2C5433"),
        ("postgresql://u:pw@h/db?options=-c%20statement_timeout%3D5000", "postgresql://u:pw@h/db?options=-c%20statement_timeout%3D5000"),
        ("dbname=x", "postgresql:///x"),
    ],
)
def test_a_dsn_becomes_a_url_that_reads_back_the_same(dsn: str, url: str) -> None:
    assert dsn_url(dsn) == url
    assert conninfo_to_dict(dsn_url(dsn)) == conninfo_to_dict(dsn)


CONNINFO = make_conninfo("", user="rb", password=PASSWORD, host="/run/pg", dbname="platform")


@pytest.mark.parametrize(
    "shown",
    [
        PASSWORD,
        quote(PASSWORD, safe=""),
        quote(PASSWORD, safe="").lower(),  # hex digits in either case
        quote_plus(PASSWORD),
        json.dumps(PASSWORD),
        repr(PASSWORD),
        dsn_url(CONNINFO),
        CONNINFO,
        "RUNBOOK_RESTORED_DATABASE_URL=" + dsn_url(CONNINFO) + "\n",
        json.dumps({"dsn": CONNINFO}),
    ],
)
def test_every_form_of_a_dsn_and_its_password_is_masked(shown: str) -> None:
    masked = mask(f"before {shown} after", [dsn_url(CONNINFO)])
    assert masked.startswith("before ") and masked.endswith(" after") and "***" in masked
    for form in secret_forms(PASSWORD):
        assert form not in masked
    assert "p@ss" not in masked and "p%40ss" not in masked.lower()


def test_a_plain_token_is_masked_alone_and_encoded_and_short_values_are_not_masked() -> None:
    token = "tok/en+42=="
    text = f"Bearer {token} or ?t={quote(token, safe='')} or {quote_plus(token)}; the word 'abc' stays"
    assert mask(text, [token, "abc", ""]) == "Bearer *** or ?t=*** or ***; the word 'abc' stays"
