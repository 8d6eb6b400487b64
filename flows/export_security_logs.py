"""``export-security-logs`` (runbook §5.4, §5.1): the security logs of a time range, as
evidence, into the backup store, each file with its sha256 and row count."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.states import Completed
from pydantic import Field

from flows.approval import run_action, run_id, utcnow
from runbook import progress
from runbook.checks import CheckResult
from runbook.errors import ConfigError, VerificationFailed
from runbook.reports import artifact_key, conclude, expected_failures
from runbook.security.actions import ActionRequest, Preview
from runbook.security.exports import MANIFEST, check_range, export_prefix, manifest, object_key, range_target
from runbook.settings import load_settings
from runbook.target import resolve_target
from runbook.times import in_team_time
from tasks.logexport import count_sources_task, export_source_task, read_back_task
from tasks.secstate import security_state
from tasks.store import get_json, open_backup_store, put_json


class ExportSecurityLogsParameters(ActionRequest):
    """Which time range to export, who asks and why."""

    since: datetime = Field(description="Start of the range (included); without an offset: RUNBOOK_TIMEZONE.")
    until: datetime = Field(description="End of the range (excluded); not in the future.")
    sources: list[str] = Field(default_factory=list, description="Names of RUNBOOK_SECURITY__LOG_EXPORT__SOURCES; empty: all.")


@flow(name="export-security-logs")
@expected_failures
def export_security_logs(params: ExportSecurityLogsParameters) -> Any:
    """Export security logs (§5.4, §5.1): the rows of each configured source (authentication
    events, API requests, security events, system_logs) with since <= time < until, as
    gzip'd JSON lines in the backup store under <instance>/security-exports/, with a
    manifest.json of each file's sha256, byte size and row count, the range, who and why.
    It changes nothing on the platform, but the logs hold personal data (emails, IPs): it
    goes through the preview (rows per source, destination), approval and audit. Each
    object is read back from the store and checked against its sha256 and row count."""
    settings = load_settings()
    config = settings.security.log_export
    target = resolve_target(settings)
    since, until = in_team_time(params.since, settings.timezone), in_team_time(params.until, settings.timezone)
    check_range(since, until, utcnow(), config.max_range_days)
    unknown = sorted(set(params.sources) - set(config.sources))
    if unknown:
        raise ConfigError(f"sources: {', '.join(unknown)} not in RUNBOOK_SECURITY__LOG_EXPORT__SOURCES ({', '.join(config.sources)})")
    sources = {n: m for n, m in config.sources.items() if not params.sources or n in params.sources}
    store = open_backup_store(target.store_url, settings.s3_endpoint_url, settings.backup.part_size_mb)
    state = security_state(settings, target.dsn)
    counts = count_sources_task(target.dsn, sources, since, until, settings.connect_timeout)
    folder = export_prefix(target.instance, config.prefix, since, until, (run_id() or "local").replace("-", "")[:12])
    preview = Preview(
        action="export-security-logs", target=range_target(since, until),
        summary=f"Export {sum(counts.values())} log row(s) from {since.isoformat()} to {until.isoformat()} into {store.url}/{folder}",
        changes=[f"write {object_key(folder, n)} ({c} row(s) of {sources[n].table})" for n, c in counts.items()]
        + [f"write {folder}{MANIFEST} (sha256, bytes and rows of each file; the range, who and why)",
           "nothing on the platform changes"],
        counts=counts,
        warnings=["Exported logs hold personal data (emails, IP addresses): keep the export where only the incident team can"
                  " read it, and delete it when the investigation no longer needs it"],
        undo=None,
    )

    def apply(approved: Preview) -> dict[str, Any]:
        total = max(1, sum(counts.values()))
        progress_id = create_progress_artifact(progress=0.0, description=f"Export of the security logs {approved.target}")
        finished = [0]
        shown = [0.0]
        files = []
        for name, mapping in sources.items():
            def on_rows(rows: int) -> None:
                progress.report("export-security-logs", finished[0] + rows, total)
                if time.monotonic() - shown[0] >= 1.0:
                    update_progress_artifact(progress_id, min(100.0, 100.0 * (finished[0] + rows) / total))
                    shown[0] = time.monotonic()

            files.append(export_source_task(target.dsn, store, object_key(folder, name), mapping, since, until,
                                            config.fetch_rows, on_rows, settings.connect_timeout))
            finished[0] += files[-1]["rows"]
        document = manifest(folder=folder, store=store.url, since=since, until=until, by=params.by, reason=params.reason,
                            run_id=run_id(), files=files, created_at=utcnow())
        put_json(store, folder + MANIFEST, document)
        update_progress_artifact(progress_id, 100.0)
        return {"folder": folder, "manifest": folder + MANIFEST, "files": files, "rows": document["rows"]}

    outcome = run_action(params, preview, apply, state, timeout_s=settings.security.approval_timeout_seconds)
    report: dict[str, Any] = {"store": store.url, "folder": folder, **outcome}
    if outcome["outcome"] != "applied":
        report["message"] = "preview only: nothing was exported"
        get_run_logger().info(report["message"])
        return Completed(message=report["message"], data=report)
    del report["outcome"]  # applied: the read-back decides between passed and failed

    written = get_json(store, outcome["after"]["manifest"])
    checks = []
    for entry in written["files"]:
        try:
            found = read_back_task(store, entry)
            checks.append(CheckResult(name=f"export:{entry['source']}", ok=True,
                                      detail=f"{entry['key']}: {found['rows']} row(s), {found['bytes']} bytes, sha256 {found['sha256']}"))
        except VerificationFailed as err:
            checks.append(CheckResult(name=f"export:{entry['source']}", ok=False, detail=str(err)))
    expected = {f["key"] for f in outcome["after"]["files"]}
    checks.append(CheckResult(name="export:manifest", ok={f["key"] for f in written["files"]} == expected,
                              detail=f"{folder}{MANIFEST} lists {len(written['files'])} file(s), {written['rows']} row(s)"))
    report["manifest"] = written
    return conclude(checks, report, passed=f"exported {written['rows']} row(s) to {store.url}/{folder}",
                    failed_as="export-security-logs: read-back failed",
                    artifact=(artifact_key("export-security-logs", "report"), f"Security logs {preview.target}"),
                    description="The export read back from the store")
