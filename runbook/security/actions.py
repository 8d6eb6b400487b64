"""What every incident action of §5.4 shares: a preview of exactly what will change, an
approval typed against that preview, and the audit record of what was done.

An action runs in three steps, each audited (tasks/secstate.py):

    preview  ->  approval (typed phrase in the UI, or --confirm on the CLI)  ->  apply

Without an approval nothing runs: a timeout, a wrong phrase or a preview-only run
change nothing. A preview that finds nothing to change (``noop``) applies nothing
either, so blocking the same address twice is never a second rule.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from runbook.errors import ConfigError

Phase = Literal["preview", "applied", "undone", "noop", "refused", "timed-out", "failed", "expired"]


class NotApproved(ConfigError):
    """The action was not approved (timeout, wrong phrase, preview only): nothing changed."""


class Preview(BaseModel):
    """Exactly what an action will change, before it changes it."""

    action: str = Field(description="The action's name, e.g. block-ip.")
    target: str = Field(description="What it acts on, canonical: 93.184.216.34/32, user=42, all, the roles...")
    summary: str = Field(description="One line: what will happen.")
    changes: list[str] = Field(default_factory=list, description="Each change, one line each, as it will be made.")
    counts: dict[str, int] = Field(default_factory=dict, description="How many of each thing are affected.")
    samples: list[dict[str, Any]] = Field(default_factory=list, description="A few of the affected rows (never a secret).")
    warnings: list[str] = Field(default_factory=list, description="What the approver must know: admin sessions, forced refusals.")
    undo: str | None = Field(None, description="The command that undoes it; None: it cannot be undone (said in the preview).")
    noop: bool = Field(False, description="Nothing to change (already in that state): applying does nothing.")
    before: dict[str, Any] = Field(default_factory=dict, description="The state the undo restores (recorded in the audit).")

    @property
    def phrase(self) -> str:
        """What the approver types to apply it: the action and its target."""
        return f"{self.action} {self.target}"

    def markdown(self) -> str:
        lines = [f"# Preview: {self.action} {self.target}", "", self.summary, ""]
        if self.noop:
            lines += ["**Nothing to change**: applying this does nothing.", ""]
        if self.changes:
            lines += ["## What will change", ""] + [f"- {c}" for c in self.changes] + [""]
        if self.counts:
            lines += ["| affected | count |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in self.counts.items()] + [""]
        if self.warnings:
            lines += ["## Before you approve", ""] + [f"- **{w}**" for w in self.warnings] + [""]
        lines += ["## Undo", "", f"`{self.undo}`" if self.undo else "**This cannot be undone.**", ""]
        if self.samples:
            keys = list(dict.fromkeys(k for s in self.samples for k in s))
            lines += ["## Samples", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            lines += ["| " + " | ".join(_cell(s.get(k)) for k in keys) + " |" for s in self.samples]
            lines.append("")
        if not self.noop:
            lines += ["## To apply", "", f"Type `{self.phrase}` (CLI: add `--confirm`). Anything else applies nothing."]
        return "\n".join(lines)


def _cell(value: Any) -> str:
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")[:120]


class ActionRequest(BaseModel):
    """Who asks for an action and why, and how it is approved (every action's parameters share these)."""

    by: str = Field(description="Who asks for it (kept in the audit).")
    reason: str = Field(description="Why (kept in the audit).")
    confirm: bool = Field(False, description="Approved in advance (the CLI's --confirm); unset: the run pauses for a typed approval.")
    preview_only: bool = Field(False, description="Show the preview and change nothing.")

    @field_validator("by", "reason")
    @classmethod
    def _not_blank(cls, value: str, info: Any) -> str:
        if not value.strip():
            raise ValueError(f"{info.field_name}: must not be empty (it is kept in the audit)")
        return value.strip()


def check_phrase(preview: Preview, typed: str) -> None:
    """The typed approval must be the preview's phrase exactly (spaces around aside)."""
    if typed.strip() != preview.phrase:
        raise NotApproved(f"approval {typed.strip()!r} is not {preview.phrase!r}: nothing was changed")
