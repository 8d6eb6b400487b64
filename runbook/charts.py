"""The review charts as PNG bytes (matplotlib, Agg: no display), and the markdown that
shows one in the Prefect UI.

Prefect 3.9 has no artifact that holds an image: ``create_image_artifact`` takes a URL
the browser fetches, and a backup store is not served over HTTP. A markdown artifact
can embed the PNG as a ``data:image/png;base64,...`` URL: the UI's markdown renderer
(ui-v2's, the default, keeps ``data:image/`` URLs on ``img`` explicitly; the v1 UI's
DOMPurify allows data URIs on ``img``) shows it inline. The same PNG is kept in the
backup store beside the backups, to download.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runbook.capacity import MetricReview

DPI = 80  # small enough to embed (about 30-60 KB a chart), sharp enough to read


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)  # never a display: flows run on workers
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def image_markdown(png: bytes, alt: str) -> str:
    """The PNG inline in a markdown artifact."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def capacity_chart(reviews: Sequence["MetricReview"], points: dict[str, list[tuple[datetime, float]]], now: datetime,
                   horizon_days: int) -> bytes:
    """One panel per metric: its history, the fitted trend to the horizon (when it is
    believed: growing), and its thresholds; the status in the panel's title."""
    plt = _pyplot()
    rows = max(1, len(reviews))
    # one time axis for every panel: from the oldest sample to the horizon
    fig, axes = plt.subplots(rows, 1, figsize=(8, 2.1 * rows), squeeze=False, sharex=True, layout="constrained")
    end = now + timedelta(days=horizon_days)
    oldest = min((at for review in reviews for at, _ in points.get(review.metric, [])), default=now - timedelta(days=30))
    for ax, review in zip(axes[:, 0], reviews, strict=False):
        history = points.get(review.metric, [])
        if history:
            ax.plot([at for at, _ in history], [v for _, v in history], "o" if len(history) < 50 else ".", markersize=4 if len(history) < 50 else 2, label="history")
        if review.fit is not None and review.status in ("growing", "over") and review.enough:
            start = history[0][0] if history else now
            ax.plot([start, end], [review.fit.at(start), review.fit.at(end)], "--", linewidth=1, label="trend")
        for eta in review.etas:
            ax.axhline(eta.threshold.value, color="tab:red" if "critical" in eta.threshold.label else "tab:orange",
                       linewidth=0.8, linestyle=":")
            ax.annotate(f"{eta.threshold.value:g} {review.unit} {eta.threshold.label}", (end, eta.threshold.value),
                        fontsize=7, ha="right", va="bottom")
        ax.axvline(now, color="grey", linewidth=0.6)
        ax.set_title(f"{review.metric}: {review.status}", fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
        if not history:
            ax.text(0.5, 0.5, "insufficient data: no history", transform=ax.transAxes, ha="center", fontsize=9)
    axes[0, 0].set_xlim(oldest, end)
    fig.autofmt_xdate()
    return _png(fig)


def period_chart(series: dict[str, tuple[list[tuple[float, float]], list[tuple[float, float]]]], period: str,
                 lines: dict[str, list[tuple[float, str]]] | None = None) -> bytes:
    """One panel per metric: this period and the previous one over the same clock
    (hours from the period's start); ``lines`` are reference levels (§7.1's 100 and 1000 req/s)."""
    plt = _pyplot()
    rows = max(1, len(series))
    fig, axes = plt.subplots(rows, 1, figsize=(8, 2.0 * rows), squeeze=False, sharex=True, layout="constrained")
    for ax, (metric, (current, previous)) in zip(axes[:, 0], series.items(), strict=False):
        if previous:
            ax.plot([h for h, _ in previous], [v for _, v in previous], "-", color="tab:grey", linewidth=0.8, label=f"previous {period}")
        if current:
            ax.plot([h for h, _ in current], [v for _, v in current], "-", color="tab:blue", linewidth=1.0, label=f"this {period}")
        for value, label in (lines or {}).get(metric, []):
            ax.axhline(value, color="tab:orange", linewidth=0.8, linestyle=":")
            ax.annotate(label, (0, value), fontsize=7, va="bottom")
        if not current and not previous:
            ax.text(0.5, 0.5, "insufficient data: no samples", transform=ax.transAxes, ha="center", fontsize=9)
        ax.set_title(metric, fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
        if current or previous:
            ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("hours from the period's start", fontsize=7)
    return _png(fig)
