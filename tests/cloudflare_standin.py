"""A stand-in for Cloudflare's IP Access Rules API on 127.0.0.1, for block-ip: the
endpoints the ``cloudflare`` SDK calls (list, create, get, delete under
``/client/v4/{zones|accounts}/<id>/firewall/access_rules/rules``), with Cloudflare's
envelope (``success``, ``errors``, ``result``), its bearer token check, its refusal of
a second rule for the same address and of ranges it does not take. Every request is
recorded (method, path, parsed body, and ``queries``); ``fail_next`` queues 500, 429,
403... answers (tests/standins.py), ``fail_next_of`` those of one method only."""

from __future__ import annotations

import ipaddress
import itertools
import re
import secrets
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.standins import Answer, HttpStandIn, Received

_RULES = re.compile(r"^/client/v4/(zones|accounts)/([^/]+)/firewall/access_rules/rules(?:/([^/]+))?$")
PREFIX = "RUNBOOK_SECURITY__BLOCK__CLOUDFLARE__"


def _envelope(result: Any, status: int = 200, **extra: Any) -> Answer:
    return status, {}, {"success": True, "errors": [], "messages": [], "result": result, **extra}


def _error(status: int, code: int, message: str) -> Answer:
    return status, {}, {"success": False, "errors": [{"code": code, "message": message}], "messages": [], "result": None}


class CloudflareStandIn(HttpStandIn):
    """IP Access Rules of one zone (or account). ``rules`` maps id -> rule as the API
    returns it; ``add_rule`` makes one as if by hand in the dashboard."""

    def __init__(self, kind: str = "zones") -> None:
        self.kind = kind
        self.scope_id = secrets.token_hex(16)
        self.token = "cf-" + secrets.token_urlsafe(24)
        self.rules: dict[str, dict[str, Any]] = {}
        self.queries: list[dict[str, list[str]]] = []
        self._ids = itertools.count(1)
        self._local = threading.local()
        self._method_faults: list[tuple[str, int]] = []
        self.forget_created = False  # answer a create, then lose the rule (to test the read back)
        super().__init__()

    @property
    def base_url(self) -> str:
        return f"{self.url}/client/v4"

    def settings_env(self) -> dict[str, str]:
        where = "ZONE_ID" if self.kind == "zones" else "ACCOUNT_ID"
        return {PREFIX + "BASE_URL": self.base_url, PREFIX + where: self.scope_id, PREFIX + "API_TOKEN": self.token}

    def reset(self) -> None:
        super().reset()
        self.rules.clear()
        self.queries.clear()

    def add_rule(self, target: str, value: str, mode: str = "block", notes: str = "by hand") -> str:
        rule_id = secrets.token_hex(16)
        self.rules[rule_id] = self._rule(rule_id, {"target": target, "value": value}, mode, notes)
        return rule_id

    def fail_next_of(self, method: str, status: int, n: int = 1) -> None:
        """The next ``n`` requests of ``method`` (POST, DELETE...) get ``status``; others are served."""
        self._method_faults += [(method, status)] * n

    def calls(self, method: str | None = None) -> list[Received]:
        """The requests to the rules endpoints (optionally of one method)."""
        return [r for r in self.received if "/firewall/access_rules/" in r.path and (method is None or r.method == method)]

    def _rule(self, rule_id: str, configuration: dict[str, str], mode: str, notes: str) -> dict[str, Any]:
        return {"id": rule_id, "allowed_modes": ["block", "challenge", "whitelist", "js_challenge", "managed_challenge"],
                "configuration": configuration, "mode": mode, "notes": notes, "created_on": "2024-01-01T00:00:00Z",
                "modified_on": "2024-01-01T00:00:00Z", "scope": {"id": self.scope_id, "type": "zone" if self.kind == "zones" else "organization"}}

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        # the query string is not part of Received: kept per request thread for answer()
        self._local.query = parse_qs(urlsplit(handler.path).query)
        super()._serve(handler)

    def fault_body(self, request: Received, status: int) -> Any:
        return _error(status, 10000 + status, f"stand-in fault {status}")[2]

    def answer(self, request: Received) -> Answer:
        fault = next((f for f in self._method_faults if f[0] == request.method), None)
        if fault is not None:
            self._method_faults.remove(fault)
            return fault[1], {}, self.fault_body(request, fault[1])
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _error(403, 10000, "Authentication error")
        match = _RULES.match(request.path)
        if not match:
            return _error(404, 7003, "Could not route to " + request.path)
        kind, scope, rule_id = match.groups()
        if kind != self.kind or scope != self.scope_id:
            return _error(403, 10000, "Authentication error")  # a token for another zone, as Cloudflare answers
        query = getattr(self._local, "query", {})
        self.queries.append(query)
        if rule_id is None and request.method == "GET":
            page = int(float(query.get("page", ["1"])[0]))
            target, value = query.get("configuration.target", [None])[0], query.get("configuration.value", [None])[0]
            found = [r for r in self.rules.values() if (target is None or r["configuration"]["target"] == target)
                     and (value is None or r["configuration"]["value"] == value)]
            items = found if page == 1 else []
            return _envelope(items, result_info={"page": page, "per_page": 100, "count": len(items), "total_count": len(found)})
        if rule_id is None and request.method == "POST":
            body = request.body if isinstance(request.body, dict) else {}
            configuration, mode = body.get("configuration") or {}, body.get("mode")
            if mode not in ("block", "challenge", "whitelist", "js_challenge", "managed_challenge"):
                return _error(400, 10001, "mode is invalid")
            problem = _check_configuration(configuration)
            if problem:
                return _error(400, 10001, problem)
            if any(r["configuration"] == configuration for r in self.rules.values()):
                return _error(400, 10009, "firewallaccessrules.api.duplicate_of_existing")
            new_id = f"rule{next(self._ids):04d}" + secrets.token_hex(12)
            made = self._rule(new_id, configuration, mode, body.get("notes") or "")
            if not self.forget_created:
                self.rules[new_id] = made
            return _envelope(made)
        if rule_id is not None and request.method == "GET":
            rule = self.rules.get(rule_id)
            return _envelope(rule) if rule else _error(404, 10014, "firewallaccessrules.api.not_found")
        if rule_id is not None and request.method == "DELETE":
            if self.rules.pop(rule_id, None) is None:
                return _error(404, 10014, "firewallaccessrules.api.not_found")
            return _envelope({"id": rule_id})
        return _error(405, 10000, "method not allowed")


def _check_configuration(configuration: dict[str, Any]) -> str | None:
    target, value = configuration.get("target"), str(configuration.get("value") or "")
    try:
        if target == "ip":
            ipaddress.IPv4Address(value)
        elif target == "ip6":
            ipaddress.IPv6Address(value)
        elif target == "ip_range":
            network = ipaddress.ip_network(value)
            if network.prefixlen not in ((16, 24) if network.version == 4 else (32, 48, 64)):
                return "firewallaccessrules.api.validation_error: unsupported range " + value
        else:
            return "configuration.target is invalid"
    except ValueError:
        return f"firewallaccessrules.api.validation_error: invalid value {value}"
    return None
