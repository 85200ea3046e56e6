"""Staged rows held back by a later step, as quarantine records (schemas.Quarantine): FOCUS rows
whose billing period no run covers, late billing rows, the calls of an intent billed in two
currencies. Unlike staging's quarantine they were valid rows: `raw` holds the staged values as text.
LazyFrames in and out, no I/O."""

from __future__ import annotations

import polars as pl

from schemas.types import MONEY, TIMESTAMP

# The staged columns written into `raw`, as in the landing file.
_FOCUS_RAW = (
    "BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "BillingAccountId", "BillingAccountName",
    "BillingCurrency", "BillingPeriodStart", "BillingPeriodEnd", "ChargeCategory", "ChargeClass", "ChargeDescription",
    "ChargePeriodStart", "ChargePeriodEnd", "ServiceProviderName", "InvoiceId", "InvoiceIssuerName", "ServiceName",
    "SkuId", "SkuMeter", "ConsumedQuantity", "ConsumedUnit", "x_RequestId", "x_ModelVersion", "x_PromptVersion",
    "x_FeatureTag",
)  # fmt: skip
_CALL_RAW = (
    "event_id", "timestamp", "request_id", "session_id", "feature_tag", "provider", "model", "model_version",
    "prompt_version", "input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens",
    "attempt", "status",
)  # fmt: skip


def _text(column: str, dtype: pl.DataType) -> pl.Expr:
    if isinstance(dtype, pl.Datetime):
        return pl.col(column).dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ").alias(column)
    if isinstance(dtype, pl.Decimal):  # exact, without the trailing zeros of the scale
        return pl.col(column).cast(pl.String).str.replace(r"\.?0+$", "").alias(column)
    return pl.col(column).cast(pl.String).alias(column)


def _raw(rows: pl.LazyFrame, columns: tuple[str, ...]) -> pl.Expr:
    schema = rows.collect_schema()
    return pl.struct([_text(c, schema[c]) for c in columns]).struct.json_encode()


def _records(
    rows: pl.LazyFrame, source: str, column: str, reason: pl.Expr | str, raw: tuple[str, ...],
    origin: dict[str, pl.Expr], extra: dict[str, pl.Expr] | None,
) -> pl.LazyFrame:
    """`rows` as quarantine records: `origin` the billing columns (account … effective_cost)."""
    from schemas.outputs import Quarantine

    return rows.select(
        source=pl.lit(source),
        source_file=pl.col("source_file"),
        source_line=pl.col("source_line"),
        column=pl.lit(column),
        reason=reason if isinstance(reason, pl.Expr) else pl.lit(reason),
        raw=_raw(rows, raw),
        **origin,
        **(extra or {}),
    ).select(*Quarantine.to_schema().columns, *(extra or {}))


def focus_held(rows: pl.LazyFrame, column: str, reason: pl.Expr | str, extra: dict[str, pl.Expr] | None = None) -> pl.LazyFrame:
    """Staged FOCUS rows (schemas.StagedFocus columns) as quarantine records (plus `extra` columns,
    e.g. the day they are reported on)."""
    origin = {
        "billing_account_id": pl.col("BillingAccountId"),
        "billing_currency": pl.col("BillingCurrency"),
        "billing_period_start": pl.col("BillingPeriodStart"),
        "invoice_id": pl.col("InvoiceId"),
        "service_provider_name": pl.col("ServiceProviderName"),
        "billed_cost": pl.col("BilledCost"),
        "effective_cost": pl.col("EffectiveCost"),
    }
    return _records(rows, "focus", column, reason, _FOCUS_RAW, origin, extra)


def calls_held(calls: pl.LazyFrame, column: str, reason: pl.Expr | str, extra: dict[str, pl.Expr] | None = None) -> pl.LazyFrame:
    """Staged calls (schemas.StagedLlmCall columns) as quarantine records (plus `extra` columns).
    Their money is not theirs to carry: it stays with their requests in request_costs."""
    text = pl.lit(None, dtype=pl.String)
    origin = {
        "billing_account_id": text,
        "billing_currency": text,
        "billing_period_start": pl.lit(None, dtype=TIMESTAMP),
        "invoice_id": text,
        "service_provider_name": text,
        "billed_cost": pl.lit(None, dtype=MONEY),
        "effective_cost": pl.lit(None, dtype=MONEY),
    }
    return _records(calls, "events", column, reason, _CALL_RAW, origin, extra)
