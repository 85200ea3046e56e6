"""Event files: unitledger's flat events (JSON lines or Parquet, one LLM call or outcome label per
line), OTLP JSON traces and logs, and LLM gateway logs (LiteLLM, OpenRouter, Helicone), all read
into the flat format's text rows (sources.telemetry_rows): the fields read, each row's problems,
typed calls, outcomes and evaluation results or quarantine records; reading and staging a file;
what is derived across files (retries from trace structure, evaluation results -> session
outcomes, events delivered twice); the scans of staged calls and outcomes."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import NamedTuple

import polars as pl

from schemas.types import CALL_STATUSES, ISO_4217, MONEY, OUTCOME_SIGNALS, TIMESTAMP
from unitledger.config import Telemetry
from unitledger.layout import Layout
from unitledger.sources import detect
from unitledger.sources.files import (
    InputFileError,
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
    decimal_problem,
    describe_problems,
    one_of,
    only_for,
    parse_money,
    parse_timestamp,
    parsed_column,
    problem,
    required,
    ts_problem,
    with_problems,
)
from unitledger.model.requests import TOOL_COLUMN, duplicate_event_rows
from unitledger.warehouse.publish import polars_schema, scratch_folder, write_parquet_atomic


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


def _events_problems(telemetry: bool) -> dict[str, list[Problem]]:
    """The rules of every field; `telemetry`: the rows have the telemetry readers' fields too
    (telemetry_rows.TELEMETRY_FIELDS), a flat event file's do not (nor pay for their rules)."""
    is_call = pl.col("event_type") == "llm_call"
    is_outcome = pl.col("event_type") == "outcome"
    # an evaluation result (OTLP): an outcome whose session and verdict come later, from the calls
    # and the settings (derive); what it lacks then is quarantined there
    is_evaluation = (is_outcome & pl.col("evaluation_name").is_not_null()) if telemetry else pl.lit(False)
    is_label = is_outcome & ~is_evaluation
    problems: dict[str, list[Problem]] = {
        "event_type": [one_of("event_type", ("llm_call", "outcome"), "a known event type"), required("event_type")],
        "event_id": [required("event_id")],
        "timestamp": [required("timestamp"), ts_problem("timestamp")],
        "session_id": [problem(~is_evaluation & pl.col("session_id").is_null(), "is required but empty")],
    }
    for name in ("request_id", "feature_tag", "input_tokens", "output_tokens", "status"):
        problems.setdefault(name, []).append(problem(is_call & pl.col(name).is_null(), "is required for llm_call"))
    # an OTLP call may leave its attempt to its trace's structure (derive)
    no_trace = pl.col("trace_id").is_null() if telemetry else pl.lit(True)
    problems["attempt"] = [problem(is_call & pl.col("attempt").is_null() & no_trace, "is required for llm_call")]
    for name in (*TOKEN_FIELDS, *(["reasoning_output_tokens"] if telemetry else [])):
        problems.setdefault(name, []).extend(only_for(is_call, _integer_problems(name, 0, TOKEN_LIMIT)))
    problems["attempt"].extend(only_for(is_call, _integer_problems("attempt", 1)))
    problems["status"].extend(only_for(is_call, [one_of("status", CALL_STATUSES, "ok or error")]))
    for name in ("success", "escalated", "signal"):
        problems[name] = [problem(is_label & pl.col(name).is_null(), "is required for outcome")]
    problems["success"].extend(only_for(is_label, [_bool_problem("success")]))
    problems["escalated"].extend(only_for(is_outcome, [_bool_problem("escalated")]))
    problems["signal"].extend(only_for(is_label, [one_of("signal", OUTCOME_SIGNALS, "explicit or implicit")]))
    if not telemetry:
        return problems
    cost_problem = decimal_problem(pl.col("reported_cost"))
    problems["reported_cost"] = [problem(cost_problem.is_not_null(), cost_problem)]
    problems["reported_currency"] = [
        problem(pl.col("reported_cost").is_not_null() & pl.col("reported_currency").is_null(), "is required with reported_cost"),
        one_of("reported_currency", ISO_4217, "an ISO 4217 currency code"),
    ]
    # a record the reader could not map is quarantined with the reader's reason alone: its other
    # fields are what the mapping could not fill
    mapped = pl.col("problem").is_null()
    return {
        # set by a telemetry reader for a record it cannot map (a line that is no OTLP batch, an id
        # of the wrong length, a call without usage, ...)
        "problem": [problem(~mapped, pl.col("problem"))],
        **{name: [Problem(mapped & p.condition, p.message) for p in ps] for name, ps in problems.items()},
    }


def _has_telemetry_fields(frame: pl.LazyFrame) -> bool:
    return "problem" in frame.collect_schema().names()


def events_problems(raw: pl.LazyFrame) -> pl.LazyFrame:
    """Raw event text rows (one field per column: EVENT_FIELDS, or a telemetry reader's
    telemetry_rows.ROW_FIELDS) with `_bad` and the parsed timestamp and integer fields (hidden)
    added."""
    telemetry = _has_telemetry_fields(raw)
    integers = (*TOKEN_FIELDS, "attempt", *(["reasoning_output_tokens"] if telemetry else []))
    parsed = raw.with_columns(
        **{parsed_column("timestamp"): parse_timestamp(pl.col("timestamp"))},
        **{parsed_column(name): pl.col(name).str.strip_chars().str.to_integer(strict=False) for name in integers},
    )
    return with_problems(parsed, _events_problems(telemetry))


# What a gateway says about who made a call (telemetry_rows.TELEMETRY_FIELDS), staged on calls:
# [[allocation.account_rules]] map them to billing accounts.
ACCOUNT_FIELDS = ("api_key_id", "project_id", "team_id", "end_user_id")

# the staged columns only telemetry readers fill: null for flat events
_CALL_TELEMETRY = {
    "trace_id": pl.String, "span_id": pl.String, "parent_span_id": pl.String, "operation": pl.String, "response_id": pl.String,
    "reasoning_output_tokens": pl.Int64, "reported_cost": MONEY, "reported_currency": pl.String,
    **{name: pl.String for name in ACCOUNT_FIELDS},
}


def llm_calls_typed(checked: pl.LazyFrame) -> pl.LazyFrame:
    """Good `llm_call` rows of `events_problems`, typed as schemas.StagedLlmCall (attempt null
    where an OTLP call left it to its trace's structure)."""
    from schemas.events import StagedLlmCall

    if _has_telemetry_fields(checked):
        telemetry = dict(
            reasoning_output_tokens=pl.col(parsed_column("reasoning_output_tokens")),
            reported_cost=parse_money(pl.col("reported_cost")).struct.field("value"),
            # "" is how exports write an absent key, team or user: no hint
            **{name: pl.col(name).str.strip_chars().replace("", None) for name in ACCOUNT_FIELDS},
        )
    else:
        telemetry = {name: pl.lit(None, dtype) for name, dtype in _CALL_TELEMETRY.items()}
    return (
        checked.filter(~pl.col("_bad") & (pl.col("event_type") == "llm_call"))
        .with_columns(
            timestamp=pl.col(parsed_column("timestamp")),
            attempt=pl.col(parsed_column("attempt")),
            after_tool_call=pl.lit(None, pl.Boolean),  # from the trace's structure: derive
            **telemetry,
            **{name: pl.col(parsed_column(name)).fill_null(0) for name in TOKEN_FIELDS},
        )
        .with_columns(call_date=pl.col("timestamp").dt.date())
        .select(list(StagedLlmCall.to_schema().columns))
    )


def _evaluation_name(checked: pl.LazyFrame) -> pl.Expr:
    return pl.col("evaluation_name") if _has_telemetry_fields(checked) else pl.lit(None, pl.String)


def outcomes_typed(checked: pl.LazyFrame) -> pl.LazyFrame:
    """Good `outcome` rows of `events_problems` that are labels (not evaluation results), typed as
    schemas.StagedOutcome."""
    from schemas.events import StagedOutcome

    return (
        checked.filter(~pl.col("_bad") & (pl.col("event_type") == "outcome") & _evaluation_name(checked).is_null())
        .with_columns(
            timestamp=pl.col(parsed_column("timestamp")),
            success=pl.col("success") == "true",
            escalated=pl.col("escalated") == "true",
            evaluation_name=_evaluation_name(checked),
        )
        .select(list(StagedOutcome.to_schema().columns))
    )


def evaluations_typed(checked: pl.LazyFrame) -> pl.LazyFrame:
    """Good evaluation results (`outcome` rows with evaluation_name) of `events_problems`, typed as
    schemas.StagedEvaluation: they become outcomes once their session is found (derive)."""
    from schemas.events import StagedEvaluation

    return (
        checked.filter(~pl.col("_bad") & (pl.col("event_type") == "outcome") & pl.col("evaluation_name").is_not_null())
        .with_columns(timestamp=pl.col(parsed_column("timestamp")))
        .select(list(StagedEvaluation.to_schema().columns))
    )


def events_quarantine(checked: pl.LazyFrame) -> pl.LazyFrame:
    """Bad rows of `events_problems` as schemas.Quarantine records (known fields only: no content)."""
    telemetry = _has_telemetry_fields(checked)
    column, reason = pl.col("_columns"), pl.col("_reason")
    if telemetry:  # a record its reader could not map: the reader's reason, for the whole record
        unmapped = pl.col("problem").is_not_null()
        column, reason = pl.when(unmapped).then(pl.lit("record")).otherwise(column), pl.when(unmapped).then(pl.col("problem")).otherwise(reason)
    return describe_problems(checked.filter(pl.col("_bad")), _events_problems(telemetry)).select(
        **_quarantine_record(column, reason, pl.struct(EVENT_FIELDS).struct.json_encode())
    )


def _quarantine_record(column: pl.Expr, reason: pl.Expr, raw: pl.Expr) -> dict[str, pl.Expr]:
    """schemas.Quarantine's columns for an event-side row (its billing fields null)."""
    null_text = pl.lit(None, dtype=pl.String)
    return {
        "source": pl.lit("events"), "source_file": pl.col("source_file"), "source_line": pl.col("source_line"),
        "column": column, "reason": reason, "raw": raw,
        "billing_account_id": null_text, "billing_currency": null_text, "billing_period_start": pl.lit(None, dtype=TIMESTAMP),
        "invoice_id": null_text, "service_provider_name": null_text,
        "billed_cost": pl.lit(None, dtype=MONEY), "effective_cost": pl.lit(None, dtype=MONEY),
    }  # fmt: skip


# --- files ----------------------------------------------------------------------------------------


# Landing folders of telemetry in other formats (README "Telemetry formats"): OTLP JSON from the
# Collector's file exporter, gateway exports. A file in landing/events/ is read by its content.
OTLP_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")
GATEWAY_SUFFIXES = (".csv", ".csv.gz", ".json", ".json.gz", ".jsonl", ".jsonl.gz")
GATEWAYS = ("litellm", "openrouter", "helicone")
_DETECTED = {"otlp_traces": "otlp", "otlp_logs": "otlp", "litellm": "litellm", "openrouter": "openrouter", "helicone": "helicone"}


def telemetry_digest(telemetry: Telemetry) -> str:
    """What of the [telemetry] settings changes how a file is read (list prices do not)."""
    return hashlib.sha256(repr(dataclasses.replace(telemetry, list_prices=())).encode()).hexdigest()[:12]


def event_landing_files(layout: Layout, telemetry: Telemetry = Telemetry()) -> list[LandingFile]:
    """Every event landing file, each with its reader: landing/events/ (flat events, or OTLP or a
    gateway export recognized by its first record), landing/otlp/ and landing/gateways/<gateway>/.
    Files of the other folders are named relative to landing/ (`otlp/traces.jsonl`); a file read
    with telemetry settings is staged again when they change."""
    settings = telemetry_digest(telemetry)
    found = []
    for f in list_landing(layout.landing_events, EVENT_SUFFIXES):
        reader = "events"
        if not f.relpath.lower().endswith(".parquet"):
            reader = _DETECTED.get(detect.detect_format(f.path), "events")
        found.append(f if reader == "events" else dataclasses.replace(f, reader=f"{reader}:{settings}"))
    for f in list_landing(layout.landing_otlp, OTLP_SUFFIXES):
        found.append(dataclasses.replace(f, relpath=f"otlp/{f.relpath}", reader=f"otlp:{settings}"))
    for gateway in GATEWAYS:
        for f in list_landing(layout.landing_gateway(gateway), GATEWAY_SUFFIXES):
            found.append(dataclasses.replace(f, relpath=f"gateways/{gateway}/{f.relpath}", reader=f"{gateway}:{settings}"))
    return found


def event_format(f: LandingFile) -> str:
    """The format `f` is read as: events, otlp, litellm, openrouter or helicone."""
    return f.reader.split(":", 1)[0] if f.reader else "events"


def _check_format(f: LandingFile, fmt: str) -> None:
    """A file in a telemetry folder that holds another format is refused, naming what it holds."""
    expected = {"otlp": ("otlp_traces", "otlp_logs"), "events": ("events",)}.get(fmt, (fmt,))
    message = detect.wrong_format_message(f.path, f.relpath, expected)
    if message:
        raise InputFileError(message)


def read_events_raw(f: LandingFile, telemetry: Telemetry = Telemetry()) -> pl.LazyFrame:
    """Every known field as text, plus source_format, source_file and source_line, read with the
    file's format (content fields, prompts and responses, never read): a flat event file's
    EVENT_FIELDS, a telemetry reader's telemetry_rows.ROW_FIELDS."""
    from unitledger.sources import gateways, otlp

    check_readable(f)
    fmt = event_format(f)
    if fmt != "events":
        _check_format(f, fmt)
        read = {
            "otlp": otlp.read_otlp,
            "litellm": gateways.read_litellm_spendlogs,
            "openrouter": gateways.read_openrouter_generations,
            "helicone": gateways.read_helicone_requests,
        }[fmt]
        try:
            return read(f.path, f.relpath, telemetry)
        except gateways.GatewayFileError as exc:
            raise InputFileError(str(exc)) from exc
    if f.relpath.lower().endswith(".parquet"):
        raw = scan_parquet_as_text(f, EVENT_FIELDS)
    else:
        _check_format(f, "events")  # OTLP metrics, say: refused by name, not quarantined line by line
        struct = pl.Struct({name: pl.String for name in EVENT_FIELDS})
        raw = (
            pl.scan_lines(f.path, name="_json", glob=False)
            .with_row_index("source_line", offset=1)
            .filter(pl.col("_json").str.strip_chars() != "")
            .select("source_line", pl.col("_json").str.json_decode(struct).alias("_event"))
            .unnest("_event")
        )
    names = raw.collect_schema().names()
    return raw.select(
        *[pl.col(c) if c in names else pl.lit(None, dtype=pl.String).alias(c) for c in EVENT_FIELDS],
        source_format=pl.lit("events"),
        source_file=pl.lit(f.relpath),
        source_line=pl.col("source_line").cast(pl.Int64),
    )


def _unreadable_otlp(f: LandingFile) -> InputFileError | None:
    from unitledger.sources import otlp

    where = otlp.first_bad_line(f.path)
    return InputFileError(f"{f.relpath}: {where}") if where else None


def event_outputs(layout: Layout, f: LandingFile, raw: pl.LazyFrame | None = None, telemetry: Telemetry = Telemetry()) -> dict[Path, pl.LazyFrame]:
    """What staging one event file (read as `raw`, by default read_events_raw) writes: bad rows,
    outcomes, then for telemetry files (flat events hold none) evaluation results, GenAI
    structure spans (`span` rows: staged/spans, read for a call's place in its trace) and the
    records that are no GenAI call, span or evaluation (`ignored` rows: staged/ignored_records,
    counted), then llm_calls (the marker). Every row of `raw` lands in one output."""
    raw = read_events_raw(f, telemetry) if raw is None else raw
    checked = events_problems(staged_rows(raw))
    quarantine = {layout.quarantine("events") / f"{f.file_id}.parquet": events_quarantine(checked)}
    calls = {layout.staged("llm_calls") / f"{f.file_id}.parquet": llm_calls_typed(checked)}
    outcomes = {layout.staged("outcomes") / f"{f.file_id}.parquet": outcomes_typed(checked)}
    if event_format(f) == "events":
        return {**quarantine, **outcomes, **calls}
    evaluations = {layout.staged("evaluations") / f"{f.file_id}.parquet": evaluations_typed(checked)}
    spans = {layout.staged("spans") / f"{f.file_id}.parquet": spans_typed(raw)}
    ignored = {layout.staged("ignored_records") / f"{f.file_id}.parquet": ignored_records(raw)}
    deduplicated = {path: once_per_record(rows) for path, rows in {**outcomes, **evaluations, **spans, **calls}.items()}
    return {**quarantine, **ignored, **deduplicated}  # llm_calls last: the marker


def _unmapped(raw: pl.LazyFrame, event_type: str) -> pl.Expr:
    return (pl.col("event_type") == event_type) & pl.col("problem").is_null()


def spans_typed(raw: pl.LazyFrame) -> pl.LazyFrame:
    """A telemetry reader's structure spans (`span` rows it could map), typed as schemas.StagedSpan."""
    from schemas.events import StagedSpan

    return (
        raw.filter(_unmapped(raw, "span"))
        .with_columns(timestamp=parse_timestamp(pl.col("timestamp")))
        .select(list(StagedSpan.to_schema().columns))
    )


def ignored_records(raw: pl.LazyFrame) -> pl.LazyFrame:
    """A telemetry reader's `ignored` rows (no GenAI call, span or evaluation), as schemas.IgnoredRecord."""
    from schemas.events import IgnoredRecord

    return raw.filter(_unmapped(raw, "ignored")).select(list(IgnoredRecord.to_schema().columns))


def once_per_record(rows: pl.LazyFrame) -> pl.LazyFrame:
    """`rows` with a record repeated within one line kept once. An OTLP batch line holds many
    records: (file, line, event_id) is what tells a staged row from another (events delivered
    twice, inferred attempts)."""
    return rows.unique(["source_file", "source_line", "event_id"], keep="first", maintain_order=True)


def staged_rows(raw: pl.LazyFrame) -> pl.LazyFrame:
    """The rows of a file that go through the event rules (events_problems), good or bad: all but a
    telemetry reader's mapped structure spans and ignored records, which have outputs of their own
    (spans_typed, ignored_records; a flat event saying `span` is a bad event type)."""
    if not _has_telemetry_fields(raw):
        return raw
    not_kept = pl.col("event_type").is_in(["span", "ignored"]) & pl.col("problem").is_null()
    return raw.filter(~not_kept.fill_null(False))


def stage_events(layout: Layout, telemetry: Telemetry = Telemetry()) -> StagingReport:
    """Stage every event landing file not staged yet into staged/llm_calls, staged/outcomes and
    staged/evaluations; then derive what needs every file (events delivered twice, retries,
    evaluation outcomes)."""
    files = event_landing_files(layout, telemetry)
    calls, outcomes, quarantine = layout.staged("llm_calls"), layout.staged("outcomes"), layout.quarantine("events")
    evaluations, spans, ignored = layout.staged("evaluations"), layout.staged("spans"), layout.staged("ignored_records")
    report = StagingReport()

    def stage_one(f: LandingFile) -> None:
        with scratch_folder(layout.tmp, "staging") as folder:
            try:
                raw = decoded(folder, f, lambda g: read_events_raw(g, telemetry))
            except InputFileError:
                located = _unreadable_otlp(f) if event_format(f) == "otlp" else None
                if located is None:
                    raise
                raise located from None
            # every row of the file, in one output each (event_outputs): a file of non-GenAI spans only is staged, not empty
            stage_file(event_outputs(layout, f, raw, telemetry), f, calls / f"{f.file_id}.parquet", raw, folder)

    sync_staging(files, calls, [calls, outcomes, evaluations, quarantine, spans, ignored], stage_one, report)
    copies = event_copies(layout, write=True)
    derived = derive_telemetry(layout, telemetry)
    report.rows["llm_calls"] = total_rows(calls) - copies.filter(pl.col("event_type") == "llm_call").height
    report.rows["outcomes"] = total_rows(outcomes) - copies.filter(pl.col("event_type") == "outcome").height + derived.outcomes
    report.rows["evaluations"] = total_rows(evaluations)
    report.rows["spans"] = total_rows(spans)
    report.rows["ignored_records"] = total_rows(ignored)
    report.duplicate_events = copies.height
    report.quarantined_rows = total_rows(quarantine) + derived.unresolved
    return report


class FileRows(NamedTuple):
    """What staging made of one event landing file's rows."""

    file_id: str
    source_format: str  # events, otlp, litellm, openrouter, helicone
    kept: int  # calls, outcome labels, evaluation results, structure spans
    quarantined: int
    ignored: int  # records of a telemetry file that are no GenAI call, span or evaluation


def rows_by_file(layout: Layout, telemetry: Telemetry = Telemetry()) -> dict[str, FileRows]:
    """FileRows per staged event landing file (by name). Evaluation results quarantined later,
    for want of a call, count as kept here (the file itself held a good record)."""
    kept_dirs = [layout.staged(d) for d in ("llm_calls", "outcomes", "evaluations", "spans")]

    def rows(path: Path) -> int:
        return _row_count_of(path) if path.exists() else 0

    counts = {}
    for f in event_landing_files(layout, telemetry):
        name = f"{f.file_id}.parquet"
        counts[f.relpath] = FileRows(
            f.file_id, event_format(f), sum(rows(d / name) for d in kept_dirs), rows(layout.quarantine("events") / name), rows(layout.staged("ignored_records") / name)
        )
    return counts


def first_quarantined(layout: Layout, file_id: str) -> tuple[int, str, str]:
    """(line, column, reason) of the first quarantined row of the staged event file `file_id`."""
    path = layout.quarantine("events") / f"{file_id}.parquet"
    first = pl.scan_parquet(path, glob=False).sort("source_line").select("source_line", "column", "reason").head(1).collect()
    return first.row(0)


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
    # (file, line, event id): the records of one OTLP batch line share file and line
    key = ["source_file", "source_line", "event_id"]
    return rows.join(copies.lazy().select(key), on=key, how="anti")


# --- derived across files: retries, evaluation outcomes ----------------------------------------


class DerivedTelemetry(NamedTuple):
    outcomes: int  # evaluation results that became session outcomes
    unresolved: int  # evaluation results quarantined (no session found, no verdict)


def _derived_files(layout: Layout) -> dict[str, Path]:
    return {
        "attempts": layout.staged("derived_attempts"),
        "tools": layout.staged("derived_tools"),
        "outcomes": layout.staged("derived_outcomes"),
        "unresolved": layout.quarantine("evaluations"),
    }


class Derived(NamedTuple):
    attempts: pl.LazyFrame  # source_file, source_line, event_id, attempt
    tools: pl.LazyFrame  # source_file, source_line, event_id, after_tool_call
    outcomes: pl.LazyFrame  # schemas.StagedOutcome
    unresolved: pl.LazyFrame  # schemas.Quarantine records


def derive(
    calls: pl.LazyFrame, labels: pl.LazyFrame, evaluations: pl.LazyFrame | None, telemetry: Telemetry, spans: pl.LazyFrame | None = None
) -> Derived:
    """What needs the staged rows of every file (pure): `calls` staged llm_calls (first copies),
    `labels` staged outcome labels (first copies), `evaluations` staged evaluation results (None:
    there are none, and the calls need not be indexed to find their sessions), `spans` staged
    structure spans (schemas.StagedSpan; None: there are none).

    - attempts: model.telemetry.infer_attempts over the calls that left their attempt to their
      trace's structure (OTLP); with_derived fills them in;
    - tools: model.telemetry.after_tool_calls of the calls with a trace; with_derived fills
      after_tool_call in;
    - outcomes: model.telemetry.evaluation_outcomes of the evaluation results (an event id seen
      twice counts once, its first copy by file and line), labels winning for their sessions;
    - unresolved: the evaluation results that found no session or verdict, as quarantine records."""
    from schemas.events import StagedEvaluation, StagedOutcome, StagedSpan
    from unitledger.model.telemetry import after_tool_calls, evaluation_outcomes, infer_attempts
    from unitledger.sources.otlp import SOURCE_FORMAT as OTLP

    attempts = infer_attempts(
        calls.filter(pl.col("attempt").is_null()).select(
            "source_file", "source_line", "event_id", "trace_id", "span_id", "parent_span_id", "operation", "timestamp", "status", "attempt"
        )
    ).select("source_file", "source_line", "event_id", "attempt")
    spans = pl.DataFrame(schema=polars_schema(StagedSpan)).lazy() if spans is None else spans
    tools = after_tool_calls(
        calls.select("source_file", "source_line", "event_id", "trace_id", "span_id", "parent_span_id", "timestamp", "operation"),
        spans.sort("source_file", "source_line").unique("event_id", keep="first", maintain_order=True),
    )
    if evaluations is None:
        evaluations = pl.DataFrame(schema=polars_schema(StagedEvaluation)).lazy()
        calls = calls.clear()
    evaluations = evaluations.sort("source_file", "source_line").unique("event_id", keep="first", maintain_order=True)
    found = evaluation_outcomes(evaluations, calls, telemetry, explicit_sessions=labels)
    outcomes = found.outcomes.with_columns(source_format=pl.lit(OTLP)).select(list(StagedOutcome.to_schema().columns))
    unresolved = found.unresolved.select(
        **_quarantine_record(pl.lit("evaluation_name"), pl.col("reason"), pl.struct(list(StagedEvaluation.to_schema().columns)).struct.json_encode())
    )
    return Derived(attempts, tools, outcomes, unresolved)


def with_derived(calls: pl.LazyFrame, attempts: pl.LazyFrame | None, tools: pl.LazyFrame | None) -> pl.LazyFrame:
    """`calls` with what `derive` found filled in where they left it null: the inferred attempts
    (`attempts`) and after_tool_call, true for the calls of `tools`, false for the other calls
    with a trace, null without one; None: nothing of that kind found."""
    key = ["source_file", "source_line", "event_id"]  # the records of one OTLP batch line share file and line
    for found, column in ((attempts, "attempt"), (tools, TOOL_COLUMN)):
        if found is not None:
            calls = (
                calls.join(found.rename({column: "_found"}), on=key, how="left")
                .with_columns(pl.coalesce(column, "_found").alias(column))
                .drop("_found")
            )
    traced = pl.col("trace_id").is_not_null() & pl.col("span_id").is_not_null()
    return calls.with_columns(pl.coalesce(TOOL_COLUMN, pl.when(traced).then(pl.lit(False))).alias(TOOL_COLUMN))


def derive_telemetry(layout: Layout, telemetry: Telemetry) -> DerivedTelemetry:
    """`derive` over everything staged, computed once per set of staged files and settings and kept
    in one file per kind (a retry may land in another file than its first attempt, an evaluation
    log in another file than the spans it judges); scan_staged_calls and scan_staged_outcomes read
    them, the quarantine table publishes the unresolved."""
    from schemas.events import StagedEvaluation, StagedSpan

    folders = _derived_files(layout)
    staged = [f"{d}/{p.name}" for d in ("llm_calls", "outcomes", "evaluations", "spans") for p in sorted(layout.staged(d).glob("*.parquet"))]
    digest = hashlib.sha256("\0".join([telemetry_digest(telemetry), *staged]).encode()).hexdigest()[:24]
    targets = {kind: folder / f"{digest}.parquet" for kind, folder in folders.items()}
    if not all(p.exists() for p in targets.values()):
        evaluations = layout.staged("evaluations")
        derived = derive(
            _first_copies(layout, scan_staged_call_files(layout)),
            _first_copies(layout, scan_staged_outcome_files(layout)),
            scan_dir(evaluations, StagedEvaluation) if total_rows(evaluations) else None,
            telemetry,
            scan_dir(layout.staged("spans"), StagedSpan) if total_rows(layout.staged("spans")) else None,
        )
        for kind in targets:
            write_parquet_atomic(getattr(derived, kind).collect(), targets[kind])
    for kind, target in targets.items():
        for old in folders[kind].glob("*.parquet"):
            if old != target:
                old.unlink()
    return DerivedTelemetry(_row_count_of(targets["outcomes"]), _row_count_of(targets["unresolved"]))


def _row_count_of(path: Path) -> int:
    return pl.scan_parquet(path, glob=False).select(pl.len()).collect().item()


def _derived(layout: Layout, kind: str) -> Path | None:
    """The derived file of `kind` staging left (derive_telemetry), when it has rows."""
    found = sorted(_derived_files(layout)[kind].glob("*.parquet"))
    return found[0] if found and _row_count_of(found[0]) else None


# --- reading staging ------------------------------------------------------------------------------


def scan_staged_call_files(layout: Layout) -> pl.LazyFrame:
    """Every staged llm_call row, later copies of an event included; attempt null where an OTLP
    call left it to its trace's structure."""
    from schemas.events import StagedLlmCall

    return scan_dir(layout.staged("llm_calls"), StagedLlmCall)


def scan_staged_outcome_files(layout: Layout) -> pl.LazyFrame:
    """Every staged outcome label row, later copies of an event included."""
    from schemas.events import StagedOutcome

    return scan_dir(layout.staged("outcomes"), StagedOutcome)


def scan_staged_calls(layout: Layout) -> pl.LazyFrame:
    """Staged llm_call rows, one per event_id (event_copies dropped), attempts inferred from trace
    structure filled in."""
    calls = _first_copies(layout, scan_staged_call_files(layout))
    # nothing derived (a flat day; OTLP calls stating their attempts and following no tool): no join
    found = {kind: None if (path := _derived(layout, kind)) is None else pl.scan_parquet(path, glob=False) for kind in ("attempts", "tools")}
    return with_derived(calls, found["attempts"], found["tools"])


def scan_staged_outcomes(layout: Layout) -> pl.LazyFrame:
    """Staged outcome rows, one per event_id (event_copies dropped), plus the session outcomes
    derived from evaluation results."""
    labels = _first_copies(layout, scan_staged_outcome_files(layout))
    derived = _derived(layout, "outcomes")
    return labels if derived is None else pl.concat([labels, pl.scan_parquet(derived, glob=False)])
