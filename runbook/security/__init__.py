"""Security operations (runbook §5): pure decisions, tested without I/O."""
