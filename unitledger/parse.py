"""Pure parsing transforms: raw landing rows (text) in, typed rows plus per-row errors out.

Every function here takes and returns Polars LazyFrames or expressions: no I/O, no Dagster.
A row that fails any check is not dropped: `focus_quarantine` / `events_quarantine` turn it into
a quarantine record naming the columns and the reasons.
"""

from __future__ import annotations

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


def parse_decimal(text: pl.Expr) -> pl.Expr:
    """Exact decimal from text (plain or E-notation), never through float; null if it is not a number."""
    return text.str.strip_chars().str.to_decimal(scale=MONEY.scale)


def decimal_problem(text: pl.Expr) -> pl.Expr:
    """Message for a non-null cell that is not an exact decimal at MONEY's scale, else null."""
    stripped = text.str.strip_chars()
    value = stripped.str.to_decimal(scale=MONEY.scale)
    finer = stripped.str.to_decimal(scale=_EXTRA_SCALE)
    too_precise = finer.is_not_null() & (finer != value.cast(pl.Decimal(38, _EXTRA_SCALE)))
    return (
        pl.when(text.is_not_null() & value.is_null())
        .then(pl.lit("is not a decimal number: ") + text.str.slice(0, 40))
        .when(text.is_not_null() & too_precise)
        .then(pl.lit(f"has more than {MONEY.scale} decimal places: ") + text.str.slice(0, 40))
    )


def parse_timestamp(text: pl.Expr) -> pl.Expr:
    """UTC timestamp from ISO 8601 / RFC 3339 text, also `YYYY-MM-DD HH:MM:SS` and bare dates.

    Naive values are taken as UTC (FOCUS says date/times are UTC); offsets are converted.
    """
    norm = text.str.strip_chars().str.replace("T", " ", literal=True)
    aware = norm.str.replace(r"[Zz]$", "+00:00").str.to_datetime(
        "%Y-%m-%d %H:%M:%S%.f%:z", strict=False, time_unit="us", time_zone="UTC"
    )
    naive = norm.str.to_datetime("%Y-%m-%d %H:%M:%S%.f", strict=False, time_unit="us").dt.replace_time_zone("UTC")
    date_only = norm.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    return pl.coalesce(aware, naive, date_only)


def _problem(condition: pl.Expr, message: pl.Expr | str) -> pl.Expr:
    return pl.when(condition).then(message if isinstance(message, pl.Expr) else pl.lit(message))


def _required(name: str) -> pl.Expr:
    return _problem(pl.col(name).is_null(), "is required but empty")


def _one_of(name: str, allowed: tuple[str, ...] | frozenset[str], what: str) -> pl.Expr:
    return _problem(
        pl.col(name).is_not_null() & ~pl.col(name).is_in(sorted(allowed)),
        pl.lit(f"is not {what}: ") + pl.col(name).str.slice(0, 40),
    )


def _ts_problem(name: str) -> pl.Expr:
    return _problem(
        pl.col(name).is_not_null() & parse_timestamp(pl.col(name)).is_null(),
        pl.lit("is not a timestamp: ") + pl.col(name).str.slice(0, 40),
    )


def _with_problems(raw: pl.LazyFrame, problems: dict[str, list[pl.Expr]]) -> pl.LazyFrame:
    """Add `_bad` (any problem) and, lazily, `_columns` / `_reason` describing every problem."""
    flat = [(col, expr) for col, exprs in problems.items() for expr in exprs]
    messages = [(pl.lit(f"{col} ") + expr) for col, expr in flat]
    columns = [pl.when(expr.is_not_null()).then(pl.lit(col)) for col, expr in flat]
    return raw.with_columns(
        _bad=pl.any_horizontal([expr.is_not_null() for _, expr in flat]),
        _reason=pl.concat_list(messages).list.drop_nulls().list.join("; "),
        _columns=pl.concat_list(columns).list.drop_nulls().list.unique(maintain_order=True).list.join(","),
    )


def focus_problems(raw: pl.LazyFrame) -> pl.LazyFrame:
    """Raw FOCUS text rows with `_bad`, `_columns` and `_reason` added."""
    problems: dict[str, list[pl.Expr]] = {}
    for name in FOCUS_MANDATORY:
        problems.setdefault(name, []).append(_required(name))
    for name in FOCUS_MONEY_COLUMNS:
        problems.setdefault(name, []).append(decimal_problem(pl.col(name)))
    for name in FOCUS_TIMESTAMP_COLUMNS:
        problems[name].append(_ts_problem(name))
    problems["ChargeCategory"].append(_one_of("ChargeCategory", CHARGE_CATEGORIES, "a FOCUS ChargeCategory"))
    problems.setdefault("ChargeClass", []).append(_one_of("ChargeClass", CHARGE_CLASSES, "a FOCUS ChargeClass"))
    problems["BillingCurrency"].append(_one_of("BillingCurrency", ISO_4217, "an ISO 4217 currency code"))
    for start, end in (("ChargePeriodStart", "ChargePeriodEnd"), ("BillingPeriodStart", "BillingPeriodEnd")):
        problems[start].append(
            _problem(
                parse_timestamp(pl.col(start)) >= parse_timestamp(pl.col(end)),
                f"is not before {end}",
            )
        )
    return _with_problems(raw, problems)


def focus_typed(checked: pl.LazyFrame) -> pl.LazyFrame:
    """The good rows of `focus_problems`, typed as schemas.StagedFocus."""
    casts = {name: parse_decimal(pl.col(name)) for name in FOCUS_MONEY_COLUMNS}
    casts |= {name: parse_timestamp(pl.col(name)) for name in FOCUS_TIMESTAMP_COLUMNS}
    from schemas.focus import StagedFocus

    return (
        checked.filter(~pl.col("_bad"))
        .with_columns(**casts)
        .with_columns(charge_date=pl.col("ChargePeriodStart").dt.date())
        .select(list(StagedFocus.to_schema().columns))
    )


def focus_quarantine(checked: pl.LazyFrame) -> pl.LazyFrame:
    """The bad rows of `focus_problems` as schemas.Quarantine records; their cost is kept when it parses."""
    return checked.filter(pl.col("_bad")).select(
        source=pl.lit("focus"),
        source_file=pl.col("source_file"),
        source_line=pl.col("source_line"),
        column=pl.col("_columns"),
        reason=pl.col("_reason"),
        raw=pl.struct(FOCUS_COLUMNS).struct.json_encode(),
        billing_account_id=pl.col("BillingAccountId"),
        billing_currency=pl.col("BillingCurrency"),
        billing_period_start=parse_timestamp(pl.col("BillingPeriodStart")),
        invoice_id=pl.col("InvoiceId"),
        service_provider_name=pl.col("ServiceProviderName"),
        billed_cost=parse_decimal(pl.col("BilledCost")),
        effective_cost=parse_decimal(pl.col("EffectiveCost")),
    )


def _integer_problem(name: str, minimum: int) -> pl.Expr:
    value = pl.col(name).str.strip_chars().str.to_integer(strict=False)
    return (
        pl.when(pl.col(name).is_not_null() & value.is_null())
        .then(pl.lit("is not an integer: ") + pl.col(name).str.slice(0, 40))
        .when(value < minimum)
        .then(pl.lit(f"is below {minimum}: ") + pl.col(name).str.slice(0, 40))
    )


def _bool_problem(name: str) -> pl.Expr:
    return _one_of(name, ("true", "false"), "true or false")


def events_problems(raw: pl.LazyFrame) -> pl.LazyFrame:
    """Raw event text rows (one field per column) with `_bad`, `_columns` and `_reason` added."""
    is_call = pl.col("event_type") == "llm_call"
    is_outcome = pl.col("event_type") == "outcome"
    problems: dict[str, list[pl.Expr]] = {
        "event_type": [_one_of("event_type", ("llm_call", "outcome"), "a known event type"), _required("event_type")],
        "event_id": [_required("event_id")],
        "timestamp": [_required("timestamp"), _ts_problem("timestamp")],
        "session_id": [_required("session_id")],
    }
    for name in ("request_id", "feature_tag", "input_tokens", "output_tokens", "attempt", "status"):
        problems.setdefault(name, []).append(_problem(is_call & pl.col(name).is_null(), "is required for llm_call"))
    for name in TOKEN_FIELDS:
        problems.setdefault(name, []).append(_problem(is_call, _integer_problem(name, 0)))
    problems["attempt"].append(_problem(is_call, _integer_problem("attempt", 1)))
    problems["status"].append(_problem(is_call, _one_of("status", CALL_STATUSES, "ok or error")))
    for name in ("success", "escalated", "signal"):
        problems[name] = [_problem(is_outcome & pl.col(name).is_null(), "is required for outcome")]
    problems["success"].append(_problem(is_outcome, _bool_problem("success")))
    problems["escalated"].append(_problem(is_outcome, _bool_problem("escalated")))
    problems["signal"].append(_problem(is_outcome, _one_of("signal", OUTCOME_SIGNALS, "explicit or implicit")))
    return _with_problems(raw, problems)


def llm_calls_typed(checked: pl.LazyFrame) -> pl.LazyFrame:
    """Good `llm_call` rows of `events_problems`, typed as schemas.StagedLlmCall."""
    from schemas.events import StagedLlmCall

    tokens = {
        name: pl.col(name).str.strip_chars().str.to_integer(strict=False).fill_null(0)
        for name in TOKEN_FIELDS
    }
    return (
        checked.filter(~pl.col("_bad") & (pl.col("event_type") == "llm_call"))
        .with_columns(
            timestamp=parse_timestamp(pl.col("timestamp")),
            attempt=pl.col("attempt").str.strip_chars().str.to_integer(strict=False),
            **tokens,
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
            timestamp=parse_timestamp(pl.col("timestamp")),
            success=pl.col("success") == "true",
            escalated=pl.col("escalated") == "true",
        )
        .select(list(StagedOutcome.to_schema().columns))
    )


def events_quarantine(checked: pl.LazyFrame) -> pl.LazyFrame:
    """Bad rows of `events_problems` as schemas.Quarantine records (known fields only: no content)."""
    null_text = pl.lit(None, dtype=pl.String)
    return checked.filter(pl.col("_bad")).select(
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
