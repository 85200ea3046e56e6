"""Flat event files (JSON lines or Parquet, one LLM call or outcome label per line): the fields read,
each row's problems, typed calls and outcomes or quarantine records; reading and staging a file;
the scans of staged calls and outcomes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl

from schemas.types import CALL_STATUSES, MONEY, OUTCOME_SIGNALS, TIMESTAMP
from unitledger.layout import Layout
from unitledger.sources.files import (
    LandingFile,
    StagingReport,
    check_readable,
    decoded,
    list_landing,
    scan_dir,
    scan_parquet_as_text,
    stage_file,
    sync_staging,
    total_rows,
)
from unitledger.sources.values import (
    Problem,
    describe_problems,
    one_of,
    only_for,
    parse_timestamp,
    parsed_column,
    problem,
    required,
    ts_problem,
    with_problems,
)
from unitledger.model.requests import duplicate_event_rows
from unitledger.warehouse.publish import scratch_folder, write_parquet_atomic


LLM_CALL_FIELDS = (
    "event_id",
    "timestamp",
    "request_id",
    "session_id",
    "feature_tag",
    "provider",
    "model",
    "model_version",
    "prompt_version",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_write_input_tokens",
    "attempt",
    "status",
)

OUTCOME_FIELDS = ("event_id", "timestamp", "session_id", "feature_tag", "success", "escalated", "signal")

# Only these fields are ever read from an event: prompt and response text is never ingested.
EVENT_FIELDS = ("event_type",) + tuple(dict.fromkeys(LLM_CALL_FIELDS + OUTCOME_FIELDS))

TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens")

EVENT_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")


# --- rows -----------------------------------------------------------------------------------------


# Token counts must stay below this: Int64 sums wrap around silently past 9.2 * 10^18, and 10^9
# tokens in one call is hundreds of times the largest context window, so billions of calls at the
# bound still sum exactly.
TOKEN_LIMIT = 10**9


def _integer_problems(name: str, minimum: int, limit: int | None = None) -> list[Problem]:
    value = pl.col(parsed_column(name))
    unparsed = pl.col(name).is_not_null() & value.is_null()
    problems = [
        problem(unparsed, pl.lit("is not an integer: ") + pl.col(name).str.slice(0, 40)),
        problem(~unparsed & (value < minimum), pl.lit(f"is below {minimum}: ") + pl.col(name).str.slice(0, 40)),
    ]
    if limit is not None:
        message = pl.lit("is out of range: a token count must be below 10^9 for sums to stay exact: ")
        problems.append(problem(~unparsed & (value >= limit), message + pl.col(name).str.slice(0, 40)))
    return problems


def _bool_problem(name: str) -> Problem:
    return one_of(name, ("true", "false"), "true or false")


def _events_problems() -> dict[str, list[Problem]]:
    is_call = pl.col("event_type") == "llm_call"
    is_outcome = pl.col("event_type") == "outcome"
    problems: dict[str, list[Problem]] = {
        "event_type": [one_of("event_type", ("llm_call", "outcome"), "a known event type"), required("event_type")],
        "event_id": [required("event_id")],
        "timestamp": [required("timestamp"), ts_problem("timestamp")],
        "session_id": [required("session_id")],
    }
    for name in ("request_id", "feature_tag", "input_tokens", "output_tokens", "attempt", "status"):
        problems.setdefault(name, []).append(problem(is_call & pl.col(name).is_null(), "is required for llm_call"))
    for name in TOKEN_FIELDS:
        problems.setdefault(name, []).extend(only_for(is_call, _integer_problems(name, 0, TOKEN_LIMIT)))
    problems["attempt"].extend(only_for(is_call, _integer_problems("attempt", 1)))
    problems["status"].extend(only_for(is_call, [one_of("status", CALL_STATUSES, "ok or error")]))
    for name in ("success", "escalated", "signal"):
        problems[name] = [problem(is_outcome & pl.col(name).is_null(), "is required for outcome")]
    problems["success"].extend(only_for(is_outcome, [_bool_problem("success")]))
    problems["escalated"].extend(only_for(is_outcome, [_bool_problem("escalated")]))
    problems["signal"].extend(only_for(is_outcome, [one_of("signal", OUTCOME_SIGNALS, "explicit or implicit")]))
    return problems


def events_problems(raw: pl.LazyFrame) -> pl.LazyFrame:
    """Raw event text rows (one field per column) with `_bad` and the parsed timestamp and integer
    fields (hidden) added."""
    parsed = raw.with_columns(
        **{parsed_column("timestamp"): parse_timestamp(pl.col("timestamp"))},
        **{parsed_column(name): pl.col(name).str.strip_chars().str.to_integer(strict=False) for name in (*TOKEN_FIELDS, "attempt")},
    )
    return with_problems(parsed, _events_problems())


def llm_calls_typed(checked: pl.LazyFrame) -> pl.LazyFrame:
    """Good `llm_call` rows of `events_problems`, typed as schemas.StagedLlmCall."""
    from schemas.events import StagedLlmCall

    return (
        checked.filter(~pl.col("_bad") & (pl.col("event_type") == "llm_call"))
        .with_columns(
            timestamp=pl.col(parsed_column("timestamp")),
            attempt=pl.col(parsed_column("attempt")),
            **{name: pl.col(parsed_column(name)).fill_null(0) for name in TOKEN_FIELDS},
        )
        .with_columns(call_date=pl.col("timestamp").dt.date())
        .select(list(StagedLlmCall.to_schema().columns))
    )


def outcomes_typed(checked: pl.LazyFrame) -> pl.LazyFrame:
    """Good `outcome` rows of `events_problems`, typed as schemas.StagedOutcome."""
    from schemas.events import StagedOutcome

    return (
        checked.filter(~pl.col("_bad") & (pl.col("event_type") == "outcome"))
        .with_columns(
            timestamp=pl.col(parsed_column("timestamp")),
            success=pl.col("success") == "true",
            escalated=pl.col("escalated") == "true",
        )
        .select(list(StagedOutcome.to_schema().columns))
    )


def events_quarantine(checked: pl.LazyFrame) -> pl.LazyFrame:
    """Bad rows of `events_problems` as schemas.Quarantine records (known fields only: no content)."""
    null_text = pl.lit(None, dtype=pl.String)
    return describe_problems(checked.filter(pl.col("_bad")), _events_problems()).select(
        source=pl.lit("events"),
        source_file=pl.col("source_file"),
        source_line=pl.col("source_line"),
        column=pl.col("_columns"),
        reason=pl.col("_reason"),
        raw=pl.struct(EVENT_FIELDS).struct.json_encode(),
        billing_account_id=null_text,
        billing_currency=null_text,
        billing_period_start=pl.lit(None, dtype=TIMESTAMP),
        invoice_id=null_text,
        service_provider_name=null_text,
        billed_cost=pl.lit(None, dtype=MONEY),
        effective_cost=pl.lit(None, dtype=MONEY),
    )


# --- files ----------------------------------------------------------------------------------------


def read_events_raw(f: LandingFile) -> pl.LazyFrame:
    """Every known event field as text, plus source_file/source_line (content fields never read)."""
    check_readable(f)
    if f.relpath.lower().endswith(".parquet"):
        raw = scan_parquet_as_text(f, EVENT_FIELDS)
    else:
        struct = pl.Struct({name: pl.String for name in EVENT_FIELDS})
        raw = (
            pl.scan_lines(f.path, name="_json", glob=False)
            .with_row_index("source_line", offset=1)
            .filter(pl.col("_json").str.strip_chars() != "")
            .select("source_line", pl.col("_json").str.json_decode(struct).alias("_event"))
            .unnest("_event")
        )
    names = raw.collect_schema().names()
    return raw.with_columns(
        [pl.lit(None, dtype=pl.String).alias(c) for c in EVENT_FIELDS if c not in names]
    ).with_columns(source_file=pl.lit(f.relpath), source_line=pl.col("source_line").cast(pl.Int64))


def event_outputs(layout: Layout, f: LandingFile, raw: pl.LazyFrame | None = None) -> dict[Path, pl.LazyFrame]:
    """What staging one event file (read as `raw`, by default read_events_raw) writes: bad rows,
    outcomes, then llm_calls (the marker)."""
    checked = events_problems(read_events_raw(f) if raw is None else raw)
    return {
        layout.quarantine("events") / f"{f.file_id}.parquet": events_quarantine(checked),
        layout.staged("outcomes") / f"{f.file_id}.parquet": outcomes_typed(checked),
        layout.staged("llm_calls") / f"{f.file_id}.parquet": llm_calls_typed(checked),
    }


def stage_events(layout: Layout) -> StagingReport:
    """Stage every event landing file not staged yet into staged/llm_calls and staged/outcomes."""
    files = list_landing(layout.landing_events, EVENT_SUFFIXES)
    calls, outcomes, quarantine = layout.staged("llm_calls"), layout.staged("outcomes"), layout.quarantine("events")
    report = StagingReport()

    def stage_one(f: LandingFile) -> None:
        with scratch_folder(layout.tmp, "staging") as folder:
            raw = decoded(folder, f, read_events_raw)
            stage_file(event_outputs(layout, f, raw), f, calls / f"{f.file_id}.parquet", raw, folder)

    sync_staging(files, calls, [calls, outcomes, quarantine], stage_one, report)
    copies = event_copies(layout, write=True)
    report.rows["llm_calls"] = total_rows(calls) - copies.filter(pl.col("event_type") == "llm_call").height
    report.rows["outcomes"] = total_rows(outcomes) - copies.filter(pl.col("event_type") == "outcome").height
    report.duplicate_events = copies.height
    report.quarantined_rows = total_rows(quarantine)
    return report


# --- events delivered more than once ----------------------------------------------------------------


def event_copies(layout: Layout, write: bool = False) -> pl.DataFrame:
    """Staged calls and outcomes that repeat an event delivered before (model.requests.
    duplicate_event_rows over every staged event, calls and outcomes together), with their
    event_type. Staging caches the result under a name derived from the staged files (`write`):
    a reader finds it, or computes it when staging was interrupted before writing it."""
    files = {t: sorted(layout.staged(d).glob("*.parquet")) for t, d in (("llm_call", "llm_calls"), ("outcome", "outcomes"))}
    digest = hashlib.sha256("\0".join(f"{t}/{p.name}" for t, found in files.items() for p in found).encode()).hexdigest()[:24]
    cached = layout.staged("event_copies") / f"{digest}.parquet"
    if cached.exists():
        return pl.read_parquet(cached, glob=False)
    ids = [
        pl.scan_parquet(found, glob=False).select("event_id", "source_file", "source_line", event_type=pl.lit(t))
        for t, found in files.items()
        if found
    ]
    schema = {"event_id": pl.String, "source_file": pl.String, "source_line": pl.Int64, "event_type": pl.String}
    copies = duplicate_event_rows(pl.concat(ids)).collect() if ids else pl.DataFrame(schema=schema)
    if write:
        write_parquet_atomic(copies, cached)
        for old in cached.parent.glob("*.parquet"):
            if old != cached:
                old.unlink()
    return copies


def _first_copies(layout: Layout, rows: pl.LazyFrame) -> pl.LazyFrame:
    copies = event_copies(layout)
    if copies.is_empty():  # the usual case: no anti-join, which would hash every staged row
        return rows
    return rows.join(copies.lazy().select("source_file", "source_line"), on=["source_file", "source_line"], how="anti")


# --- reading staging ------------------------------------------------------------------------------


def scan_staged_call_files(layout: Layout) -> pl.LazyFrame:
    """Every staged llm_call row, later copies of an event included."""
    from schemas.events import StagedLlmCall

    return scan_dir(layout.staged("llm_calls"), StagedLlmCall)


def scan_staged_outcome_files(layout: Layout) -> pl.LazyFrame:
    """Every staged outcome row, later copies of an event included."""
    from schemas.events import StagedOutcome

    return scan_dir(layout.staged("outcomes"), StagedOutcome)


def scan_staged_calls(layout: Layout) -> pl.LazyFrame:
    """Staged llm_call rows, one per event_id (event_copies dropped)."""
    return _first_copies(layout, scan_staged_call_files(layout))


def scan_staged_outcomes(layout: Layout) -> pl.LazyFrame:
    """Staged outcome rows, one per event_id (event_copies dropped)."""
    return _first_copies(layout, scan_staged_outcome_files(layout))
