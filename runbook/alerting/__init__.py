"""Alerting (runbook §2, §7.1-§7.2, §9): rules as data, alert state, notifications
through a delivery ledger, and on-call escalation. Pure decisions live here; the
state database, the channels and the signals live in ``tasks/``."""
