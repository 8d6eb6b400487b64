"""Small helpers for the reports flows leave in the Prefect UI."""

from __future__ import annotations

import re


def artifact_key(*parts: str) -> str:
    """An artifact key from parts: Prefect accepts lowercase letters, digits and dashes only."""
    text = "-".join(parts).lower()
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text)).strip("-")
