"""The staging step: stage new landing files (unitledger.sources), validate what staging holds, then
publish the staged bad rows as the `quarantine` table.

Staging FOCUS files also decides which billing periods a reconciliation can cover: the months from
pipeline.start_date to today (the monthly partitions). Current rows of any other billing period
(1970, 2099, a month before the start date) would be in no reconciliation: they are held in
quarantine with that reason and left out of the current rows, recomputed on every staging run so
a new start date or a new month never leaves a stale decision."""

from __future__ import annotations

import hashlib

from datetime import date, datetime, time, timezone

import polars as pl
from pandera.config import ValidationDepth

from schemas import StagedFocus, StagedLlmCall, StagedOutcome, StagedSpan
from unitledger import months
from unitledger.checks.validation import CheckOutcome, validate
from unitledger.config import Settings, Telemetry
from unitledger.layout import Layout
from unitledger.model.quarantine import focus_held
from unitledger.sources import events, focus
from unitledger.sources.files import scan_dir
from unitledger.steps.result import StepResult
from unitledger.warehouse.manifest import read_manifest
from unitledger.warehouse.publish import Publication, write_parquet_atomic


# Staged rows are what the sources' *_typed transforms let through: every value rule of the staged
# models (required, ISO currency, known categories, non-negative counts, forward periods) was
# applied to each row on the way in, failures quarantined. Re-running them over all of staging each
# run repeats that work at a cost growing with history; the schema (columns, types) is what can
# still drift.
STAGED_DEPTH = ValidationDepth.SCHEMA_ONLY


# The rows of billing periods outside pipeline.start_date..today, rewritten by every staging run.
OUTSIDE_FILE = "outside.parquet"


def _utc(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=timezone.utc)


def hold_unreconciled_periods(layout: Layout, start_date: date, today: date) -> pl.DataFrame:
    """Record the billing periods reconciliations cover (the months of start_date..today) for
    sources.focus.scan_staged_focus, and hold the current rows of other periods in quarantine
    (warehouse/staged/quarantine/focus_periods/, published with the staged bad rows). Returns their count and cost per currency."""
    first, end = months.month_start(start_date), months.next_month(today)
    periods = pl.DataFrame({"first": [_utc(first)], "end": [_utc(end)]}, schema={"first": pl.Datetime("us", "UTC"), "end": pl.Datetime("us", "UTC")})
    current = focus.scan_staged_focus(layout, every_period=True)
    outside = current.filter(~pl.col("BillingPeriodStart").is_between(pl.lit(_utc(first)), pl.lit(_utc(end)), closed="left"))
    reason = (
        pl.lit("billing period ") + pl.col("BillingPeriodStart").dt.strftime("%Y-%m")
        + pl.lit(f" is outside pipeline.start_date..today ({months.period_key(first)}..{months.period_key(today)}): no reconciliation covers it")
    )
    # The rows first, then the periods that hide them from the current rows: killed in between,
    # the next run writes both again.
    write_parquet_atomic(focus_held(outside, "BillingPeriodStart", reason), layout.quarantine("focus_periods") / OUTSIDE_FILE)
    write_parquet_atomic(periods, layout.staged("focus_periods") / focus.PERIODS_FILE)
    return (
        pl.scan_parquet(layout.quarantine("focus_periods") / OUTSIDE_FILE, glob=False)
        .group_by("billing_currency")
        .agg(rows=pl.len(), billed_cost=pl.col("billed_cost").sum())
        .sort("billing_currency")
        .collect()
    )


def stage_billing(layout: Layout, settings: Settings, today: date) -> StepResult:
    """Stage new FOCUS landing files; hold the rows of billing periods outside
    pipeline.start_date..`today`; validate what staging holds."""
    result = StepResult()
    read_manifest(layout)  # refuses a warehouse of an earlier layout before staging into it
    with result.timed("ingest"):
        report = focus.stage_focus(layout)
        outside = hold_unreconciled_periods(layout, settings.start_date, today)
    with result.timed("validate"):
        # Every staged row, superseded ones too: the same checks as on the current rows (a subset),
        # without re-ranking the deliveries in each of Pandera's queries.
        check = validate(StagedFocus, focus.scan_staged_focus_files(layout), "schema", STAGED_DEPTH)
    result.checks["staged_billing"] = [check]
    if result.passed:
        with result.timed("write"):
            publish_quarantine(layout, "focus")
    result.tables["staged_billing"] = {
        "files_staged": report.staged_files,
        "files_unchanged": report.reused_files,
        "files_removed": report.removed_files,
        "dagster/row_count": report.rows["focus"],
        "quarantined_rows": report.quarantined_rows,
        "rows_outside_billing_periods": int(outside["rows"].sum()),
    }
    held = int(outside["rows"].sum())
    result.warnings["staged_billing"] = [
        CheckOutcome(
            "billing_periods",
            held == 0,
            f"{held} FOCUS row(s) of billing periods outside pipeline.start_date..today held in quarantine "
            f"(billed {', '.join(f'{c} {v}' for c, _, v in outside.iter_rows())})"
            if held
            else "every FOCUS row's billing period is reconciled",
            {"rows_outside_billing_periods": held},
        )
    ]
    return result


def stage_events(layout: Layout, telemetry: Telemetry = Telemetry()) -> StepResult:
    """Stage new event landing files (flat events, OTLP JSON, gateway logs: read with the
    [telemetry] settings); validate what staging holds."""
    result = StepResult()
    read_manifest(layout)
    with result.timed("ingest"):
        report = events.stage_events(layout, telemetry)
    with result.timed("validate"):
        checks = [
            validate(StagedLlmCall, events.scan_staged_calls(layout), "llm_call_schema", STAGED_DEPTH),
            validate(StagedOutcome, events.scan_staged_outcomes(layout), "outcome_schema", STAGED_DEPTH),
            validate(StagedSpan, scan_dir(layout.staged("spans"), StagedSpan), "span_schema", STAGED_DEPTH),
        ]
    per_file = events.rows_by_file(layout, telemetry)
    checks.append(_whole_telemetry_files_quarantined(layout, per_file))
    result.checks["staged_events"] = checks
    if result.passed:
        with result.timed("write"):
            publish_quarantine(layout, "events")
    result.tables["staged_events"] = {
        "files_staged": report.staged_files,
        "files_unchanged": report.reused_files,
        "files_removed": report.removed_files,
        "llm_calls": report.rows["llm_calls"],
        "outcomes": report.rows["outcomes"],
        "evaluations": report.rows["evaluations"],
        "spans": report.rows["spans"],
        "ignored_records": report.rows["ignored_records"],
        # telemetry files with no GenAI record at all (only HTTP or database spans, say): staged, 0 calls
        "files_without_genai_records": "; ".join(
            f"{name}: {rows.ignored} non-GenAI record(s) ignored, 0 calls" for name, rows in sorted(per_file.items())
            if rows.source_format != "events" and rows.kept == rows.quarantined == 0
        ),
        "dagster/row_count": report.rows["llm_calls"] + report.rows["outcomes"],
        "duplicate_events": report.duplicate_events,
        "quarantined_rows": report.quarantined_rows,
        # which files the quarantined rows came from, most first
        "quarantined_rows_by_file": "; ".join(
            f"{name}: {rows.quarantined} of {rows.kept + rows.quarantined + rows.ignored}"
            for name, rows in sorted(per_file.items(), key=lambda kv: (-kv[1].quarantined, kv[0])) if rows.quarantined
        ),
    }
    return result


def _whole_telemetry_files_quarantined(layout: Layout, per_file: dict[str, events.FileRows]) -> CheckOutcome:
    """Blocking: a telemetry file (OTLP, gateway log) none of whose rows could be staged, every one
    quarantined, fails the run, naming the file and its first row's reason: such a file is a wrong
    export or a wrong format, not a few bad rows. (A flat event file keeps the old rule: its bad
    rows are quarantined and the run goes on.)"""
    whole = {name: rows for name, rows in per_file.items() if rows.source_format != "events" and rows.quarantined and not rows.kept}
    if not whole:
        return CheckOutcome("telemetry_files", True, "every telemetry file has rows that could be staged")
    described = []
    for name, rows in sorted(whole.items()):
        line, column, reason = events.first_quarantined(layout, rows.file_id)
        described.append(f"{name}: all {rows.quarantined} row(s) quarantined; first: line {line}, {column}: {reason}")
    return CheckOutcome(
        "telemetry_files", False,
        f"{len(whole)} telemetry file(s) quarantined entirely (nothing staged from them): " + "; ".join(described),
        {"files_quarantined_entirely": len(whole)},
    )


def publish_quarantine(layout: Layout, source: str) -> None:
    """The `quarantine` table's partition of `source` becomes the staged bad rows of the landing
    files staged now. Staging removes a landing file's rows as soon as the file is gone; the
    published table keeps them (hard links) until no reader can still be reading them. With
    `focus`, the rows of billing periods outside pipeline.start_date..today too (partition
    `focus_periods`)."""
    staged = sorted(layout.quarantine(source).glob("*.parquet"))
    if source == "events":  # evaluation results no session was found for (events.derive_telemetry)
        staged += sorted(layout.quarantine("evaluations").glob("*.parquet"))
    publication = Publication(layout)
    publication.link("quarantine", source, {f: f"source={source}/{f.name}" for f in staged})
    outside = layout.quarantine("focus_periods") / OUTSIDE_FILE
    if source == "focus":
        # Rewritten by every run under the same name: published under a name that says what it
        # holds, so an unchanged decision keeps its published copy and a new one gets a new name;
        # none held, the partition becomes empty.
        held = outside.exists() and pl.scan_parquet(outside, glob=False).select(pl.len()).collect().item() > 0
        digest = hashlib.sha256(outside.read_bytes()).hexdigest()[:16] if held else ""
        publication.link("quarantine", "focus_periods", {outside: f"source=focus_periods/outside-{digest}.parquet"} if held else {})
    publication.commit()
