"""Pure parsing transforms: raw landing rows (text) in, typed rows plus per-row errors out.

Every function here takes and returns Polars LazyFrames or expressions: no I/O, no Dagster.
A row that fails any check is not dropped: `focus_quarantine` / `events_quarantine` turn it into
a quarantine record naming the columns and the reasons.
"""

from __future__ import annotations

from typing import NamedTuple

import polars as pl

from schemas.types import (
    CALL_STATUSES,
    CHARGE_CATEGORIES,
    CHARGE_CLASSES,
    ISO_4217,
    MONEY,
    OUTCOME_SIGNALS,
    TIMESTAMP,
)

# Columns the pipeline reads from a FOCUS export. Mandatory ones must be present in every file
# (ServiceProviderName may come as FOCUS 1.0-1.2 ProviderName); optional ones become null.
FOCUS_MANDATORY = (
    "BilledCost",
    "EffectiveCost",
    "ListCost",
    "BillingAccountId",
    "BillingCurrency",
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargeCategory",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ServiceProviderName",
)
FOCUS_OPTIONAL = (
    "BillingAccountName",
    "ChargeClass",
    "ChargeDescription",
    "ContractedCost",
    "ConsumedQuantity",
    "ConsumedUnit",
    "InvoiceId",
    "InvoiceIssuerName",
    "ServiceName",
    "SkuId",
    "SkuMeter",
    "x_RequestId",
    "x_ModelVersion",
    "x_PromptVersion",
    "x_FeatureTag",
)
FOCUS_COLUMNS = FOCUS_MANDATORY + FOCUS_OPTIONAL
# Older FOCUS versions' names for columns 1.3 renamed.
FOCUS_LEGACY_NAMES = {"ServiceProviderName": "ProviderName"}

FOCUS_MONEY_COLUMNS = ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "ConsumedQuantity")
FOCUS_TIMESTAMP_COLUMNS = ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd")

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

_EXTRA_SCALE = 24  # parse again at a finer scale to detect digits that MONEY would cut off
# Timestamp shapes Polars parses on its fixed-width fast path, by byte length: FOCUS exports
# ("...T10:00:00Z"), event timestamps with microseconds, and naive "YYYY-MM-DD HH:MM:SS".
_FIXED_WIDTH_TIMESTAMPS = {20: "%Y-%m-%dT%H:%M:%SZ", 27: "%Y-%m-%dT%H:%M:%S.%6fZ", 19: "%Y-%m-%d %H:%M:%S"}


class Problem(NamedTuple):
    """One way a row can be wrong. `condition` (a Boolean, never null) is evaluated on every row;
    `message` only on the rows that failed, when their quarantine record is written."""

    condition: pl.Expr
    message: pl.Expr


def parse_decimal(text: pl.Expr) -> pl.Expr:
    """Exact decimal from text (plain or E-notation), never through float; null if it is not a number."""
    return text.str.strip_chars().str.to_decimal(scale=MONEY.scale)


_MONEY_PARTS = pl.Struct({"value": MONEY, "too_precise": pl.Boolean})


def _money(text: pl.Expr) -> pl.Expr:
    """Struct of `value` (= parse_decimal) and `too_precise` (digits MONEY's scale would cut off)."""
    return text.map_batches(_money_batch, return_dtype=_MONEY_PARTS, is_elementwise=True)


def _money_batch(texts: pl.Series) -> pl.Series:
    # One parse at the finer scale gives both parts when every value fits it exactly, unpadded
    # (the common case); any other batch takes the general route: two parses of the stripped text.
    finer_type = pl.Decimal(38, _EXTRA_SCALE)
    frame = texts.cast(pl.String).to_frame("text").with_columns(finer=pl.col("text").str.to_decimal(scale=_EXTRA_SCALE))
    frame = frame.with_columns(value=pl.col("finer").cast(MONEY, strict=False))
    if frame["finer"].null_count() > frame["text"].null_count() or (frame["value"].cast(finer_type, strict=False) != frame["finer"]).any():
        stripped = pl.col("text").str.strip_chars()
        frame = frame.with_columns(finer=stripped.str.to_decimal(scale=_EXTRA_SCALE), value=stripped.str.to_decimal(scale=MONEY.scale))
    # strict=False: a value with more than 14 integer digits does not fit the finer type (nor `finer`).
    too_precise = pl.col("text").is_not_null() & pl.col("finer").is_not_null() & (pl.col("finer") != pl.col("value").cast(finer_type, strict=False))
    return frame.select(pl.struct("value", too_precise.alias("too_precise")).alias(texts.name)).to_series()


def _decimal_problems(text: pl.Expr, money: pl.Expr) -> list[Problem]:
    """Problems of a money cell `text` whose `_money` is `money` (passed in: parsed once)."""
    unparsed = text.is_not_null() & money.struct.field("value").is_null()
    return [
        _problem(unparsed, pl.lit("is not a decimal number: ") + text.str.slice(0, 40)),
        _problem(~unparsed & money.struct.field("too_precise"), pl.lit(f"has more than {MONEY.scale} decimal places: ") + text.str.slice(0, 40)),
    ]


def decimal_problem(text: pl.Expr) -> pl.Expr:
    """Message for a non-null cell that is not an exact decimal at MONEY's scale, else null."""
    first, *rest = _decimal_problems(text, _money(text))
    message = pl.when(first.condition).then(first.message)
    for problem in rest:
        message = message.when(problem.condition).then(problem.message)
    return message


def parse_timestamp(text: pl.Expr) -> pl.Expr:
    """UTC timestamp from ISO 8601 / RFC 3339 text, also `YYYY-MM-DD HH:MM:SS` and bare dates.

    Naive values are taken as UTC (FOCUS says date/times are UTC); offsets are converted.
    """
    return text.map_batches(_parse_timestamps, return_dtype=TIMESTAMP, is_elementwise=True)


def _parse_timestamps(texts: pl.Series) -> pl.Series:
    # The general route (three formats and a regex) costs several times the fixed-width one, and
    # Polars evaluates every branch of an expression on every row: so a batch takes it only when
    # some value did not parse on the fast route.
    frame = texts.cast(pl.String).to_frame("text").with_columns(fast=_fixed_width_timestamp(pl.col("text")))
    if frame["fast"].null_count() > frame["text"].null_count():
        frame = frame.with_columns(fast=pl.coalesce("fast", _general_timestamp(pl.col("text"))))
    return frame["fast"].alias(texts.name)


def _fixed_width_timestamp(text: pl.Expr) -> pl.Expr:
    width = text.str.len_bytes()
    shapes = [
        pl.when(width == length).then(text).str.to_datetime(shape, strict=False, time_unit="us")
        for length, shape in _FIXED_WIDTH_TIMESTAMPS.items()
    ]
    return pl.coalesce(shapes).dt.replace_time_zone("UTC")


def _general_timestamp(text: pl.Expr) -> pl.Expr:
    norm = text.str.strip_chars().str.replace("T", " ", literal=True)
    aware = norm.str.replace(r"[Zz]$", "+00:00").str.to_datetime(
        "%Y-%m-%d %H:%M:%S%.f%:z", strict=False, time_unit="us", time_zone="UTC"
    )
    naive = norm.str.to_datetime("%Y-%m-%d %H:%M:%S%.f", strict=False, time_unit="us").dt.replace_time_zone("UTC")
    date_only = norm.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    return pl.coalesce(aware, naive, date_only)


def _parsed(name: str) -> str:
    """Hidden column holding `name` parsed: each cell is parsed once, for the checks and the output."""
    return f"_parsed_{name}"


def _problem(condition: pl.Expr, message: pl.Expr | str) -> Problem:
    return Problem(condition.fill_null(False), message if isinstance(message, pl.Expr) else pl.lit(message))


def _only_for(rows: pl.Expr, problems: list[Problem]) -> list[Problem]:
    """`problems` that apply only to `rows` (e.g. llm_call events)."""
    return [Problem((rows & p.condition).fill_null(False), p.message) for p in problems]


def _required(name: str) -> Problem:
    return _problem(pl.col(name).is_null(), "is required but empty")


def _one_of(name: str, allowed: tuple[str, ...] | frozenset[str], what: str) -> Problem:
    return _problem(
        pl.col(name).is_not_null() & ~pl.col(name).is_in(sorted(allowed)),
        pl.lit(f"is not {what}: ") + pl.col(name).str.slice(0, 40),
    )


def _ts_problem(name: str) -> Problem:
    return _problem(
        pl.col(name).is_not_null() & pl.col(_parsed(name)).is_null(),
        pl.lit("is not a timestamp: ") + pl.col(name).str.slice(0, 40),
    )


def _with_problems(parsed: pl.LazyFrame, problems: dict[str, list[Problem]]) -> pl.LazyFrame:
    """Add `_bad`: whether the row has any problem (conditions only: see `_describe_problems`)."""
    return parsed.with_columns(_bad=pl.any_horizontal([p.condition for ps in problems.values() for p in ps]))


def _describe_problems(bad: pl.LazyFrame, problems: dict[str, list[Problem]]) -> pl.LazyFrame:
    """Add `_columns` and `_reason` describing every problem of the (bad) rows."""
    flat = [(col, p) for col, ps in problems.items() for p in ps]
    messages = [pl.when(p.condition).then(pl.lit(f"{col} ") + p.message) for col, p in flat]
    columns = [pl.when(p.condition).then(pl.lit(col)) for col, p in flat]
    return bad.with_columns(
        _reason=pl.concat_list(messages).list.drop_nulls().list.join("; "),
        _columns=pl.concat_list(columns).list.drop_nulls().list.unique(maintain_order=True).list.join(","),
    )


def _focus_problems() -> dict[str, list[Problem]]:
    problems: dict[str, list[Problem]] = {}
    for name in FOCUS_MANDATORY:
        problems.setdefault(name, []).append(_required(name))
    for name in FOCUS_MONEY_COLUMNS:
        problems.setdefault(name, []).extend(_decimal_problems(pl.col(name), pl.col(_parsed(name))))
    for name in FOCUS_TIMESTAMP_COLUMNS:
        problems[name].append(_ts_problem(name))
    problems["ChargeCategory"].append(_one_of("ChargeCategory", CHARGE_CATEGORIES, "a FOCUS ChargeCategory"))
    problems.setdefault("ChargeClass", []).append(_one_of("ChargeClass", CHARGE_CLASSES, "a FOCUS ChargeClass"))
    problems["BillingCurrency"].append(_one_of("BillingCurrency", ISO_4217, "an ISO 4217 currency code"))
    for start, end in (("ChargePeriodStart", "ChargePeriodEnd"), ("BillingPeriodStart", "BillingPeriodEnd")):
        problems[start].append(_problem(pl.col(_parsed(start)) >= pl.col(_parsed(end)), f"is not before {end}"))
    return problems


def focus_problems(raw: pl.LazyFrame) -> pl.LazyFrame:
    """Raw FOCUS text rows with `_bad` and the parsed money (`_money`) and timestamp columns
    (hidden) added."""
    parsed = raw.with_columns(
        **{_parsed(name): _money(pl.col(name)) for name in FOCUS_MONEY_COLUMNS},
        **{_parsed(name): parse_timestamp(pl.col(name)) for name in FOCUS_TIMESTAMP_COLUMNS},
    )
    return _with_problems(parsed, _focus_problems())


def focus_typed(checked: pl.LazyFrame) -> pl.LazyFrame:
    """The good rows of `focus_problems`, typed as schemas.StagedFocus."""
    from schemas.focus import StagedFocus

    typed = {name: pl.col(_parsed(name)).struct.field("value") for name in FOCUS_MONEY_COLUMNS}
    typed |= {name: pl.col(_parsed(name)) for name in FOCUS_TIMESTAMP_COLUMNS}
    return (
        checked.filter(~pl.col("_bad"))
        .with_columns(**typed)
        .with_columns(charge_date=pl.col("ChargePeriodStart").dt.date())
        .select(list(StagedFocus.to_schema().columns))
    )


def focus_quarantine(checked: pl.LazyFrame) -> pl.LazyFrame:
    """The bad rows of `focus_problems` as schemas.Quarantine records; their cost is kept when it parses."""
    return _describe_problems(checked.filter(pl.col("_bad")), _focus_problems()).select(
        source=pl.lit("focus"),
        source_file=pl.col("source_file"),
        source_line=pl.col("source_line"),
        column=pl.col("_columns"),
        reason=pl.col("_reason"),
        raw=pl.struct(FOCUS_COLUMNS).struct.json_encode(),
        billing_account_id=pl.col("BillingAccountId"),
        billing_currency=pl.col("BillingCurrency"),
        billing_period_start=pl.col(_parsed("BillingPeriodStart")),
        invoice_id=pl.col("InvoiceId"),
        service_provider_name=pl.col("ServiceProviderName"),
        billed_cost=pl.col(_parsed("BilledCost")).struct.field("value"),
        effective_cost=pl.col(_parsed("EffectiveCost")).struct.field("value"),
    )


def _integer_problems(name: str, minimum: int) -> list[Problem]:
    value = pl.col(_parsed(name))
    unparsed = pl.col(name).is_not_null() & value.is_null()
    return [
        _problem(unparsed, pl.lit("is not an integer: ") + pl.col(name).str.slice(0, 40)),
        _problem(~unparsed & (value < minimum), pl.lit(f"is below {minimum}: ") + pl.col(name).str.slice(0, 40)),
    ]


def _bool_problem(name: str) -> Problem:
    return _one_of(name, ("true", "false"), "true or false")


def _events_problems() -> dict[str, list[Problem]]:
    is_call = pl.col("event_type") == "llm_call"
    is_outcome = pl.col("event_type") == "outcome"
    problems: dict[str, list[Problem]] = {
        "event_type": [_one_of("event_type", ("llm_call", "outcome"), "a known event type"), _required("event_type")],
        "event_id": [_required("event_id")],
        "timestamp": [_required("timestamp"), _ts_problem("timestamp")],
        "session_id": [_required("session_id")],
    }
    for name in ("request_id", "feature_tag", "input_tokens", "output_tokens", "attempt", "status"):
        problems.setdefault(name, []).append(_problem(is_call & pl.col(name).is_null(), "is required for llm_call"))
    for name in TOKEN_FIELDS:
        problems.setdefault(name, []).extend(_only_for(is_call, _integer_problems(name, 0)))
    problems["attempt"].extend(_only_for(is_call, _integer_problems("attempt", 1)))
    problems["status"].extend(_only_for(is_call, [_one_of("status", CALL_STATUSES, "ok or error")]))
    for name in ("success", "escalated", "signal"):
        problems[name] = [_problem(is_outcome & pl.col(name).is_null(), "is required for outcome")]
    problems["success"].extend(_only_for(is_outcome, [_bool_problem("success")]))
    problems["escalated"].extend(_only_for(is_outcome, [_bool_problem("escalated")]))
    problems["signal"].extend(_only_for(is_outcome, [_one_of("signal", OUTCOME_SIGNALS, "explicit or implicit")]))
    return problems


def events_problems(raw: pl.LazyFrame) -> pl.LazyFrame:
    """Raw event text rows (one field per column) with `_bad` and the parsed timestamp and integer
    fields (hidden) added."""
    parsed = raw.with_columns(
        **{_parsed("timestamp"): parse_timestamp(pl.col("timestamp"))},
        **{_parsed(name): pl.col(name).str.strip_chars().str.to_integer(strict=False) for name in (*TOKEN_FIELDS, "attempt")},
    )
    return _with_problems(parsed, _events_problems())


def llm_calls_typed(checked: pl.LazyFrame) -> pl.LazyFrame:
    """Good `llm_call` rows of `events_problems`, typed as schemas.StagedLlmCall."""
    from schemas.events import StagedLlmCall

    return (
        checked.filter(~pl.col("_bad") & (pl.col("event_type") == "llm_call"))
        .with_columns(
            timestamp=pl.col(_parsed("timestamp")),
            attempt=pl.col(_parsed("attempt")),
            **{name: pl.col(_parsed(name)).fill_null(0) for name in TOKEN_FIELDS},
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
            timestamp=pl.col(_parsed("timestamp")),
            success=pl.col("success") == "true",
            escalated=pl.col("escalated") == "true",
        )
        .select(list(StagedOutcome.to_schema().columns))
    )


def events_quarantine(checked: pl.LazyFrame) -> pl.LazyFrame:
    """Bad rows of `events_problems` as schemas.Quarantine records (known fields only: no content)."""
    null_text = pl.lit(None, dtype=pl.String)
    return _describe_problems(checked.filter(pl.col("_bad")), _events_problems()).select(
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
