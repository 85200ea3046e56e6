"""Hand-built staged frames for the allocation tests: every value visible in the test."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import polars as pl

from schemas.types import MONEY, TIMESTAMP

DAY = datetime(2026, 3, 2, tzinfo=timezone.utc)
_TEXT = pl.String
FOCUS_SCHEMA = {
    "source_file": _TEXT, "source_line": pl.Int64, "delivery": _TEXT, "BillingAccountId": _TEXT,
    "BillingAccountName": _TEXT, "BillingCurrency": _TEXT, "BillingPeriodStart": TIMESTAMP, "BillingPeriodEnd": TIMESTAMP,
    "ChargePeriodStart": TIMESTAMP, "ChargePeriodEnd": TIMESTAMP, "charge_date": pl.Date, "ChargeCategory": _TEXT,
    "ChargeClass": _TEXT, "ChargeDescription": _TEXT, "BilledCost": MONEY, "EffectiveCost": MONEY, "ListCost": MONEY,
    "ContractedCost": MONEY, "ConsumedQuantity": MONEY, "ConsumedUnit": _TEXT, "InvoiceId": _TEXT,
    "InvoiceIssuerName": _TEXT, "ServiceProviderName": _TEXT, "ServiceName": _TEXT, "SkuId": _TEXT, "SkuMeter": _TEXT,
    "x_RequestId": _TEXT, "x_ModelVersion": _TEXT, "x_PromptVersion": _TEXT, "x_FeatureTag": _TEXT,
    "SubAccountId": _TEXT, "SkuPriceDetails": _TEXT, "x_SkuMeterName": _TEXT, "x_UsageType": _TEXT,
}  # fmt: skip
CALL_SCHEMA = {
    "source_file": _TEXT, "source_line": pl.Int64, "event_id": _TEXT, "timestamp": TIMESTAMP, "call_date": pl.Date,
    "request_id": _TEXT, "session_id": _TEXT, "feature_tag": _TEXT, "provider": _TEXT, "model": _TEXT,
    "model_version": _TEXT, "prompt_version": _TEXT, "input_tokens": pl.Int64, "output_tokens": pl.Int64,
    "cache_read_input_tokens": pl.Int64, "cache_write_input_tokens": pl.Int64, "attempt": pl.Int64, "status": _TEXT,
}  # fmt: skip


def at(hour: int, minute: int = 0, day: int = 0) -> datetime:
    return DAY + timedelta(days=day, hours=hour, minutes=minute)


def bill_row(cost: str | None = "0.01", *, hour: int | None = 10, day_row: bool = False, quantity: str | None = "1000", **over) -> dict:
    """One staged FOCUS row without a request id: gpt-4o-mini input tokens, one hour (or the
    whole day) of acct-1 in USD. BilledCost = EffectiveCost = ListCost = `cost` unless overridden."""
    start = DAY if day_row else at(hour)
    end = start + (timedelta(days=1) if day_row else timedelta(hours=1))
    row = {
        "source_file": "bill.csv", "delivery": "d1", "BillingAccountId": "acct-1", "BillingAccountName": "One",
        "BillingCurrency": "USD", "BillingPeriodStart": DAY.replace(day=1), "BillingPeriodEnd": DAY.replace(month=4, day=1),
        "ChargePeriodStart": start, "ChargePeriodEnd": end, "charge_date": start.date(), "ChargeCategory": "Usage",
        "ChargeClass": None, "ChargeDescription": None, "BilledCost": cost, "EffectiveCost": cost, "ListCost": cost,
        "ContractedCost": cost, "ConsumedQuantity": quantity, "ConsumedUnit": "Tokens", "InvoiceId": "INV-1",
        "InvoiceIssuerName": "OpenAI", "ServiceProviderName": "OpenAI", "ServiceName": "OpenAI API", "SkuId": None,
        "SkuMeter": "Input Tokens", "x_RequestId": None, "x_ModelVersion": "gpt-4o-mini-0718", "x_PromptVersion": None,
        "x_FeatureTag": None, "SubAccountId": None, "SkuPriceDetails": None, "x_SkuMeterName": None, "x_UsageType": None,
    }  # fmt: skip
    row.update(over)
    return row


def focus(*rows: dict) -> pl.LazyFrame:
    """Staged FOCUS rows (source_line numbered from 2, as in a CSV with a header)."""
    records = []
    for line, row in enumerate(rows, start=2):
        record = {"source_line": line, **row}
        for c in ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "ConsumedQuantity"):
            record[c] = None if record.get(c) is None else Decimal(str(record[c]))
        records.append(record)
    return pl.DataFrame(records, schema=FOCUS_SCHEMA).lazy()


def call(request_id: str, when: datetime, *, input_tokens: int = 100, output_tokens: int = 0, cache_read: int = 0,
         cache_write: int = 0, **over) -> dict:  # fmt: skip
    row = {
        "source_file": "events.jsonl", "event_id": f"e-{request_id}", "timestamp": when, "call_date": when.date(),
        "request_id": request_id, "session_id": f"s-{request_id}", "feature_tag": "chat", "provider": "openai",
        "model": "gpt-4o-mini", "model_version": "gpt-4o-mini-2024-07-18", "prompt_version": "v1",
        "input_tokens": input_tokens, "output_tokens": output_tokens, "cache_read_input_tokens": cache_read,
        "cache_write_input_tokens": cache_write, "attempt": 1, "status": "ok",
    }  # fmt: skip
    row.update(over)
    return row


def calls(*rows: dict, hints: bool = False, gateway: bool = False) -> pl.LazyFrame:
    schema = dict(CALL_SCHEMA)
    if hints:
        schema.update(billing_account_hint=_TEXT, sub_account_hint=_TEXT)
    if gateway:  # the staged gateway fields account rules match
        schema.update(api_key_id=_TEXT, team_id=_TEXT, project_id=_TEXT)
    return pl.DataFrame([{"source_line": i, **r} for i, r in enumerate(rows, start=1)], schema=schema).lazy()
