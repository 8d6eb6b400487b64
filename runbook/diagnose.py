"""Pure parts of troubleshooting (runbook §3): what each finding means, the advice of
§3 for each component, and the thresholds. Plain data in, checks out."""

from __future__ import annotations

import re

from runbook.checks import CheckResult

COMPONENTS = ("api", "database", "external-apis", "payments", "ai")

ADVICE = {  # §3, what to look at next when a component's diagnosis fails
    "api": "Slow responses (§3.1): read the timing breakdown (DNS, connect, TLS, first byte); "
    "then check the edge cache, the database queries and the external API calls behind the endpoint.",
    "database": "Database connection refused (§3.2): check the database's health endpoint, "
    "the connection pool settings (connections in use vs max_connections) and the RLS permissions.",
    "external-apis": "Rate limit exceeded (§3.3): read the plan usage (CoinMarketCap account endpoint); "
    "then lengthen the cache periods and check that the fallbacks work.",
    "payments": "Stripe webhook failures (§3.4): check the signature verification (STRIPE_WEBHOOK_SECRET), "
    "duplicate-event handling and the payment state.",
    "ai": "AI services: check the API keys (OPENAI_API_KEY, ANTHROPIC_API_KEY), the account's quota "
    "and the provider's status page.",
}


def usage_check(name: str, used: float, limit: float, warn_pct: float = 80.0) -> CheckResult:
    """A quota: a warning from ``warn_pct`` %, critical when used up."""
    if limit <= 0:
        return CheckResult(name=name, ok=False, detail=f"{used:,.0f} used of no limit reported", critical=False)
    pct = 100.0 * used / limit
    detail = f"{used:,.0f} of {limit:,.0f} used ({pct:.0f} %)"
    if pct >= 100:
        return CheckResult(name=name, ok=False, detail=f"{detail}: exhausted")
    if pct >= warn_pct:
        return CheckResult(name=name, ok=False, detail=f"{detail}: at or above {warn_pct:g} %", critical=False)
    return CheckResult(name=name, ok=True, detail=detail)


_IDENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\x80-\uffff][A-Za-z0-9_\x80-\uffff]*)?\$")


def hide_literals(query: str) -> str:
    """``query`` with every string literal replaced by ``'?'``: plain ``'...'`` (``''``
    inside), ``E'...'`` (backslash escapes), and dollar-quoted ``$$...$$`` and
    ``$tag$...$tag$`` (only the same tag closes one, so ``$a$ $$x$$ $a$`` is one
    literal). Quoted identifiers and ``$1`` parameters are kept. A literal cut short (a
    query text truncated by ``track_activity_query_size``) is hidden to the end."""
    out: list[str] = []
    i, n = 0, len(query)
    while i < n:
        ch = query[i]
        after_word = i > 0 and query[i - 1] in _IDENT_CHARS
        if query.startswith("--", i):  # a comment, copied: a quote inside it starts nothing
            end = query.find("\n", i)
            end = n if end == -1 else end
            out.append(query[i:end])
            i = end
        elif query.startswith("/*", i):  # block comments nest in PostgreSQL
            depth, j = 1, i + 2
            while j < n and depth:
                if query.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif query.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(query[i:j])
            i = j
        elif ch == '"':  # a quoted identifier: copied whole, a quote inside it starts nothing
            end = query.find('"', i + 1)
            while end != -1 and query.startswith('"', end + 1):
                end = query.find('"', end + 2)
            end = n if end == -1 else end + 1
            out.append(query[i:end])
            i = end
        elif ch == "'" or (ch in "eE" and query.startswith("'", i + 1) and not after_word):
            escapes = ch != "'"
            j = i + (2 if escapes else 1)
            while j < n:
                if escapes and query[j] == "\\":
                    j += 2
                elif query[j] == "'":
                    if query.startswith("'", j + 1):
                        j += 2
                    else:
                        break
                else:
                    j += 1
            out.append("'?'")
            i = j + 1
        elif ch == "$" and not after_word and (tag := _DOLLAR_TAG.match(query, i)):
            end = query.find(tag.group(), tag.end())
            out.append("'?'")
            i = n if end == -1 else end + len(tag.group())
        else:
            # copy the run of ordinary text up to the next character that may start something
            j = i + 1
            while j < n and query[j] not in "\"'$eE-/":
                j += 1
            out.append(query[i:j])
            i = j
    return "".join(out)


def mask_literals(query: str, limit: int = 160) -> str:
    """A query's text for a report: string literals hidden (they may hold a password or
    personal data), whitespace collapsed, cut to ``limit`` characters."""
    text = hide_literals(query)
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def database_checks(
    *,
    connect_ms: float,
    server_version: str,
    connections: int,
    max_connections: int,
    long_running: list[tuple[int, float, str, str]],
    rls_off: list[str],
    missing: list[str],
    long_query_s: float,
    connections_warning_pct: float = 80.0,
) -> list[CheckResult]:
    """§3.2 findings as checks: connect time, connections in use, long queries, RLS."""
    checks = [CheckResult(name="database:connect", ok=True, detail=f"PostgreSQL {server_version}, connected in {connect_ms:.0f} ms")]
    checks.append(usage_check("database:connections", connections, max_connections, connections_warning_pct))
    if long_running:
        listed = "; ".join(f"pid {pid} {state} {seconds:.0f} s: {query}" for pid, seconds, state, query in long_running[:5])
        checks.append(CheckResult(name="database:long-running", ok=False, detail=f"{len(long_running)} over {long_query_s:g} s: {listed}", critical=False))
    else:
        checks.append(CheckResult(name="database:long-running", ok=True, detail=f"none over {long_query_s:g} s"))
    problems = [f"{t} has row-level security OFF" for t in rls_off] + [f"{t} not found" for t in missing]
    checks.append(
        CheckResult(name="database:row-level-security", ok=not problems, detail="; ".join(problems) or "on where expected")
    )
    return checks
