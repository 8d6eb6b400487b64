"""HTTP to the platform: timed requests, concurrently, each split into DNS, connect,
TLS, first byte and total (httpx's trace extension)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr

from runbook.deploy import Endpoint, Sample, Timing


def _span(marks: dict[str, float], step: str) -> float:
    """Milliseconds between ``<any>.<step>.started`` and ``.complete`` (0 if absent)."""
    started = next((v for k, v in marks.items() if k.endswith(f"{step}.started")), None)
    done = next((v for k, v in marks.items() if k.endswith(f"{step}.complete")), None)
    return (done - started) * 1000 if started is not None and done is not None else 0.0


async def _resolve_ms(url: str) -> float:
    """How long the name of ``url`` takes to resolve (0 for an IP address)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return 0.0
    except OSError:
        pass
    started = time.perf_counter()
    try:
        await asyncio.get_running_loop().getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80))
    except OSError:
        pass  # the request itself reports the failure
    return (time.perf_counter() - started) * 1000


async def _one(client: httpx.AsyncClient, endpoint: Endpoint, auth: dict[str, str], dns_ms: float, with_auth: bool) -> Sample:
    marks: dict[str, float] = {}

    async def trace(name: str, info: dict[str, object]) -> None:
        marks[name] = time.perf_counter()

    headers = auth if with_auth else {}
    started = time.perf_counter()
    try:
        response = await client.get(endpoint.path, headers=headers, extensions={"trace": trace})
    except httpx.HTTPError as err:
        return Sample(path=endpoint.path, error=f"{type(err).__name__}: {err}".strip().rstrip(":"),
                      timing=Timing(total_ms=(time.perf_counter() - started) * 1000))
    total = (time.perf_counter() - started) * 1000
    connect = _span(marks, "connect_tcp")
    first_byte_start = next((v for k, v in marks.items() if k.endswith("send_request_headers.started")), started)
    first_byte = next((v for k, v in marks.items() if k.endswith("receive_response_headers.complete")), None)
    keys = None
    if response.headers.get("content-type", "").startswith("application/json"):
        try:
            data = response.json()
            keys = sorted(data) if isinstance(data, dict) else []
        except ValueError:
            keys = None
    return Sample(
        path=endpoint.path,
        status=response.status_code,
        timing=Timing(
            dns_ms=dns_ms if connect else 0.0,
            connect_ms=connect,
            tls_ms=_span(marks, "start_tls"),
            ttfb_ms=(first_byte - first_byte_start) * 1000 if first_byte is not None else 0.0,
            total_ms=total,
        ),
        cache_control=response.headers.get("cache-control"),
        version=response.headers.get("x-platform-version"),
        json_keys=keys,
    )


async def probe(
    base_url: str,
    endpoints: list[Endpoint],
    samples: int,
    *,
    token: SecretStr | None = None,
    concurrency: int = 10,
    timeout_s: float = 10.0,
    verify: bool | ssl.SSLContext = True,
    unauthenticated: bool = True,
) -> tuple[list[Sample], list[Sample]]:
    """``samples`` requests per endpoint, at most ``concurrency`` at once. Also one
    request without the token to each endpoint that needs one (it must be refused)."""
    dns_ms = await _resolve_ms(base_url)
    # the token goes into the request only: a Sample keeps no header, an error no request
    auth = {"Authorization": f"Bearer {token.get_secret_value()}"} if token is not None else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s, limits=limits, verify=verify) as client:

        async def bounded(endpoint: Endpoint, with_auth: bool) -> Sample:
            async with gate:
                return await _one(client, endpoint, auth, dns_ms, with_auth)

        measured = [bounded(e, e.auth) for e in endpoints for _ in range(samples)]
        anonymous = [bounded(e, False) for e in endpoints if e.auth and unauthenticated]
        results = await asyncio.gather(*measured, *anonymous)
    return list(results[: len(measured)]), list(results[len(measured) :])


@task(name="probe-endpoints", cache_policy=NO_CACHE)
def probe_endpoints(
    base_url: str,
    endpoints: list[Endpoint],
    samples: int,
    token: SecretStr | None,
    concurrency: int,
    timeout_s: float,
    ca_bundle: Path | None = None,
) -> tuple[list[Sample], list[Sample]]:
    """Request every endpoint ``samples`` times, concurrently, timing each request."""
    get_run_logger().info("Probing %d endpoints of %s, %d samples each, %d at a time", len(endpoints), base_url, samples, concurrency)
    verify: bool | ssl.SSLContext = ssl.create_default_context(cafile=str(ca_bundle)) if ca_bundle else True
    return asyncio.run(probe(base_url, endpoints, samples, token=token, concurrency=concurrency, timeout_s=timeout_s, verify=verify))
