"""Deployments: prefect.yaml is the source of truth; serve.py runs the same
deployments without a work pool (one long-running process, for small installs)."""
