"""Which daily partitions a change in the landing folders affects (the landing sensor's logic).

A landing file is known by its fingerprint (`LandingFile.file_id`: path, size, modification time).
Between two looks a file is new, changed or removed, and its rows map to days:

- FOCUS rows: the date of their ChargePeriodStart. A FOCUS delivery restates whole (billing account,
  billing period) pairs (see sources.focus.current_deliveries), so the days of every staged row of the
  pairs the file holds count too: a day the new delivery no longer bills changes as well.
- llm_call events: their call date.
- outcome events: the dates of the session they label (its calls' dates, from staging and from the
  changed files themselves: each of its intents is dated by one of them).

A daily partition reads calls and FOCUS rows of other days within the bounds of [pipeline]
(config.Bounds, see unitledger.steps.daily), so FOCUS and call dates widen by the days whose tables
can read them: a FOCUS row of day t the days of its request's call (t ± B) and of that call's
intent (S days before), a call of day x the days of the FOCUS rows within B days of it and of their
billing-only requests (2 × B before), of its copies (± 1) and of its session's intents (± S). A call
changing whether a FOCUS row further away is late billing (within the detection horizon) is
picked up by the next run covering that row's day (the nightly window). The previous version of a changed or removed file is read from staging while it is still
there (`staged/<table>/<old id>.parquet`): staging replaces it on the next run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import polars as pl

from unitledger.config import Bounds, Telemetry
from unitledger.layout import Layout
from unitledger.sources.events import (
    event_landing_files,
    read_events_raw,
    scan_staged_call_files,
    scan_staged_calls,
    scan_staged_outcome_files,
)
from unitledger.sources.files import InputFileError, LandingFile, list_landing
from unitledger.sources.focus import FOCUS_SUFFIXES, read_focus_raw
from unitledger.sources.values import parse_timestamp

# source ("focus" | "events") → path relative to its landing folder → file id
Fingerprints = dict[str, dict[str, str]]

def landing_files(layout: Layout, telemetry: Telemetry = Telemetry()) -> dict[str, list[LandingFile]]:
    """FOCUS files and event files (flat events, OTLP JSON, gateway logs: events.event_landing_files,
    whose ids depend on the [telemetry] settings as staging's do)."""
    return {"focus": list_landing(layout.landing_focus, FOCUS_SUFFIXES), "events": event_landing_files(layout, telemetry)}


def fingerprints(files: dict[str, list[LandingFile]]) -> Fingerprints:
    return {source: {f.relpath: f.file_id for f in found} for source, found in files.items()}


@dataclass
class Changes:
    """Landing files that differ from a previous look."""

    new: dict[str, list[LandingFile]] = field(default_factory=lambda: {"focus": [], "events": []})
    old_ids: dict[str, list[str]] = field(default_factory=lambda: {"focus": [], "events": []})

    def __bool__(self) -> bool:
        return any(self.new.values()) or any(self.old_ids.values())

    def describe(self) -> str:
        added = [f.relpath for found in self.new.values() for f in found]
        return f"{len(added)} new or changed file(s) ({', '.join(added[:5])}{', …' if len(added) > 5 else ''}), " + (
            f"{sum(map(len, self.old_ids.values()))} replaced or removed"
        )


def compare(previous: Fingerprints, files: dict[str, list[LandingFile]]) -> Changes:
    changes = Changes()
    for source, found in files.items():
        before = previous.get(source, {})
        current = {f.relpath: f for f in found}
        changes.new[source] = [f for path, f in current.items() if before.get(path) != f.file_id]
        changes.old_ids[source] = [
            file_id for path, file_id in before.items() if path not in current or current[path].file_id != file_id
        ]
    return changes


@dataclass
class AffectedDays:
    days: set[date]
    unreadable: list[str]  # messages for landing files that cannot be read (staging will fail on them)


def affected_days(layout: Layout, changes: Changes, bounds: Bounds, telemetry: Telemetry = Telemetry()) -> AffectedDays:
    """The days whose daily partitions read something that changed (`telemetry`: the settings
    event files are read with)."""
    unreadable: list[str] = []
    billing_days = _focus_days(layout, changes, unreadable)
    call_days, label_days = _event_days(layout, changes, unreadable, telemetry)
    B, S = bounds.billing_delay_days, bounds.session_days

    def around(found: set[date], before: int, after: int) -> set[date]:
        return {d + timedelta(days=k) for d in found for k in range(-before, after + 1)}

    widened = around(billing_days, B + S, B) | around(call_days, max(2 * B, S, 1), max(B, S, 1))
    return AffectedDays(widened | label_days, unreadable)


def _staged(directory, file_ids: list[str]) -> list:
    return [p for p in (directory / f"{i}.parquet" for i in file_ids) if p.exists()]


def _readable(files: list[LandingFile], read, unreadable: list[str]) -> list[pl.LazyFrame]:
    frames = []
    for f in files:
        try:
            frames.append(read(f))
        except InputFileError as exc:
            unreadable.append(str(exc))
    return frames


def _focus_days(layout: Layout, changes: Changes, unreadable: list[str]) -> set[date]:
    key = ["BillingAccountId", "BillingPeriodStart"]
    new = [
        raw.select(
            "BillingAccountId",
            parse_timestamp(pl.col("BillingPeriodStart")).alias("BillingPeriodStart"),
            parse_timestamp(pl.col("ChargePeriodStart")).dt.date().alias("charge_date"),
        )
        for raw in _readable(changes.new["focus"], read_focus_raw, unreadable)
    ]
    old = [pl.scan_parquet(p, glob=False).select(*key, "charge_date") for p in _staged(layout.staged("focus"), changes.old_ids["focus"])]
    if not new and not old:
        return set()
    touched = pl.concat([*new, *old]).drop_nulls().unique().collect()
    # Rows of every delivery of the same (account, period), current or not: this change may
    # supersede them or reinstate them.
    staged = sorted(layout.staged("focus").glob("*.parquet"))
    if not staged:
        return set(touched["charge_date"])
    restated = (
        pl.scan_parquet(staged, glob=False)
        .select(*key, "charge_date")
        .join(touched.lazy().select(key).unique(), on=key, how="semi")
        .select("charge_date")
        .unique()
        .collect()
    )
    return set(touched["charge_date"]) | set(restated["charge_date"])


def _event_days(layout: Layout, changes: Changes, unreadable: list[str], telemetry: Telemetry) -> tuple[set[date], set[date]]:
    raws = _readable(changes.new["events"], lambda f: read_events_raw(f, telemetry), unreadable)
    new = [
        raw.select(
            "event_type", "event_id", "session_id", parse_timestamp(pl.col("timestamp")).dt.date().alias("day")
        ).drop_nulls(["event_type", "session_id", "day"])
        for raw in raws
    ]
    schema = {"event_type": pl.String, "event_id": pl.String, "session_id": pl.String, "day": pl.Date}
    new_events = pl.concat(new).collect() if new else pl.DataFrame(schema=schema)
    new_calls = new_events.filter(pl.col("event_type") == "llm_call").select("session_id", pl.col("day").alias("call_date"))
    old_ids = changes.old_ids["events"]
    old_calls = [pl.scan_parquet(p, glob=False).select("event_id", "session_id", "call_date") for p in _staged(layout.staged("llm_calls"), old_ids)]
    old_labels = [pl.scan_parquet(p, glob=False).select("event_id", "session_id") for p in _staged(layout.staged("outcomes"), old_ids)]
    # The other copies of a changed event (one delivered more than once) may start or stop
    # counting: whichever copy is first by path and line counts (sources.events.event_copies).
    changed = pl.concat([new_events.lazy().select("event_id"), *(f.select("event_id") for f in [*old_calls, *old_labels])])
    changed = changed.drop_nulls().unique()
    copies_calls = scan_staged_call_files(layout).join(changed, on="event_id", how="semi").select("session_id", "call_date")
    copies_labels = scan_staged_outcome_files(layout).join(changed, on="event_id", how="semi").select("session_id")
    calls = pl.concat([new_calls.lazy(), *(f.select("session_id", "call_date") for f in old_calls), copies_calls]).collect()
    labeled = pl.concat(
        [
            new_events.lazy().filter(pl.col("event_type") == "outcome").select("session_id"),
            *(f.select("session_id") for f in old_labels),
            copies_labels,
            _evaluated_sessions(layout, raws, telemetry),
        ]
    ).unique()
    # A session's intents are dated by some of its calls, wherever they are (staged, or in a changed file).
    known_calls = pl.concat([scan_staged_calls(layout).select("session_id", "call_date"), new_calls.lazy()])
    session_days = known_calls.join(labeled, on="session_id", how="semi").select("call_date").unique().collect()
    return set(calls["call_date"]), set(session_days["call_date"])


_EVALUATION_FIELDS = (
    "source_file", "source_line", "event_id", "timestamp", "session_id", "feature_tag", "escalated", "trace_id", "span_id",
    "parent_span_id", "response_id", "evaluation_name", "evaluation_score_value", "evaluation_score_label",
)  # fmt: skip
_CALL_KEYS = ("trace_id", "span_id", "request_id", "session_id", "feature_tag")


def _evaluated_sessions(layout: Layout, raws: list[pl.LazyFrame], telemetry: Telemetry) -> pl.LazyFrame:
    """The sessions that evaluation results without a session attribute (OTLP gen_ai.evaluation.result
    naming a span, response or trace) of the changed files label: found as staging will find them
    (model.telemetry.evaluation_outcomes), among the staged calls and the changed files' own calls.
    A late evaluation-only file so re-runs the days of the session it judges."""
    from unitledger.model.telemetry import evaluation_outcomes

    telemetry_raws = [raw for raw in raws if "evaluation_name" in raw.collect_schema().names()]
    evaluations = [
        raw.filter(
            (pl.col("event_type") == "outcome") & pl.col("evaluation_name").is_not_null()
            & pl.col("session_id").is_null() & pl.col("problem").is_null()
        ).select(_EVALUATION_FIELDS)
        for raw in telemetry_raws
    ]
    if not evaluations:
        return pl.LazyFrame(schema={"session_id": pl.String})
    new_calls = [raw.filter(pl.col("event_type") == "llm_call").select(_CALL_KEYS) for raw in telemetry_raws]
    calls = pl.concat([scan_staged_call_files(layout).select(_CALL_KEYS), *new_calls])
    found = evaluation_outcomes(pl.concat(evaluations), calls, telemetry).outcomes
    return found.select("session_id").collect().lazy()
