"""runbook: the platform's operations guide as Prefect flows."""
