"""The platform's third parties as troubleshooting sees them (§3): CoinMarketCap plan
usage, CoinGecko ping, OpenAI and Anthropic model lists, a Stripe-signed test event
posted to the platform's webhook. Keys travel in headers, never in URLs, and never
appear in a result or a log line. Every base URL is a setting."""

from __future__ import annotations

import json
import secrets as random
import time
from typing import Any

import httpx

from runbook.checks import CheckResult
from runbook.diagnose import usage_check
from runbook.stripe import sign_stripe_payload
from tasks.shell import mask


def _get(url: str, headers: dict[str, str], timeout_s: float, key: str | None) -> tuple[httpx.Response | None, str, float]:
    """GET; returns (response or None, problem, ms) with the key masked out of any error."""
    started = time.perf_counter()
    try:
        response = httpx.get(url, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as err:
        return None, mask(f"{type(err).__name__}: {err}", [key or ""]), (time.perf_counter() - started) * 1000
    return response, "", (time.perf_counter() - started) * 1000


def _refused(name: str, response: httpx.Response, ms: float) -> CheckResult:
    why = {401: "the key was rejected", 403: "the key may not do this", 429: "rate limited"}.get(response.status_code, "")
    return CheckResult(name=name, ok=False, detail=f"HTTP {response.status_code}{': ' + why if why else ''} ({ms:.0f} ms)")


def coinmarketcap_usage(base_url: str, key: str | None, timeout_s: float, warn_pct: float) -> list[CheckResult]:
    """Plan usage from ``/v1/account`` (header X-CMC_PRO_API_KEY): used vs the monthly limit."""
    name = "coinmarketcap:usage"
    if not key:
        return [CheckResult(name=name, ok=False, detail="COINMARKETCAP_API_KEY is not set")]
    response, problem, ms = _get(f"{base_url}/v1/account", {"X-CMC_PRO_API_KEY": key, "Accept": "application/json"}, timeout_s, key)
    if response is None:
        return [CheckResult(name=name, ok=False, detail=problem)]
    if response.status_code != 200:
        return [_refused(name, response, ms)]
    try:
        data = response.json()["data"]
        used = float(data["usage"]["current_month"]["credits_used"])
        limit = float(data["plan"]["credit_limit_monthly"])
    except (ValueError, KeyError, TypeError):
        return [CheckResult(name=name, ok=False, detail="the account endpoint answered without plan usage")]
    return [usage_check(name, used, limit, warn_pct)]


def coingecko_ping(base_url: str, timeout_s: float) -> list[CheckResult]:
    response, problem, ms = _get(f"{base_url}/ping", {"Accept": "application/json"}, timeout_s, None)
    if response is None:
        return [CheckResult(name="coingecko:ping", ok=False, detail=problem)]
    if response.status_code != 200:
        return [_refused("coingecko:ping", response, ms)]
    return [CheckResult(name="coingecko:ping", ok=True, detail=f"answered in {ms:.0f} ms")]


def model_list(provider: str, url: str, headers: dict[str, str], key: str | None, timeout_s: float) -> list[CheckResult]:
    """An authenticated model-list call: proves the key and the service."""
    name = f"{provider}:models"
    if not key:
        return [CheckResult(name=name, ok=False, detail=f"{provider.upper()}_API_KEY is not set")]
    response, problem, ms = _get(url, headers, timeout_s, key)
    if response is None:
        return [CheckResult(name=name, ok=False, detail=problem)]
    if response.status_code != 200:
        return [_refused(name, response, ms)]
    try:
        models = response.json().get("data") or []
    except ValueError:
        models = []
    return [CheckResult(name=name, ok=bool(models), detail=f"{len(models)} models listed in {ms:.0f} ms")]


def openai_models(base_url: str, key: str | None, timeout_s: float) -> list[CheckResult]:
    return model_list("openai", f"{base_url}/models", {"Authorization": f"Bearer {key}"}, key, timeout_s)


def anthropic_models(base_url: str, key: str | None, timeout_s: float) -> list[CheckResult]:
    headers = {"x-api-key": key or "", "anthropic-version": "2023-06-01"}
    return model_list("anthropic", f"{base_url}/models", headers, key, timeout_s)


def stripe_webhook_roundtrip(platform_url: str, webhook_secret: str | None, timeout_s: float) -> list[CheckResult]:
    """A Stripe-signed test event posted to the platform's webhook, then the same event
    again: both must be accepted, the second as a duplicate where the answer says so.
    Then a badly signed copy, which must be refused."""
    if not webhook_secret:
        return [CheckResult(name="stripe:webhook", ok=False, detail="STRIPE_WEBHOOK_SECRET is not set")]
    event: dict[str, Any] = {
        "id": f"evt_runbook_diagnose_{random.token_hex(8)}",
        "object": "event",
        "type": "runbook.diagnose.test",
        "livemode": False,
        "data": {"object": {"id": "runbook-test"}},
    }
    payload = json.dumps(event).encode()
    url = f"{platform_url}/api/stripe/webhooks"
    answers = []
    try:
        with httpx.Client(timeout=timeout_s) as client:
            for _ in range(2):
                headers = {"Stripe-Signature": sign_stripe_payload(payload, webhook_secret), "Content-Type": "application/json"}
                answers.append(client.post(url, content=payload, headers=headers))
            forged = client.post(url, content=payload, headers={"Stripe-Signature": sign_stripe_payload(payload, "whsec_wrong")})
    except httpx.HTTPError as err:
        return [CheckResult(name="stripe:webhook", ok=False, detail=f"{type(err).__name__}: {err}")]
    first, second = answers
    checks = [
        CheckResult(
            name="stripe:webhook",
            ok=first.is_success,
            detail=f"signed test event {event['id']}: HTTP {first.status_code}",
        )
    ]
    duplicate = _field(second, "duplicate")
    checks.append(
        CheckResult(
            name="stripe:duplicate-ignored",
            ok=second.is_success and duplicate is not False,
            detail=f"same event again: HTTP {second.status_code}"
            + ("" if duplicate is None else (", marked duplicate" if duplicate else ", processed AGAIN")),
        )
    )
    checks.append(
        CheckResult(
            name="stripe:bad-signature-refused",
            ok=forged.status_code == 400,
            detail=f"badly signed copy: HTTP {forged.status_code}",
        )
    )
    return checks


def _field(response: httpx.Response, name: str) -> Any:
    try:
        data = response.json()
    except ValueError:
        return None
    return data.get(name) if isinstance(data, dict) else None


# --------------------------------------------------------------------------- Prefect tasks

from prefect import get_run_logger, task  # noqa: E402 - the plain functions above need no Prefect
from prefect.cache_policies import NO_CACHE  # noqa: E402

from runbook.settings import DiagnoseSettings  # noqa: E402
from tasks.secrets import secret_value  # noqa: E402


@task(name="check-external-apis", cache_policy=NO_CACHE)
def check_external_apis(settings: DiagnoseSettings, secret_source: str) -> list[CheckResult]:
    """CoinMarketCap plan usage and a CoinGecko ping (§3.3)."""
    get_run_logger().info("Checking CoinMarketCap usage at %s and CoinGecko at %s", settings.coinmarketcap_url, settings.coingecko_url)
    key = secret_value("COINMARKETCAP_API_KEY", secret_source)
    return coinmarketcap_usage(settings.coinmarketcap_url, key, settings.timeout_seconds, settings.usage_warning_pct) + coingecko_ping(
        settings.coingecko_url, settings.timeout_seconds
    )


@task(name="check-ai-services", cache_policy=NO_CACHE)
def check_ai_services(settings: DiagnoseSettings, secret_source: str) -> list[CheckResult]:
    """An authenticated model-list call to OpenAI and to Anthropic."""
    get_run_logger().info("Listing models at %s and %s", settings.openai_url, settings.anthropic_url)
    return openai_models(settings.openai_url, secret_value("OPENAI_API_KEY", secret_source), settings.timeout_seconds) + anthropic_models(
        settings.anthropic_url, secret_value("ANTHROPIC_API_KEY", secret_source), settings.timeout_seconds
    )


@task(name="check-payments", cache_policy=NO_CACHE)
def check_payments(platform_url: str, secret_source: str, timeout_s: float) -> list[CheckResult]:
    """A Stripe-signed test event to the platform's webhook, twice, and a forged one (§3.4)."""
    get_run_logger().info("Posting a signed test event to %s/api/stripe/webhooks", platform_url)
    return stripe_webhook_roundtrip(platform_url, secret_value("STRIPE_WEBHOOK_SECRET", secret_source), timeout_s)
