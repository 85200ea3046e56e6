"""Advisory checks on the published reconciliation partitions (status, tokens_match): they warn and
never block a run."""

from __future__ import annotations

import polars as pl

from unitledger.checks.validation import CheckOutcome
from unitledger.model.reconciliation import KEY


def status_check(figures: pl.LazyFrame) -> CheckOutcome:
    """How many rows are warn or fail, with the first failing row's reason."""
    flagged = figures.filter(pl.col("status") != "ok").sort("status", *KEY, nulls_last=True).collect()
    fails = flagged.filter(pl.col("status") == "fail")
    meta = {"fail_rows": fails.height, "warn_rows": flagged.height - fails.height}
    if fails.is_empty():
        return CheckOutcome("status", True, f"no row fails ({meta['warn_rows']} warn)", meta)
    first = fails.row(0, named=True)
    return CheckOutcome(
        "status",
        False,
        f"{fails.height} row(s) fail; first {first['billing_period']} {first['billing_account_id']} "
        f"{first['invoice_id']} {first['service_provider_name']}: {first['status_reason']}",
        meta,
    )


def token_check(tokens: pl.LazyFrame) -> CheckOutcome:
    """Requests whose billed tokens differ from telemetry's, per provider and model."""
    counted = (
        tokens.group_by("service_provider_name", "model")
        .agg(pl.col("requests_compared").sum(), pl.col("requests_mismatched").sum())
        .sort("service_provider_name", "model", nulls_last=True)
        .collect()
    )
    by_model = {f"{r['service_provider_name']}/{r['model']}": f"{r['requests_mismatched']} of {r['requests_compared']}" for r in counted.iter_rows(named=True)}
    mismatched = int(counted["requests_mismatched"].sum()) if counted.height else 0
    return CheckOutcome(
        "tokens_match",
        mismatched == 0,
        f"{mismatched} request(s) billed for other token counts than telemetry logged (see token_mismatches)"
        if mismatched
        else "billed tokens equal telemetry's for every compared request",
        {"mismatched_by_provider_model": by_model},
    )
