"""Pure reconciliation transforms: current FOCUS rows, quarantined FOCUS rows and telemetry calls in,
the reconciliation figures, token comparison and request-id conflicts out (LazyFrames, no I/O).

Every FOCUS row lands in exactly one part of its group's billed total:
- quarantined: the row failed validation (warehouse/quarantine); its readable cost still counts;
- unattributable: no x_RequestId (tax, fees, credits, purchases, corrections);
- conflicting: its request id is billed to more than one billing account or currency within the
  billing period (model.requests.request_conflicts), so it cannot be one request's cost;
- attributed: telemetry logged a call with its request id dated within the row's billing period
  ± 1 day (ATTRIBUTION_MARGIN: a call just before midnight can be billed in the next period);
- unmatched: telemetry logged no such call.
A telemetry call is telemetry-only when no current FOCUS row with its request id has a billing
period (± 1 day) containing the call's date.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from schemas.types import MONEY
from unitledger.config import Reconciliation as Thresholds
from unitledger.model.requests import dedupe_calls, request_conflicts
from unitledger.sources.values import parse_timestamp

ATTRIBUTION_MARGIN = timedelta(days=1)
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


def _window_contains(day: pl.Expr) -> pl.Expr:
    """`day` within [BillingPeriodStart − margin, BillingPeriodEnd + margin) by UTC date."""
    low = pl.col("BillingPeriodStart").dt.date() - ATTRIBUTION_MARGIN
    high = pl.col("BillingPeriodEnd").dt.date() + ATTRIBUTION_MARGIN
    return (day >= low) & (day < high)


def call_window(periods: pl.DataFrame) -> tuple[date, date]:
    """The dates of calls that can attribute rows of these billing periods (BillingPeriodStart and
    BillingPeriodEnd columns): [earliest start − margin, latest end + margin)."""
    return (
        periods["BillingPeriodStart"].min().date() - ATTRIBUTION_MARGIN,
        periods["BillingPeriodEnd"].max().date() + ATTRIBUTION_MARGIN,
    )


def attribute(rows: pl.LazyFrame, period_rows: pl.LazyFrame, calls: pl.LazyFrame) -> pl.LazyFrame:
    """Current FOCUS rows with `billing_period`, `conflict` (their request id is billed to two
    accounts or currencies among `period_rows`, every current row of their billing periods) and
    `seen` (`calls` has their request id within the period ± 1 day)."""
    rows = rows.with_columns(billing_period=billing_period(pl.col("BillingPeriodStart")))
    conflicts = request_conflicts(
        period_rows.with_columns(billing_period=billing_period(pl.col("BillingPeriodStart"))), by=("billing_period",)
    )
    period_requests = rows.filter(pl.col("x_RequestId").is_not_null()).select(
        "x_RequestId", "BillingPeriodStart", "BillingPeriodEnd"
    ).unique()
    seen = (
        period_requests.join(calls.select("request_id", "call_date").unique(), left_on="x_RequestId", right_on="request_id")
        .filter(_window_contains(pl.col("call_date")))
        .select("x_RequestId", "BillingPeriodStart", "BillingPeriodEnd")
        .unique()
        .with_columns(seen=pl.lit(True))
    )
    return (
        rows.join(seen, on=["x_RequestId", "BillingPeriodStart", "BillingPeriodEnd"], how="left")
        .join(conflicts.with_columns(conflict=pl.lit(True)), on=["x_RequestId", "billing_period"], how="left")
        .with_columns(pl.col("seen").fill_null(False), pl.col("conflict").fill_null(False))
    )


def ledger(attributed: pl.LazyFrame, quarantined: pl.LazyFrame, extra: dict[str, tuple[pl.Expr, pl.Expr]] | None = None) -> pl.LazyFrame:
    """One frame of every current FOCUS row, staged (`attribute`'s output) and quarantined
    (sources.focus.scan_quarantined_focus), in the reconciliation's terms. `extra` adds grain columns
    as an expression over each side, e.g. {"date": (staged date, quarantined date)}."""
    extra = extra or {}
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
        "conflict": pl.col("conflict"),
    }
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
        "conflict": pl.lit(False),
    }
    return pl.concat([attributed.select(**staged), quarantined.select(**held)])


def quarantine_charge_date() -> pl.Expr:
    """UTC date of a quarantined row's ChargePeriodStart, read from its raw text (null if unreadable)."""
    raw = pl.col("raw").str.json_decode(pl.Struct({"ChargePeriodStart": pl.String}))
    return parse_timestamp(raw.struct.field("ChargePeriodStart")).dt.date()


def figures(rows: pl.LazyFrame, grain: list[str]) -> pl.LazyFrame:
    """`ledger` rows summed per `grain`: the billed total and its five parts, on BilledCost and on
    EffectiveCost. Each part is its own condition, so a row in none or two parts shows as delta."""
    held = pl.col("quarantined")
    has_id = ~held & pl.col("request_id").is_not_null()
    parts = {
        "attributed": has_id & ~pl.col("conflict") & pl.col("seen"),
        "unmatched": has_id & ~pl.col("conflict") & ~pl.col("seen"),
        "conflicting": has_id & pl.col("conflict"),
        "unattributable": ~held & pl.col("request_id").is_null(),
        "quarantined": held,
    }
    billed = {"attributed": "attributed_cost", "unmatched": "unmatched_billing_cost", "conflicting": "conflicting_cost",
              "unattributable": "unattributable_cost", "quarantined": "quarantined_cost"}
    effective = {"attributed": "attributed_effective_cost", "unmatched": "unmatched_effective_cost",
                 "conflicting": "conflicting_effective_cost", "unattributable": "unattributable_effective_cost",
                 "quarantined": "quarantined_effective_cost"}
    summed = rows.group_by(grain).agg(
        billing_rows=(~held).sum().cast(pl.Int64),
        quarantined_rows=held.sum().cast(pl.Int64),
        quarantined_rows_unknown_cost=(held & pl.col("billed_cost").is_null()).sum().cast(pl.Int64),
        attributed_requests=pl.col("request_id").filter(parts["attributed"]).n_unique().cast(pl.Int64),
        unmatched_requests=pl.col("request_id").filter(parts["unmatched"]).n_unique().cast(pl.Int64),
        conflicting_requests=pl.col("request_id").filter(parts["conflicting"]).n_unique().cast(pl.Int64),
        billed_total=pl.col("billed_cost").sum(),
        effective_total=pl.col("effective_cost").sum(),
        **{name: pl.col("billed_cost").filter(parts[part]).sum() for part, name in billed.items()},
        **{name: pl.col("effective_cost").filter(parts[part]).sum() for part, name in effective.items()},
    )
    return summed.with_columns(
        telemetry_only_requests=pl.lit(0, dtype=pl.Int64),
        telemetry_requests=pl.lit(None, dtype=pl.Int64),
        delta=(pl.col("billed_total") - pl.sum_horizontal(list(billed.values()))).cast(MONEY),
        effective_delta=(pl.col("effective_total") - pl.sum_horizontal(list(effective.values()))).cast(MONEY),
        coverage=pl.when(pl.col("billed_total") != 0).then(
            pl.col("attributed_cost").cast(pl.Float64) / pl.col("billed_total").cast(pl.Float64)
        ),
    )


def telemetry_only(calls: pl.LazyFrame, billing: pl.LazyFrame, grain: dict[str, pl.Expr]) -> pl.LazyFrame:
    """Per `grain` (expressions over the calls, e.g. billing period and provider): requests
    telemetry logged (`calls`, the reported dates only) and those of them with no current FOCUS row
    whose billing period ± 1 day contains the call's date (`billing`: every row that could)."""
    calls = dedupe_calls(calls)
    billed = billing.filter(pl.col("x_RequestId").is_not_null()).select(
        "x_RequestId", "BillingPeriodStart", "BillingPeriodEnd"
    ).unique()
    matched = (
        calls.select("request_id", "call_date")
        .join(billed, left_on="request_id", right_on="x_RequestId")
        .filter(_window_contains(pl.col("call_date")))
        .select("request_id")
        .unique()
        .with_columns(billed=pl.lit(True))
    )
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


def with_status(rows: pl.LazyFrame, limits: Thresholds) -> pl.LazyFrame:
    """Add status (ok / warn / fail) and status_reason from the [reconciliation] thresholds."""
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
    """Per billing period and request (conflicting ones excluded): billed tokens of each type from
    the token rows (SkuMeter in TOKEN_METERS, ConsumedUnit in TOKEN_UNITS)."""
    meter = pl.col("SkuMeter").replace_strict(TOKEN_METERS, default=None, return_dtype=pl.String)
    per_unit = pl.col("ConsumedUnit").replace_strict(TOKEN_UNITS, default=None, return_dtype=pl.Int64)
    tokens = attributed.filter(
        pl.col("x_RequestId").is_not_null() & ~pl.col("conflict") & meter.is_not_null()
        & per_unit.is_not_null() & pl.col("ConsumedQuantity").is_not_null()
    ).with_columns(token_type=meter, tokens=pl.col("ConsumedQuantity") * per_unit)
    return tokens.group_by("billing_period", "BillingPeriodStart", "BillingPeriodEnd", request_id=pl.col("x_RequestId")).agg(
        billing_account_id=pl.col("BillingAccountId").min(),
        service_provider_name=pl.col("ServiceProviderName").min(),
        **{f"billed_{t}_tokens": pl.col("tokens").filter(pl.col("token_type") == t).sum().cast(MONEY) for t in TOKEN_TYPES},
    )


def token_comparison(billed: pl.LazyFrame, calls: pl.LazyFrame) -> pl.LazyFrame:
    """`billed_tokens` joined with the request's call (within the billing period ± 1 day), with
    telemetry's counts in billing's convention and `mismatched` naming the token types that differ."""
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
    compared = billed.join(telemetry, on="request_id").filter(_window_contains(pl.col("call_date")))
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
