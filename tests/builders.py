"""Hand-built landing data for tests: small, explicit, every value visible in the test."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

FOCUS_HEADER = [
    "BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "BillingAccountId", "BillingAccountName",
    "BillingCurrency", "BillingPeriodStart", "BillingPeriodEnd", "ChargeCategory", "ChargeClass",
    "ChargeDescription", "ChargePeriodStart", "ChargePeriodEnd", "ServiceProviderName", "InvoiceId",
    "InvoiceIssuerName", "ServiceName", "SkuId", "SkuMeter", "ConsumedQuantity", "ConsumedUnit",
    "x_RequestId", "x_ModelVersion", "x_PromptVersion", "x_FeatureTag",
]


AI_COLUMNS = ["x_RequestId", "x_ModelVersion", "x_PromptVersion", "x_FeatureTag"]


def focus_13_header() -> list[str]:
    """A real FOCUS 1.3 header: the 65 Cost and Usage columns of the reference's table, in its
    (alphabetical) order, then the AI extensions: 69 columns, Tags just before x_RequestId."""
    from tests.conftest import FOCUS_REFERENCE

    names = []
    for line in FOCUS_REFERENCE.read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 3 and re.fullmatch(r"[A-Z]\w+(, [A-Z]\w+)*", cells[1]) and cells[1] != "Column":
            names += cells[1].split(", ")
    assert len(names) == 65, names
    return names + AI_COLUMNS


def focus_sample_header() -> list[str]:
    """The header of the real FOCUS 1.0 sample (44 columns, ProviderName), then the AI extensions."""
    from tests.conftest import FOCUS_SAMPLE

    with open(FOCUS_SAMPLE, newline="") as fh:
        return next(csv.reader(fh)) + AI_COLUMNS


def focus_row(request_id: str | None = "r1", cost: str = "0.010000000000", *, hour: str = "2026-03-02T10:00:00Z",
              end: str | None = None, **overrides: str | None) -> dict[str, str | None]:
    """One FOCUS usage row; BilledCost = EffectiveCost = ListCost = `cost` unless overridden."""
    end = end or hour.replace(":00:00Z", ":59:59Z")
    row = {
        "BilledCost": cost, "EffectiveCost": cost, "ListCost": cost, "ContractedCost": cost,
        "BillingAccountId": "acct-us", "BillingAccountName": "US", "BillingCurrency": "USD",
        "BillingPeriodStart": "2026-03-01T00:00:00Z", "BillingPeriodEnd": "2026-04-01T00:00:00Z",
        "ChargeCategory": "Usage", "ChargeClass": None, "ChargeDescription": "tokens",
        "ChargePeriodStart": hour, "ChargePeriodEnd": end, "ServiceProviderName": "Anthropic",
        "InvoiceId": "INV-1", "InvoiceIssuerName": "Anthropic", "ServiceName": "Claude", "SkuId": "sku-in",
        "SkuMeter": "Input Tokens", "ConsumedQuantity": "1000", "ConsumedUnit": "Tokens",
        "x_RequestId": request_id, "x_ModelVersion": "m-1", "x_PromptVersion": "v1", "x_FeatureTag": "chat",
    }
    row.update(overrides)
    return row


def write_focus_csv(path: Path, rows: list[dict], header: list[str] | None = None, mtime: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = header or FOCUS_HEADER
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in header])
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def llm_call(request_id: str = "r1", session_id: str = "s1", timestamp: str = "2026-03-02T10:15:00Z", **overrides) -> dict:
    event = {
        "event_type": "llm_call", "event_id": f"e-{request_id}", "timestamp": timestamp,
        "request_id": request_id, "session_id": session_id, "feature_tag": "chat", "provider": "anthropic",
        "model": "claude", "model_version": "m-1", "prompt_version": "v1", "input_tokens": 1000,
        "output_tokens": 100, "cache_read_input_tokens": 0, "cache_write_input_tokens": 0, "attempt": 1,
        "status": "ok",
    }
    event.update(overrides)
    return event


def outcome(session_id: str = "s1", success: bool = True, timestamp: str = "2026-03-03T09:00:00Z", **overrides) -> dict:
    event = {
        "event_type": "outcome", "event_id": f"o-{session_id}-{timestamp}", "timestamp": timestamp,
        "session_id": session_id, "feature_tag": "chat", "success": success, "escalated": not success,
        "signal": "explicit",
    }
    event.update(overrides)
    return event


def write_events(path: Path, events: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path
