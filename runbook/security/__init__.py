"""Security operations (runbook §5, §3.5): detection, incident actions, scans. Pure
decisions live here; the data, the enforcement points and the scanners in ``tasks/``."""
