"""The staging step: stage new landing files (unitledger.sources), validate what staging holds, then
publish the staged bad rows as the `quarantine` table."""

from __future__ import annotations

from pandera.config import ValidationDepth

from schemas import StagedFocus, StagedLlmCall, StagedOutcome
from unitledger.checks.validation import validate
from unitledger.config import Telemetry
from unitledger.layout import Layout
from unitledger.sources import events, focus
from unitledger.steps.result import StepResult
from unitledger.warehouse.manifest import read_manifest
from unitledger.warehouse.publish import Publication


# Staged rows are what the sources' *_typed transforms let through: every value rule of the staged
# models (required, ISO currency, known categories, non-negative counts, forward periods) was
# applied to each row on the way in, failures quarantined. Re-running them over all of staging each
# run repeats that work at a cost growing with history; the schema (columns, types) is what can
# still drift.
STAGED_DEPTH = ValidationDepth.SCHEMA_ONLY


def stage_billing(layout: Layout) -> StepResult:
    """Stage new FOCUS landing files; validate what staging holds."""
    result = StepResult()
    read_manifest(layout)  # refuses a warehouse of an earlier layout before staging into it
    with result.timed("ingest"):
        report = focus.stage_focus(layout)
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
    }
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
        ]
    per_file = events.quarantine_by_file(layout, telemetry)
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
        "dagster/row_count": report.rows["llm_calls"] + report.rows["outcomes"],
        "duplicate_events": report.duplicate_events,
        "quarantined_rows": report.quarantined_rows,
        # which files the quarantined rows came from, most first
        "quarantined_rows_by_file": "; ".join(
            f"{name}: {n}" for name, n in sorted(per_file.items(), key=lambda kv: (-kv[1], kv[0]))
        ),
    }
    return result


def publish_quarantine(layout: Layout, source: str) -> None:
    """The `quarantine` table's partition of `source` becomes the staged bad rows of the landing
    files staged now. Staging removes a landing file's rows as soon as the file is gone; the
    published table keeps them (hard links) until no reader can still be reading them."""
    staged = sorted(layout.quarantine(source).glob("*.parquet"))
    if source == "events":  # evaluation results no session was found for (events.derive_telemetry)
        staged += sorted(layout.quarantine("evaluations").glob("*.parquet"))
    publication = Publication(layout)
    publication.link("quarantine", source, {f: f"source={source}/{f.name}" for f in staged})
    publication.commit()
