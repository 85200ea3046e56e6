"""Pure reconciliation transforms: current FOCUS rows, quarantined FOCUS rows and telemetry calls in,
the reconciliation figures, token comparison and request-id conflicts out (LazyFrames, no I/O).

Every FOCUS row lands in exactly one part of its group's billed total:
- quarantined: the row failed validation (warehouse/quarantine); its readable cost still counts;
- rows without x_RequestId, as the invoice allocation (model.allocation, docs/allocation.md) placed
  them: an AI token row's cost split into allocated (shares of logged calls), unlogged_usage
  (tokens billed, not logged) and unmatched_pool (no call to share it); unrecognized_usage (a
  token row whose model, type, unit or quantity is unknown, or whose charge period is longer than
  a day); unattributable (everything else: tax, fees, credits, purchases, corrections, non-token
  usage);
- conflicting: its request id is billed to more than one billing account or currency within the
  billing period (model.requests.request_conflicts), so it cannot be one request's cost;
- attributed: its request's call is dated at most billing_delay_days from the row's ChargePeriodStart
  date (model.requests.associate): the row is that request's cost in request_costs;
- late: a call of its request (or its billing-only request's first row) is further away, within
  detection_horizon_days (model.requests.classify_unassociated): quarantined by the daily tables;
- unmatched: telemetry logged no call of its request within the horizon: a billing-only request.
The same rules as the daily tables', so the reconciliation's parts are request_costs' sides.
A telemetry call is telemetry-only when no current FOCUS row with its request id is dated within
billing_delay_days of the call's date.
"""

from __future__ import annotations

import polars as pl

from schemas.types import MONEY
from unitledger.config import Bounds
from unitledger.config import Reconciliation as Thresholds
from unitledger.model.allocation import PLACEMENT_AMOUNTS
from unitledger.model.requests import LATE, dedupe_calls, days_apart, request_conflicts
from unitledger.sources.values import parse_timestamp

KEY = ["billing_period", "billing_account_id", "invoice_id", "service_provider_name", "billing_currency"]

# FOCUS SkuMeter of token rows → token type. Billed `Input Tokens` exclude cached tokens, while
# telemetry input_tokens include cache reads and writes (OpenTelemetry gen_ai convention).
TOKEN_METERS = {
    "Input Tokens": "input",
    "Output Tokens": "output",
    "Cache Read Tokens": "cache_read",
    "Cached Input Tokens": "cache_read",
    "Cache Write Tokens": "cache_write",
}
TOKEN_TYPES = ("input", "output", "cache_read", "cache_write")
# FOCUS's conforming ConsumedUnit strings for tokens and how many tokens one unit is.
TOKEN_UNITS = {"Tokens": 1, "1000 Tokens": 1_000, "1000000 Tokens": 1_000_000}


def billing_period(timestamp: pl.Expr) -> pl.Expr:
    """YYYY-MM of a UTC timestamp: the monthly partition key."""
    return timestamp.dt.strftime("%Y-%m")


def attribute(associated: pl.LazyFrame, period_rows: pl.LazyFrame, settled: pl.LazyFrame) -> pl.LazyFrame:
    """Current FOCUS rows (`associated`: model.requests.associate(..., how="left"), `call_date` set
    when the row is its request's call's cost) with `billing_period`, `seen` (it is), `late` (its
    classification in `settled`, model.requests.classify_unassociated by source_file and
    source_line, is late billing) and `conflict` (its request id is billed to two accounts or
    currencies among `period_rows`, every current row of their billing periods)."""
    rows = associated.with_columns(billing_period=billing_period(pl.col("BillingPeriodStart")))
    conflicts = request_conflicts(
        period_rows.with_columns(billing_period=billing_period(pl.col("BillingPeriodStart"))), by=("billing_period",)
    )
    late = settled.filter(pl.col("billing_class") == LATE).select("source_file", "source_line", late=pl.lit(True))
    return (
        rows.join(late, on=["source_file", "source_line"], how="left")
        .join(conflicts.with_columns(conflict=pl.lit(True)), on=["x_RequestId", "billing_period"], how="left")
        .with_columns(pl.col("late").fill_null(False), pl.col("conflict").fill_null(False), seen=pl.col("call_date").is_not_null())
    )


def unrequested(rows: pl.LazyFrame) -> pl.LazyFrame:
    """Current FOCUS rows without x_RequestId in `attribute`'s shape: no request, so no call, no
    late billing and no conflict (`attribute` would find none: they are reconciled apart, by day)."""
    return rows.with_columns(
        billing_period=billing_period(pl.col("BillingPeriodStart")),
        call_date=pl.lit(None, pl.Date), late=pl.lit(False), conflict=pl.lit(False), seen=pl.lit(False),
    )


# model.allocation.placement's amounts of a token row without a request id.
_PLACED = [f"{p}_{c}" for p in PLACEMENT_AMOUNTS for c in ("billed_cost", "effective_cost")]


def ledger(
    attributed: pl.LazyFrame | None,
    quarantined: pl.LazyFrame | None,
    extra: dict[str, tuple[pl.Expr, pl.Expr]] | None = None,
    placed: pl.LazyFrame | None = None,
) -> pl.LazyFrame:
    """One frame of every current FOCUS row, staged (`attribute`'s output) and quarantined
    (sources.focus.scan_quarantined_focus), in the reconciliation's terms (either side None: that
    side's rows are reconciled in another part). `extra` adds grain columns as an expression over
    each side, e.g. {"date": (staged date, quarantined date)}. `placed`
    (model.allocation.placement): where the invoice allocation put each row without a request id;
    without it every such row is unattributable."""
    extra = extra or {}
    if attributed is None:
        return _held_ledger(quarantined, extra)
    if placed is None:
        attributed = attributed.with_columns(pl.lit(None, pl.String).alias("usage_class"), *[pl.lit(None, MONEY).alias(c) for c in _PLACED])
    else:
        attributed = attributed.join(placed, on=["source_file", "source_line"], how="left")
    staged = {
        "billing_period": pl.col("billing_period"),
        **{name: exprs[0] for name, exprs in extra.items()},
        "billing_account_id": pl.col("BillingAccountId"),
        "invoice_id": pl.col("InvoiceId"),
        "service_provider_name": pl.col("ServiceProviderName"),
        "billing_currency": pl.col("BillingCurrency"),
        "request_id": pl.col("x_RequestId"),
        "billed_cost": pl.col("BilledCost"),
        "effective_cost": pl.col("EffectiveCost"),
        "quarantined": pl.lit(False),
        "seen": pl.col("seen"),
        "late": pl.col("late"),
        "conflict": pl.col("conflict"),
        "usage_class": pl.col("usage_class"),
        **{c: pl.col(c) for c in _PLACED},
    }
    if quarantined is None:
        return attributed.select(**staged)
    return pl.concat([attributed.select(**staged), _held_ledger(quarantined, extra)])


def _held_ledger(quarantined: pl.LazyFrame, extra: dict[str, tuple[pl.Expr, pl.Expr]]) -> pl.LazyFrame:
    """`ledger`'s rows of quarantined FOCUS rows: their cost counted as quarantined."""
    held = {
        "billing_period": billing_period(pl.col("billing_period_start")),
        **{name: exprs[1] for name, exprs in extra.items()},
        "billing_account_id": pl.col("billing_account_id"),
        "invoice_id": pl.col("invoice_id"),
        "service_provider_name": pl.col("service_provider_name"),
        "billing_currency": pl.col("billing_currency"),
        "request_id": pl.lit(None, dtype=pl.String),
        "billed_cost": pl.col("billed_cost"),
        "effective_cost": pl.col("effective_cost"),
        "quarantined": pl.lit(True),
        "seen": pl.lit(False),
        "late": pl.lit(False),
        "conflict": pl.lit(False),
        "usage_class": pl.lit(None, pl.String),
        **{c: pl.lit(None, MONEY) for c in _PLACED},
    }
    return quarantined.select(**held)


def quarantine_charge_date() -> pl.Expr:
    """UTC date of a quarantined row's ChargePeriodStart, read from its raw text (null if unreadable)."""
    raw = pl.col("raw").str.json_decode(pl.Struct({"ChargePeriodStart": pl.String}))
    return parse_timestamp(raw.struct.field("ChargePeriodStart")).dt.date()


def figures(rows: pl.LazyFrame, grain: list[str]) -> pl.LazyFrame:
    """`ledger` rows summed per `grain`: the billed total and its parts, on BilledCost and on
    EffectiveCost, with the derived columns (`finish_figures(figure_sums(rows, grain))`)."""
    return finish_figures(figure_sums(rows, grain))


def figure_sums(rows: pl.LazyFrame, grain: list[str]) -> pl.LazyFrame:
    """`ledger` rows summed per `grain`: row counts, request counts, the billed total and its
    parts, on BilledCost and on EffectiveCost. Every column adds up exactly over disjoint sets of
    rows (`add_up`) when no request id has rows in two of them: the month is summed one hash
    bucket of request ids (or one day of rows without one) at a time. Each whole-row part is its
    own condition, so a row in none or two parts shows as delta (finish_figures); an AI token row
    without a request id is split into its allocated, unlogged and unmatched-pool amounts
    (model.allocation.placement), which must add up to its cost too."""
    held = pl.col("quarantined")
    has_id = ~held & pl.col("request_id").is_not_null()
    no_id = ~held & pl.col("request_id").is_null()
    kind = pl.col("usage_class")
    parts = {
        "attributed": has_id & ~pl.col("conflict") & pl.col("seen"),
        "unmatched": has_id & ~pl.col("conflict") & ~pl.col("seen") & ~pl.col("late"),
        "late": has_id & ~pl.col("conflict") & pl.col("late"),
        "conflicting": has_id & pl.col("conflict"),
        "unrecognized": no_id & (kind == "unrecognized_token").fill_null(False),
        "unattributable": no_id & ~kind.is_in(["token", "unrecognized_token"]).fill_null(False),
        "quarantined": held,
    }
    # AI token rows without a request id: amounts, not conditions.
    token_row = no_id & (kind == "token").fill_null(False)
    split = {
        **{names[0]: pl.col(f"{part}_billed_cost").filter(token_row).sum() for part, names in _SPLIT.items()},
        **{names[1]: pl.col(f"{part}_effective_cost").filter(token_row).sum() for part, names in _SPLIT.items()},
    }
    return rows.group_by(grain).agg(
        billing_rows=(~held).sum().cast(pl.Int64),
        quarantined_rows=held.sum().cast(pl.Int64),
        quarantined_rows_unknown_cost=(held & pl.col("billed_cost").is_null()).sum().cast(pl.Int64),
        attributed_requests=pl.col("request_id").filter(parts["attributed"]).n_unique().cast(pl.Int64),
        unmatched_requests=pl.col("request_id").filter(parts["unmatched"]).n_unique().cast(pl.Int64),
        conflicting_requests=pl.col("request_id").filter(parts["conflicting"]).n_unique().cast(pl.Int64),
        late_requests=pl.col("request_id").filter(parts["late"]).n_unique().cast(pl.Int64),
        billed_total=pl.col("billed_cost").sum(),
        effective_total=pl.col("effective_cost").sum(),
        **{name: pl.col("billed_cost").filter(parts[part]).sum() for part, name in _BILLED_PARTS.items()},
        **{name: pl.col("effective_cost").filter(parts[part]).sum() for part, name in _EFFECTIVE_PARTS.items()},
        **split,  # a token row left unplaced (null parts) is in no part: it shows as delta
    )


_BILLED_PARTS = {
    "attributed": "attributed_cost", "unmatched": "unmatched_billing_cost", "late": "late_billing_cost",
    "conflicting": "conflicting_cost", "unrecognized": "unrecognized_usage_cost", "unattributable": "unattributable_cost",
    "quarantined": "quarantined_cost",
}  # fmt: skip
_EFFECTIVE_PARTS = {
    "attributed": "attributed_effective_cost", "unmatched": "unmatched_effective_cost", "late": "late_effective_cost",
    "conflicting": "conflicting_effective_cost", "unrecognized": "unrecognized_usage_effective_cost",
    "unattributable": "unattributable_effective_cost", "quarantined": "quarantined_effective_cost",
}  # fmt: skip
_SPLIT = {
    "allocated": ("allocated_cost", "allocated_effective_cost"),
    "unlogged": ("unlogged_usage_cost", "unlogged_usage_effective_cost"),
    "unmatched": ("unmatched_pool_cost", "unmatched_pool_effective_cost"),
}
# Every part of billed_total (their sum is billed_total − delta), in the order a reader takes them.
BILLED_PARTS = (
    "attributed_cost", "allocated_cost", "unlogged_usage_cost", "unmatched_billing_cost", "late_billing_cost",
    "conflicting_cost", "unmatched_pool_cost", "unrecognized_usage_cost", "unattributable_cost", "quarantined_cost",
)  # fmt: skip
assert sorted(BILLED_PARTS) == sorted([*_BILLED_PARTS.values(), *[n[0] for n in _SPLIT.values()]])


def add_up(partials: pl.LazyFrame, grain: list[str]) -> pl.LazyFrame:
    """Partial sums (`figure_sums`, `telemetry_only`, `token_reconciliation` of disjoint sets of
    request ids) added per `grain`: every other column is a count or an exact decimal sum."""
    return partials.group_by(grain).agg(pl.exclude(grain).sum())


def finish_figures(sums: pl.LazyFrame) -> pl.LazyFrame:
    """`figure_sums` (added up) with delta, effective_delta, coverage and token_coverage, and the
    telemetry columns `telemetry_only` rows fill in."""
    billed_parts = list(BILLED_PARTS)
    effective_parts = [*_EFFECTIVE_PARTS.values(), *[n[1] for n in _SPLIT.values()]]
    ai = ["attributed_cost", "unmatched_billing_cost", "late_billing_cost", "conflicting_cost", "unrecognized_usage_cost", *[n[0] for n in _SPLIT.values()]]
    ai_cost = pl.sum_horizontal(ai)
    return sums.with_columns(
        telemetry_only_requests=pl.lit(0, dtype=pl.Int64),
        telemetry_requests=pl.lit(None, dtype=pl.Int64),
        delta=(pl.col("billed_total") - pl.sum_horizontal(billed_parts)).cast(MONEY),
        effective_delta=(pl.col("effective_total") - pl.sum_horizontal(effective_parts)).cast(MONEY),
        coverage=pl.when(pl.col("billed_total") != 0).then(
            pl.col("attributed_cost").cast(pl.Float64) / pl.col("billed_total").cast(pl.Float64)
        ),
        token_coverage=pl.when(ai_cost != 0).then(
            (pl.col("attributed_cost") + pl.col("allocated_cost")).cast(pl.Float64) / ai_cost.cast(pl.Float64)
        ),
    )


def telemetry_only(
    calls: pl.LazyFrame, billing: pl.LazyFrame, grain: dict[str, pl.Expr], bounds: Bounds, allocated: pl.LazyFrame | None = None
) -> pl.LazyFrame:
    """Per `grain` (expressions over the calls, e.g. billing period and provider): requests
    telemetry logged (`calls`, the reported dates only) and those of them never billed: with no
    current FOCUS row dated within billing_delay_days of the call's date (`billing`: every row that
    could be) and not among `allocated` (request_id: the requests billed by allocated shares of
    aggregated rows, which no row names)."""
    calls = dedupe_calls(calls)
    billed = billing.filter(pl.col("x_RequestId").is_not_null()).select("x_RequestId", "charge_date").unique()
    own = (
        calls.select("request_id", "call_date")
        .join(billed, left_on="request_id", right_on="x_RequestId")
        .filter(days_apart("charge_date", "call_date") <= bounds.billing_delay_days)
        .select("request_id")
    )
    shared = [allocated.select("request_id")] if allocated is not None else []
    matched = pl.concat([own, *shared]).unique().with_columns(billed=pl.lit(True))
    return (
        calls.join(matched, on="request_id", how="left")
        .group_by(**grain)
        .agg(
            telemetry_requests=pl.len().cast(pl.Int64),
            telemetry_only_requests=pl.col("billed").is_null().sum().cast(pl.Int64),
        )
    )


def rows_like(partial: pl.LazyFrame, template: pl.LazyFrame) -> pl.LazyFrame:
    """`partial` (e.g. `telemetry_only` counts) as rows shaped like `template`: missing money and
    counts are 0, other missing columns (account, currency, telemetry_requests...) null."""
    schema = template.collect_schema()
    present = set(partial.collect_schema().names())

    def filler(name: str, dtype: pl.DataType) -> pl.Expr:
        zero = isinstance(dtype, pl.Decimal) or (dtype == pl.Int64 and name != "telemetry_requests")
        return pl.lit(0 if zero else None, dtype=dtype).alias(name)

    return partial.with_columns(filler(n, t) for n, t in schema.items() if n not in present).select(schema.names())


def with_invoices(rows: pl.LazyFrame, invoices: pl.LazyFrame) -> pl.LazyFrame:
    """Add invoice_total and invoice_delta (Σ billed_total of the invoice's rows − the
    accounts-payable total) to the rows of invoices listed in `invoices`; an invoice listed for a
    period with no FOCUS row becomes a row of its own with its whole total as delta."""
    on = ["billing_period", "invoice_id", "billing_account_id", "billing_currency"]
    per_invoice = rows.filter(pl.col("invoice_id").is_not_null()).group_by(on).agg(pl.col("billed_total").sum())
    compared = per_invoice.join(invoices, on=on, how="inner").select(
        *on, "invoice_total", invoice_delta=(pl.col("billed_total") - pl.col("invoice_total")).cast(MONEY)
    )
    listed = rows.join(compared, on=on, how="left", nulls_equal=False)
    absent = invoices.join(per_invoice, on=on, how="anti").with_columns(
        service_provider_name=pl.lit(None, dtype=pl.String), invoice_delta=(-pl.col("invoice_total")).cast(MONEY)
    )
    return pl.concat([listed, rows_like(absent, listed)])


def _percent(share: pl.Expr) -> pl.Expr:
    return (share * 100).round(2).cast(pl.String) + pl.lit("%")


def money_text(money: pl.Expr) -> pl.Expr:
    """An exact amount as text without trailing zeros: 0.070000000000000000 → 0.07."""
    return money.cast(pl.String).str.replace(r"\.?0+$", "")


def with_status(rows: pl.LazyFrame, limits: Thresholds, token_coverage_warn: float = 0.0) -> pl.LazyFrame:
    """Add status (ok / warn / fail) and status_reason from the [reconciliation] thresholds and
    [allocation] token_coverage_warn."""
    billed_requests = pl.col("attributed_requests") + pl.col("unmatched_requests")
    unmatched_share = pl.when(billed_requests > 0).then(pl.col("unmatched_requests") / billed_requests)
    telemetry_share = pl.when(pl.col("telemetry_requests") > 0).then(
        pl.col("telemetry_only_requests") / pl.col("telemetry_requests")
    )
    has_invoice = "invoice_delta" in rows.collect_schema().names()
    fails = [
        (
            (pl.col("delta") != 0) | (pl.col("effective_delta") != 0),
            pl.lit("the parts do not add up: delta ") + money_text(pl.col("delta")) + pl.lit(", effective_delta ") + money_text(pl.col("effective_delta")),
        ),
        (
            pl.col("quarantined_rows_unknown_cost") > 0,
            pl.col("quarantined_rows_unknown_cost").cast(pl.String)
            + pl.lit(" quarantined row(s) with an unreadable or out-of-range BilledCost: billed_total is incomplete"),
        ),
        (
            unmatched_share > limits.unmatched_requests_fail,
            _percent(unmatched_share) + pl.lit(f" of billed requests unknown to telemetry (fail above {limits.unmatched_requests_fail:.2%})"),
        ),
    ]
    if has_invoice:
        fails.append(
            (
                pl.col("invoice_delta").abs() > pl.lit(limits.invoice_tolerance, dtype=MONEY),
                pl.lit("FOCUS differs from the invoice total by ") + money_text(pl.col("invoice_delta")),
            )
        )
    warns = [
        (
            (unmatched_share > limits.unmatched_requests_warn) & (unmatched_share <= limits.unmatched_requests_fail),
            _percent(unmatched_share) + pl.lit(f" of billed requests unknown to telemetry (warn above {limits.unmatched_requests_warn:.2%})"),
        ),
        (
            pl.col("quarantined_rows") > 0,
            pl.col("quarantined_rows").cast(pl.String) + pl.lit(" row(s) quarantined, ")
            + money_text(pl.col("quarantined_cost")) + pl.lit(" of them counted as quarantined_cost"),
        ),
        (
            pl.col("late_requests") > 0,
            pl.col("late_requests").cast(pl.String) + pl.lit(" request(s) billed late, ")
            + money_text(pl.col("late_billing_cost")) + pl.lit(" of late_billing_cost (rows listed in the quarantine)"),
        ),
        (
            pl.col("conflicting_requests") > 0,
            pl.col("conflicting_requests").cast(pl.String)
            + pl.lit(" request(s) billed to two accounts or currencies (see request_conflicts)"),
        ),
        (
            telemetry_share > limits.telemetry_only_warn,
            _percent(telemetry_share) + pl.lit(f" of logged requests never billed (warn above {limits.telemetry_only_warn:.2%})"),
        ),
        (
            (pl.col("coverage") < limits.coverage_warn) & pl.col("telemetry_requests").is_null(),
            pl.lit("coverage ") + _percent(pl.col("coverage")) + pl.lit(f" below {limits.coverage_warn:.2%}"),
        ),
        (
            (pl.col("token_coverage") < token_coverage_warn) & pl.col("telemetry_requests").is_null(),
            pl.lit("AI token cost attributed or allocated ") + _percent(pl.col("token_coverage"))
            + pl.lit(f" below {token_coverage_warn:.2%} (see unrecognized_usage, unmatched_models, allocation_pools)"),
        ),
    ]

    def flagged(checks):
        return [pl.when(cond.fill_null(False)).then(message) for cond, message in checks]

    failed = pl.concat_list(flagged(fails)).list.drop_nulls()
    warned = pl.concat_list(flagged(warns)).list.drop_nulls()
    return rows.with_columns(
        status=pl.when(failed.list.len() > 0).then(pl.lit("fail")).when(warned.list.len() > 0).then(pl.lit("warn")).otherwise(pl.lit("ok")),
        status_reason=pl.when((failed.list.len() + warned.list.len()) > 0)
        .then(pl.concat_list(failed, warned).list.join("; "))
        .otherwise(pl.lit("within thresholds")),
    )


# --- request-id conflicts -------------------------------------------------------------------------


def conflict_rows(attributed: pl.LazyFrame) -> pl.LazyFrame:
    """`attribute`'s conflicting rows as schemas.RequestConflicts rows."""
    return (
        attributed.filter(pl.col("conflict"))
        .group_by(
            "billing_period",
            request_id=pl.col("x_RequestId"),
            billing_account_id=pl.col("BillingAccountId"),
            billing_currency=pl.col("BillingCurrency"),
            invoice_id=pl.col("InvoiceId"),
            service_provider_name=pl.col("ServiceProviderName"),
        )
        .agg(
            billing_rows=pl.len().cast(pl.Int64),
            billed_cost=pl.col("BilledCost").sum(),
            effective_cost=pl.col("EffectiveCost").sum(),
        )
    )


# --- tokens ---------------------------------------------------------------------------------------


def billed_tokens(attributed: pl.LazyFrame) -> pl.LazyFrame:
    """Per billing period and request (attributed rows: conflicting and late ones excluded): billed
    tokens of each type from the token rows (SkuMeter in TOKEN_METERS, ConsumedUnit in TOKEN_UNITS)."""
    meter = pl.col("SkuMeter").replace_strict(TOKEN_METERS, default=None, return_dtype=pl.String)
    per_unit = pl.col("ConsumedUnit").replace_strict(TOKEN_UNITS, default=None, return_dtype=pl.Int64)
    tokens = attributed.filter(
        pl.col("x_RequestId").is_not_null() & pl.col("seen") & ~pl.col("conflict") & meter.is_not_null()
        & per_unit.is_not_null() & pl.col("ConsumedQuantity").is_not_null()
    ).with_columns(token_type=meter, tokens=pl.col("ConsumedQuantity") * per_unit)
    return tokens.group_by("billing_period", request_id=pl.col("x_RequestId")).agg(
        billing_account_id=pl.col("BillingAccountId").min(),
        service_provider_name=pl.col("ServiceProviderName").min(),
        **{f"billed_{t}_tokens": pl.col("tokens").filter(pl.col("token_type") == t).sum().cast(MONEY) for t in TOKEN_TYPES},
    )


def token_comparison(billed: pl.LazyFrame, calls: pl.LazyFrame) -> pl.LazyFrame:
    """`billed_tokens` joined with the request's call (the deduplicated `calls` that attributed its
    rows), with telemetry's counts in billing's convention and `mismatched` naming the token types
    that differ."""
    telemetry = dedupe_calls(calls).select(
        "request_id",
        "call_date",
        "provider",
        "model",
        telemetry_input_tokens=pl.col("input_tokens") - pl.col("cache_read_input_tokens") - pl.col("cache_write_input_tokens"),
        telemetry_output_tokens=pl.col("output_tokens"),
        telemetry_cache_read_tokens=pl.col("cache_read_input_tokens"),
        telemetry_cache_write_tokens=pl.col("cache_write_input_tokens"),
    )
    compared = billed.join(telemetry, on="request_id")
    differs = [
        pl.when(pl.col(f"billed_{t}_tokens") != pl.col(f"telemetry_{t}_tokens").cast(MONEY)).then(pl.lit(t))
        for t in TOKEN_TYPES
    ]
    return compared.with_columns(mismatched=pl.concat_list(differs).list.drop_nulls().list.join(","))


def token_reconciliation(compared: pl.LazyFrame) -> pl.LazyFrame:
    """`token_comparison` counted per billing period, provider and model (schemas.TokenReconciliation)."""
    return compared.group_by("billing_period", "service_provider_name", "model").agg(
        requests_compared=pl.len().cast(pl.Int64),
        requests_mismatched=(pl.col("mismatched") != "").sum().cast(pl.Int64),
        **{f"billed_{t}_tokens": pl.col(f"billed_{t}_tokens").sum() for t in TOKEN_TYPES},
        **{f"telemetry_{t}_tokens": pl.col(f"telemetry_{t}_tokens").sum().cast(pl.Int64) for t in TOKEN_TYPES},
    )


def token_mismatches(compared: pl.LazyFrame) -> pl.LazyFrame:
    """The requests of `token_comparison` whose tokens differ (schemas.TokenMismatches)."""
    from schemas.reconciliation import TokenMismatches

    return compared.filter(pl.col("mismatched") != "").select(list(TokenMismatches.to_schema().columns))


def gateway_gap(request_costs: pl.LazyFrame) -> pl.LazyFrame:
    """schemas.GatewayGap from request_costs rows: per date, provider, model and invoice currency,
    the billed requests a gateway also reported, their invoice cost (billed_cost) against the
    gateway's figure, exactly; requests reported in another currency counted apart, not compared."""
    billed = request_costs.filter((pl.col("billing_rows") > 0) & pl.col("gateway_reported_cost").is_not_null())
    same = pl.col("gateway_reported_currency") == pl.col("billing_currency")
    zero = pl.lit(0, MONEY)
    return (
        billed.group_by("date", "provider", "model", "billing_currency")
        .agg(
            requests=same.sum().cast(pl.Int64),
            other_currency_requests=(~same).sum().cast(pl.Int64),
            invoice_cost=pl.col("billed_cost").filter(same).sum(),
            gateway_reported_cost=pl.col("gateway_reported_cost").filter(same).sum(),
        )
        .with_columns(pl.col("invoice_cost", "gateway_reported_cost").fill_null(zero).cast(MONEY))
        .with_columns(gap=(pl.col("gateway_reported_cost") - pl.col("invoice_cost")).cast(MONEY))
        .with_columns(
            gap_share=pl.when(pl.col("invoice_cost") != 0).then(pl.col("gap").cast(pl.Float64) / pl.col("invoice_cost").cast(pl.Float64))
        )
    )
