"""Invoice allocation wired into the pipeline (issue 16): the daily step's request_costs with
cost_source and allocated shares, the allocation tables, per-feature split by source, and the
reconciliation's buckets; end to end on generated days billed per request and aggregated, and on
the real Azure OpenAI sample's shape. Expectations are computed by hand or by an independent
route (the same generated day billed per request)."""

import json
import re
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal as D
from pathlib import Path

import duckdb
import polars as pl
import pytest

from tests.conftest import TODAY
from tests.builders import FOCUS_HEADER, focus_row, llm_call, outcome, write_events, write_focus_csv
from tests.test_ai_usage import REAL_INPUTS
from unitledger.checks.conservation import allocated_costs_check
from unitledger.config import AccountRule, load_settings
from unitledger.layout import Layout
from unitledger.model.allocation import allocate_billing
from unitledger.model.requests import dedupe_calls, in_dates, without_request_conflicts
from unitledger.sources.events import scan_staged_calls
from unitledger.sources.focus import scan_staged_focus
from unitledger.steps.daily import build_daily_tables
from unitledger.steps.monthly import build_monthly_tables
from unitledger.steps.reconciliation import build_reconciliation, build_reconciliation_daily
from unitledger.steps.staging import stage_billing, stage_events
from unitledger.tools.generate import generate
from unitledger.warehouse.manifest import scan_table
from unitledger.warehouse.views import refresh_views

DAY = date(2026, 3, 2)
HEADER = [*FOCUS_HEADER, "x_SkuMeterName", "SubAccountId"]


def token_row(cost: str, meter: str, quantity: str | None, hour: int = 10, **over) -> dict:
    """An aggregated provider row: no request id, one model and token type for an hour."""
    return focus_row(None, cost, hour=f"2026-03-02T{hour:02d}:00:00Z", end=f"2026-03-02T{hour + 1:02d}:00:00Z",
                     SkuMeter=meter, ConsumedQuantity=quantity, x_FeatureTag=None, x_PromptVersion=None, **over)


def run_day(layout: Layout, settings, start: date = DAY, end: date = DAY) -> None:
    assert stage_billing(layout, settings, TODAY).passed
    assert stage_events(layout).passed
    result = build_daily_tables(layout, settings, start, end)
    assert result.passed, result.failures()
    rec = build_reconciliation_daily(layout, settings, start, end)
    assert rec.passed, rec.failures()


def read(layout: Layout, table: str, keys=(DAY.isoformat(),)) -> pl.DataFrame:
    return scan_table(layout, table, list(keys)).collect()


def land_mixed_day(layout: Layout) -> None:
    rows = [
        # x1's own row bills its input exactly; its output comes from the aggregated output row.
        focus_row("x1", "0.020000000000", hour="2026-03-02T10:00:00Z", end="2026-03-02T11:00:00Z"),
        token_row("0.01", "Input Tokens", "300"),  # 3 calls x 100 tokens share one cent
        token_row("0.06", "Output Tokens", "1000"),  # 350 logged of 1000 billed: 650 unlogged
        token_row("0.05", "Input Tokens", "500", hour=11),  # no call at 11h
        token_row("0.07", "Input Tokens", "10", ConsumedUnit="Bananas"),  # unknown unit
        focus_row(None, "1.25", ChargeCategory="Tax", SkuMeter=None, ConsumedQuantity=None, ConsumedUnit=None,
                  x_ModelVersion=None, x_FeatureTag=None, x_PromptVersion=None),
    ]
    write_focus_csv(layout.landing_focus / "acct-us" / "2026-03" / "export.csv", rows, HEADER)
    calls = [llm_call(f"a{i}", f"s{i}", f"2026-03-02T10:{5 * i:02d}:00Z", input_tokens=100, output_tokens=100) for i in (1, 2, 3)]
    calls.append(llm_call("x1", "s4", "2026-03-02T10:30:00Z", input_tokens=1000, output_tokens=50))
    labels = [outcome(f"s{i}", True, "2026-03-02T20:00:00Z") for i in (1, 2, 3, 4)]
    write_events(layout.landing_events / "2026-03-02.jsonl", calls + labels)


def test_aggregated_rows_are_allocated_into_request_costs_with_their_provenance(layout, settings):
    land_mixed_day(layout)
    run_day(layout, settings)
    costs = {r["request_id"]: r for r in read(layout, "request_costs").iter_rows(named=True)}
    third = D("0.01") / 3  # one cent over three equal calls: 0.0033...3, one of them 1e-18 more
    shares = sorted(costs[f"a{i}"]["billed_cost"] - D("0.006") for i in (1, 2, 3))  # 100 x 0.06/1000 each
    assert shares == [D("0.003333333333333333")] * 2 + [D("0.003333333333333334")]
    assert sum(shares) == D("0.01") and all(abs(s - third) < D("1e-18") for s in shares)
    for i in (1, 2, 3):
        row = costs[f"a{i}"]
        assert row["cost_source"] == "invoice_allocated" and row["match_status"] == "matched"
        assert row["allocated_billed_cost"] == row["billed_cost"] == row["effective_cost"] == row["list_cost"]
        assert row["billing_rows"] == 2 and row["billing_currency"] == "USD" and row["billing_account_id"] == "acct-us"
    # Exact rows win for input; output allocated: 50 x 0.06 / 1000.
    assert costs["x1"]["cost_source"] == "invoice_request"
    assert costs["x1"]["allocated_billed_cost"] == D("0.003")
    assert costs["x1"]["billed_cost"] == D("0.023") and costs["x1"]["billing_rows"] == 2

    pools = read(layout, "allocation_pools").sort("source_line")
    assert pools["status"].to_list() == ["allocated", "allocated", "unmatched_pool"]
    assert pools["unlogged_billed_cost"].to_list() == [D(0), D("0.039"), D(0)]
    assert pools["unmatched_billed_cost"].to_list() == [D(0), D(0), D("0.05")]
    assert pools["pool_billed_tokens"].to_list() == [D(300), D(1000), D(500)]
    assert pools["pool_logged_tokens"].to_list() == [300, 350, 0]
    unrecognized = read(layout, "unrecognized_usage")
    assert unrecognized["BilledCost"].to_list() == [D("0.07")] and "unknown unit 'Bananas'" in unrecognized["reason"][0]

    # Per feature: token cost 0.028 allocated (a1..a3) + 0.023 (x1, of which 0.003 allocated).
    feature = read(layout, "cost_per_intent").row(0, named=True)
    assert feature["token_cost"] == D("0.051") and feature["allocated_token_cost"] == D("0.031")
    success = read(layout, "cost_per_success").row(0, named=True)
    assert success["token_cost"] == D("0.051") and success["allocated_token_cost"] == D("0.031")

    rec = read(layout, "reconciliation_daily").filter(pl.col("billing_currency") == "USD").row(0, named=True)
    assert rec["billed_total"] == D("1.46")
    expected = {"attributed_cost": D("0.02"), "allocated_cost": D("0.031"), "unlogged_usage_cost": D("0.039"),
                "unmatched_pool_cost": D("0.05"), "unrecognized_usage_cost": D("0.07"), "unattributable_cost": D("1.25"),
                "unmatched_billing_cost": D(0), "conflicting_cost": D(0), "quarantined_cost": D(0)}  # fmt: skip
    assert {k: rec[k] for k in expected} == expected
    assert rec["delta"] == 0 and rec["effective_delta"] == 0
    assert rec["token_coverage"] == pytest.approx(0.051 / 0.21)
    assert rec["status"] == "warn" and "AI token cost attributed or allocated 24.29% below 95.00%" in rec["status_reason"]


def test_monthly_reconciliation_places_the_same_cents(layout, settings):
    land_mixed_day(layout)
    run_day(layout, settings)
    assert build_reconciliation(layout, settings, date(2026, 3, 1), date(2026, 3, 1)).passed
    month = read(layout, "reconciliation", ["2026-03"]).filter(pl.col("billing_currency") == "USD").row(0, named=True)
    day = read(layout, "reconciliation_daily").filter(pl.col("billing_currency") == "USD").row(0, named=True)
    parts = ["allocated_cost", "unlogged_usage_cost", "unmatched_pool_cost", "unrecognized_usage_cost", "unattributable_cost"]
    assert {p: month[p] for p in parts} == {p: day[p] for p in parts}
    assert month["delta"] == 0


def test_a_lost_share_fails_the_conservation_checks(layout, settings, monkeypatch):
    """The checks can fail: a share dropped between the allocation and request_costs is caught."""
    import unitledger.steps.daily as daily

    land_mixed_day(layout)
    assert stage_billing(layout, settings, TODAY).passed and stage_events(layout).passed
    real = daily.allocated_by_request
    monkeypatch.setattr(daily, "allocated_by_request", lambda shares: real(shares.filter(pl.col("request_id") != "a2")))
    result = build_daily_tables(layout, settings, DAY, DAY)
    assert not result.passed
    assert any("request_costs.conservation" in f for f in result.failures())
    assert scan_table(layout, "request_costs", [DAY.isoformat()]).collect().is_empty()  # nothing published


def test_real_azure_openai_day_is_allocated_by_logged_share(layout, settings):
    """The FinOps hub sample's shape: Azure OpenAI daily meter rows without quantity, the model and
    token type only in the meter name, one non-token meter. A day's row is split by the logged
    tokens of that day's calls (no billed quantity: logged_share)."""
    sample = pl.read_csv(REAL_INPUTS / "azure-aoai-finops-hub" / "daily_meter_costs.csv", schema_overrides={"DailyCost": pl.String})
    day = "2025-03-28"
    rows = [
        focus_row(None, cost, hour=f"{d}T00:00:00Z", end=f"{date.fromisoformat(d) + timedelta(days=1)}T00:00:00Z",
                  SkuMeter=None, ConsumedQuantity=None, ConsumedUnit=None, x_ModelVersion=None, x_FeatureTag=None, x_PromptVersion=None,
                  x_SkuMeterName=meter, ServiceProviderName="Microsoft", BillingCurrency=currency,
                  BillingPeriodStart="2025-03-01T00:00:00Z", BillingPeriodEnd="2025-04-01T00:00:00Z")
        for currency, cost, d, meter in zip(sample["BillingCurrency"], sample["DailyCost"], sample["Day"], sample["x_SkuMeterName"])
        if d == day
    ]  # fmt: skip
    write_focus_csv(layout.landing_focus / "azure" / "2025-03" / "costs.csv", rows, HEADER)
    calls = [
        llm_call("c1", "s1", f"{day}T09:00:00Z", provider="azure_openai", model="gpt-4o", model_version="gpt-4o-2024-05-13",
                 input_tokens=1000, output_tokens=100),
        llm_call("c2", "s2", f"{day}T15:00:00Z", provider="azure_openai", model="gpt-4o", model_version="gpt-4o-2024-05-13",
                 input_tokens=3000, output_tokens=300),
    ]  # fmt: skip
    write_events(layout.landing_events / f"{day}.jsonl", calls)
    run_day(layout, replace(settings, start_date=date(2025, 1, 1)), date.fromisoformat(day), date.fromisoformat(day))  # a 2025 billing period

    by_meter = {m: D(c) for d, c, m in zip(sample["Day"], sample["DailyCost"], sample["x_SkuMeterName"]) if d == day}
    input_cost, output_cost = by_meter["gpt 4o 0513 Input global Tokens"], by_meter["gpt 4o 0513 Output global Tokens"]
    costs = {r["request_id"]: r for r in read(layout, "request_costs", [day]).iter_rows(named=True)}
    # By hand: c1 has a quarter of each type's logged tokens, c2 three quarters.
    assert costs["c1"]["billed_cost"] == input_cost / 4 + output_cost / 4
    assert costs["c2"]["billed_cost"] == input_cost * 3 / 4 + output_cost * 3 / 4
    assert {costs[c]["cost_source"] for c in ("c1", "c2")} == {"invoice_allocated"}
    assert set(read(layout, "allocation_pools", [day])["status"]) == {"logged_share"}
    rec = read(layout, "reconciliation_daily", [day]).filter(pl.col("billing_currency") == "USD").row(0, named=True)
    assert rec["allocated_cost"] == input_cost + output_cost and rec["unlogged_usage_cost"] == 0
    assert rec["unattributable_cost"] == by_meter["Standard Text Records"]  # a non-token meter: shared cost
    assert rec["billed_total"] == sum(by_meter.values()) and rec["delta"] == 0


# --- end to end on generated days ---------------------------------------------------------------

GENERATED = dict(start=date(2026, 3, 1), days=2, requests_per_day=250, seed=11)


@pytest.fixture(scope="module")
def billed_both_ways(tmp_path_factory) -> dict[str, Layout]:
    """The same generated days, billed per request and billed provider-style (acct-us-001 per
    hour, model and token type; acct-eu-002 per request), each run through the pipeline."""
    settings = load_settings(Path(__file__).resolve().parents[1] / "unitledger.toml")
    layouts = {}
    for billing in ("request", "aggregated"):
        layout = Layout(tmp_path_factory.mktemp(billing) / "data")
        generate(layout.data_dir, billing=billing, **GENERATED)
        run_day(layout, settings, date(2026, 3, 1), date(2026, 3, 2))
        layouts[billing] = layout
    return layouts


def test_generated_aggregated_billing_has_no_request_ids_on_the_allocated_account(billed_both_ways):
    focus = scan_staged_focus(billed_both_ways["aggregated"]).filter(pl.col("ChargeCategory") == "Usage").collect()
    us = focus.filter(pl.col("BillingAccountId") == "acct-us-001", pl.col("SkuMeter").str.ends_with("Tokens"))
    eu = focus.filter(pl.col("BillingAccountId") == "acct-eu-002", pl.col("SkuMeter").str.ends_with("Tokens"))
    assert us.height > 0 and us["x_RequestId"].null_count() == us.height
    assert eu.height > 0 and eu["x_RequestId"].null_count() == 0
    # Summed per hour, model and token type (committed and standard pricing apart): few rows.
    assert us.select("ChargePeriodStart", "x_ModelVersion", "SkuMeter").n_unique() * 2 >= us.height


def test_generated_day_costs_each_feature_the_same_where_the_allocation_is_exact(billed_both_ways):
    """Where a pool's billed tokens equal its logged tokens and one row bills it, the rate is the
    unit price, so every allocated share equals the per-request row it replaces: per request and
    per feature, to the last digit, against the same day billed per request."""
    layout = billed_both_ways["aggregated"]
    settings = load_settings(None)
    lo, hi = date(2026, 2, 28), date(2026, 3, 4)
    run = allocate_billing(
        scan_staged_focus(layout).filter(in_dates("charge_date", lo, hi)),
        dedupe_calls(scan_staged_calls(layout).filter(in_dates("call_date", lo, hi))),
        settings.allocation,
    )
    shares, pools = pl.collect_all([run.tables.requests, run.tables.pools])
    exact_pool = (pl.col("pool_billed_tokens") == pl.col("pool_logged_tokens").cast(pl.Decimal(38, 18))) & (pl.col("pool_rows") == 1)
    exact_rows = pools.filter(exact_pool).select("source_file", "source_line")
    inexact = shares.join(exact_rows, on=["source_file", "source_line"], how="anti").select("request_id").unique()
    exact_requests = shares.select("request_id").unique().join(inexact, on="request_id", how="anti")
    money = ["billed_cost", "effective_cost", "list_cost"]
    days = ["2026-03-01", "2026-03-02"]

    def costs(billing: str) -> pl.DataFrame:
        rows = scan_table(billed_both_ways[billing], "request_costs", days).collect()
        return rows.join(exact_requests, on="request_id", how="semi").select("request_id", "feature_tag", *money)

    aggregated, per_request = costs("aggregated"), costs("request")
    assert aggregated.height > 100  # most requests are in exact pools: the comparison is not vacuous
    assert aggregated.height == per_request.height
    compared = aggregated.join(per_request, on="request_id", suffix="_request")
    for c in money:
        assert (compared[c] == compared[f"{c}_request"]).all(), c
    by_feature = [frame.group_by("feature_tag").agg(pl.col(money).sum()).sort("feature_tag") for frame in (aggregated, per_request)]
    assert by_feature[0].equals(by_feature[1])
    # Inexact pools exist too (billing-only requests' tokens unlogged, telemetry-only calls over-logged).
    assert set(pools["status"]) >= {"allocated"}


def test_generated_days_reconcile_exactly_both_ways(billed_both_ways):
    days = ["2026-03-01", "2026-03-02"]
    totals = {}
    for billing, layout in billed_both_ways.items():
        rec = scan_table(layout, "reconciliation_daily", days).collect().filter(pl.col("billing_currency").is_not_null())
        assert (rec["delta"] == 0).all() and (rec["effective_delta"] == 0).all()
        totals[billing] = rec.group_by("date", "billing_currency").agg(pl.col("billed_total", "effective_total").sum()).sort("date", "billing_currency")
        if billing == "aggregated":
            us = rec.filter(pl.col("billing_currency") == "USD")
            assert us["attributed_cost"].sum() == 0 and us["allocated_cost"].sum() > 0
            assert us["unlogged_usage_cost"].sum() > 0  # billing-only requests' tokens are unlogged usage
    # The bill is the same money either way.
    assert totals["aggregated"].equals(totals["request"])


def test_an_unbilled_call_keeps_to_the_account_its_session_is_billed_to():
    """A session billed per request to acct-eu (EUR): its unbilled call names no account, yet it
    must not take a share of acct-1's USD pool (that would give its intent two currencies); it is
    reported as no_pool instead. A call of an unbilled session still shares the pool."""
    from tests.alloc_frames import at, bill_row, call, calls, focus

    bill = focus(
        bill_row("0.03", quantity="300"),  # acct-1, USD, gpt-4o-mini input, 10h
        bill_row("0.50", x_RequestId="eu-1", BillingAccountId="acct-eu", BillingCurrency="EUR"),
    )
    logged = calls(
        call("eu-1", at(10, 1), session_id="s-eu"),
        call("eu-2", at(10, 2), session_id="s-eu"),  # unbilled retry of the EUR session
        call("us-1", at(10, 3), input_tokens=200),
    )
    run = allocate_billing(bill, logged)
    shares, unmatched = pl.collect_all([run.tables.requests, run.tables.unmatched_models])
    assert shares.select("request_id", "billed_cost").rows() == [("us-1", D("0.02"))]  # 200 x 0.03 / 300
    assert unmatched.select("reason", "calls", "tokens").rows() == [("no_pool", 1, 100)]


def test_buckets_and_spilled_parts_allocate_as_one_query(tmp_path):
    """The daily step allocates in hash buckets of requests with its intermediate frames written
    and read back (allocate_billing's buckets and spill): the tables equal those of one lazy
    query. The session hint crosses buckets: eu-2, in another bucket than eu-1, whose own EUR row
    names the session's account, still takes no share of the USD pool (reported as no_pool), so
    us-1 and us-2 split the pool's 0.03 by their 200 and 100 tokens: 0.02 and 0.01."""
    from tests.alloc_frames import at, bill_row, call, calls, focus
    from unitledger.model.allocation import allocated_by_request
    from unitledger.model.requests import bucket_of
    from unitledger.warehouse.publish import Spill

    buckets = 3

    def bucket(request_id: str) -> int:
        return pl.DataFrame({"id": [request_id]}).select(bucket_of("id", buckets)).item()

    other = next(f"eu-2-{k}" for k in range(100) if bucket(f"eu-2-{k}") != bucket("eu-1"))
    bill = focus(
        bill_row("0.03", quantity="300"),  # acct-1, USD, gpt-4o-mini input, 10h
        bill_row("0.50", x_RequestId="eu-1", BillingAccountId="acct-eu", BillingCurrency="EUR"),
    )
    logged = dedupe_calls(
        calls(
            call("eu-1", at(10, 1), session_id="s-eu"),
            call(other, at(10, 2), session_id="s-eu"),  # unbilled retry of the EUR session
            call("us-1", at(10, 3), input_tokens=200),
            call("us-2", at(10, 4)),
            call("us-2", at(10, 4), event_id="e-us-2-copy"),  # logged twice: one call
        )
    )
    scratch = Spill(tmp_path, "allocation", "date")
    one = allocate_billing(bill, logged)
    parts = allocate_billing(bill, logged, buckets=buckets, spill=scratch.stash)
    tables = [pl.collect_all([t.requests, t.pools, t.unmatched_models, allocated_by_request(t.requests)]) for t in (one.tables, parts.tables)]
    for whole, bucketed in zip(*tables):
        assert whole.height and bucketed.sort(pl.all()).equals(whole.sort(pl.all()))
    shares, _, unmatched, _ = tables[1]
    assert shares.sort("request_id").select("request_id", "billed_cost").rows() == [("us-1", D("0.02")), ("us-2", D("0.01"))]
    assert unmatched.select("reason", "calls", "tokens").rows() == [("no_pool", 1, 100)]
    written = {f.stem for f in scratch.dir.glob("*.parquet")}
    assert {f"pool_tokens-{b}" for b in range(buckets)} | {f"shares-{b}" for b in range(buckets)} <= written


def test_calls_outside_every_pool_hour_are_only_reported_and_agree_with_one_pass():
    """allocate_billing splits the calls by the token rows' providers and hours (pool_hours): the
    calls outside them only reach unmatched_models. The tables equal those of allocate on every
    call at once (no split), on a day billed per request only (no pool hour at all: every call
    outside) and on one with a token row at 10h (a call at 10h inside, one at 11h outside).
    Without a pool hour allocate_billing does not compute the shares and pools (empty frames,
    `pooled` False; the daily step then writes the tables built on them empty): the one-pass
    tables built on them are empty too."""
    from tests.alloc_frames import at, bill_row, call, calls, focus
    from unitledger.model.allocation import allocate, allocated_by_day, allocated_costs, call_tokens, classify_for_allocation, pool_hours, with_own_currency, with_session_accounts
    from unitledger.sources.ai_usage import exact_token_coverage

    per_request = [
        bill_row("0.50", x_RequestId="eu-1", BillingAccountId="acct-eu", BillingCurrency="EUR"),
        bill_row("0.20", x_RequestId="us-1", SkuMeter="Output Tokens"),
    ]
    logged = calls(
        call("eu-1", at(10, 1), session_id="s-eu"),
        call("eu-2", at(10, 2), session_id="s-eu"),
        call("us-1", at(10, 3), input_tokens=200),
        call("us-2", at(11, 3), input_tokens=50),
    )
    for rows, pooled_hours in ((per_request, 0), ([*per_request, bill_row("0.03", quantity="300")], 1)):
        bill = focus(*rows)
        assert pool_hours(classify_for_allocation(bill)).collect().height == pooled_hours
        run = allocate_billing(bill, logged)
        split = pl.collect_all([run.tables.requests, run.tables.pools, run.tables.unmatched_models])
        usage = classify_for_allocation(bill)
        tokens = call_tokens(with_own_currency(with_session_accounts(logged, bill), bill), exact=exact_token_coverage(bill))
        one = allocate(usage, tokens)
        whole = pl.collect_all([one.requests, one.pools, one.unmatched_models])
        for a, b in zip(split, whole):
            assert a.sort(pl.all()).equals(b.sort(pl.all()))
        assert run.pooled == bool(pooled_hours)
        built_on = pl.collect_all(
            [allocated_by_day(one.requests),
             allocated_costs(bill.filter(pl.col("x_RequestId").is_null()), one.requests, one.pools)]
        )  # fmt: skip
        assert [frame.is_empty() for frame in built_on] == [not pooled_hours] * 2
        unmatched = split[2].sort("date", "call_model", "token_type", "reason")
        assert unmatched["calls"].sum() >= 1  # not vacuous: eu-2 (no own row) is reported
        if pooled_hours:
            assert split[0].select("request_id").to_series().to_list() == ["us-1"]
            # eu-2 (inside the hour, its session's account bills no pool) and us-2 (outside): one row
            assert unmatched.filter(pl.col("token_type") == "input").select("reason", "calls", "tokens").rows() == [("no_pool", 2, 150)]


# --- per-token-type cost and the cache effect ----------------------------------------------------


def land_cached_session(layout: Layout) -> None:
    """One session of two turns on one model; prices per token: input 0.000003, output 0.000015,
    cache read 0.0000003, cache write 0.00000375. r1 writes 2000 tokens to the cache and is billed
    per request, one row per token type; r2 reads them back and is billed by aggregated hourly
    rows (it is the only call left in their pools: r1's own rows cover its types). r3 (another
    feature) is billed by one per-request row of no token type."""
    rows = [
        focus_row("r1", "0.003", SkuMeter="Input Tokens", ConsumedQuantity="1000"),
        focus_row("r1", "0.003", SkuMeter="Output Tokens", ConsumedQuantity="200"),
        focus_row("r1", "0.0075", SkuMeter="Cache Write Input Tokens", ConsumedQuantity="2000"),
        token_row("0.0015", "Input Tokens", "500"),
        token_row("0.0015", "Output Tokens", "100"),
        token_row("0.0006", "Cached Input Tokens", "2000"),
        focus_row("r3", "0.01", SkuMeter="API Requests", ConsumedQuantity="1", ConsumedUnit="Requests", x_FeatureTag="other"),
    ]
    write_focus_csv(layout.landing_focus / "acct-us" / "2026-03" / "export.csv", rows, HEADER)
    events = [
        llm_call("r1", "s1", "2026-03-02T10:05:00Z", input_tokens=3000, output_tokens=200, cache_write_input_tokens=2000),
        llm_call("r2", "s1", "2026-03-02T10:20:00Z", input_tokens=2500, output_tokens=100, cache_read_input_tokens=2000),
        llm_call("r3", "s3", "2026-03-02T10:30:00Z", feature_tag="other"),
        outcome("s1", True, "2026-03-02T20:00:00Z"),
        outcome("s3", True, "2026-03-02T20:00:00Z", feature_tag="other"),
    ]
    write_events(layout.landing_events / "2026-03-02.jsonl", events)


def test_request_costs_carry_cost_per_token_type_and_the_cache_effect_reaches_the_decisions(layout, settings):
    from unitledger.steps.decisions import build_decision_tables
    from unitledger.steps.report import build_report

    land_cached_session(layout)
    run_day(layout, settings)
    costs = {r["request_id"]: r for r in read(layout, "request_costs").iter_rows(named=True)}
    typed = ("input_cost", "output_cost", "cache_read_cost", "cache_write_cost")
    assert tuple(costs["r1"][c] for c in typed) == (D("0.003"), D("0.003"), D(0), D("0.0075"))  # its own rows
    assert tuple(costs["r2"][c] for c in typed) == (D("0.0015"), D("0.0015"), D("0.0006"), D(0))  # allocated
    assert costs["r1"]["effective_cost"] == D("0.0135") and costs["r2"]["effective_cost"] == D("0.0036")
    # r3's only row bills no recognizable token type: its cost is not known by type.
    assert costs["r3"]["effective_cost"] == D("0.01") and all(costs["r3"][c] is None for c in typed)

    breakdown = read(layout, "cost_breakdown").filter(pl.col("feature_tag") == "chat").row(0, named=True)
    # r1 is the first turn: its cost minus its cache write; r2 a later turn; the write on its own.
    assert breakdown["first_attempt_cost"] == D("0.006") and breakdown["multi_turn_cost"] == D("0.0036")
    assert breakdown["cache_write_cost"] == D("0.0075") and breakdown["token_cost"] == D("0.0171")
    assert (breakdown["input_tokens"], breakdown["cache_read_tokens"], breakdown["cache_write_tokens"]) == (1500, 2000, 2000)

    assert build_decision_tables(layout, settings).passed
    money = scan_table(layout, "money_breakdown").collect().filter(pl.col("feature_tag") == "chat").row(0, named=True)
    # At the uncached input rate 0.0045 / 1500 = 0.000003: the reads saved 2000 x 0.000003 - 0.0006,
    # the writes cost 0.0075 - 2000 x 0.000003 more than plain input would have.
    assert money["cache_read_savings"] == pytest.approx(0.0054, abs=1e-15)
    assert money["cache_write_premium"] == pytest.approx(0.0015, abs=1e-15)
    assert money["cache_net_savings"] == pytest.approx(0.0039, abs=1e-15)
    # Without the cache: every input token at 0.000003 plus the outputs, (3000 + 2500) x 0.000003 + 0.0045.
    assert money["no_cache_token_cost"] == pytest.approx(0.021, abs=1e-15)
    assert money["cache_write_share"] == pytest.approx(0.0075 / 0.0171)
    parts = ["first_attempt_cost", "multi_turn_cost", "retry_cost", "cache_write_cost", "labor_cost"]
    assert sum(money[p] for p in parts) == money["total_cost"] == D("0.0171")

    report = build_report(layout, settings, now=datetime(2026, 3, 3, tzinfo=timezone.utc)).path.read_text()
    shown = re.search(r'data-column="no_cache_token_cost" data-value="([^"]+)"', report)
    assert shown and float(shown.group(1)) == pytest.approx(0.021, abs=1e-15)


# --- the FOCUS allocated_costs export -------------------------------------------------------------


def focus_details(text: str) -> tuple[D, D]:
    element = json.loads(text, parse_float=D)["Elements"][0]
    assert element["UsageUnit"] == "Tokens"
    return D(str(element["AllocatedRatio"])), D(str(element["UsageQuantity"]))


def test_allocated_costs_split_rows_sum_back_to_each_origin_row_and_have_a_view(layout, settings):
    land_mixed_day(layout)
    run_day(layout, settings)
    split = read(layout, "allocated_costs").sort("source_line", "AllocatedResourceId", nulls_last=True)
    # Input row (line 3): one cent, all three calls of feature chat. Output row (line 4): 350 of
    # 1000 billed tokens logged (a1..a3 100 each, x1 50), all chat: 0.021; the rest unlogged.
    assert split["source_line"].to_list() == [3, 4, 4]
    assert split["AllocatedResourceId"].to_list() == ["chat", "chat", None]
    assert split["BilledCost"].to_list() == [D("0.01"), D("0.021"), D("0.039")]
    assert split["EffectiveCost"].to_list() == split["BilledCost"].to_list() == split["ListCost"].to_list()
    assert [focus_details(t) for t in split["AllocatedMethodDetails"]] == [(D(1), D(300)), (D("0.35"), D(350)), (D("0.65"), D(650))]
    assert set(split["AllocatedMethodId"]) == {"unitledger-token-share"}
    tags = json.loads(split["AllocatedTags"][0])
    assert tags == {"unitledger/feature_tag": "chat", "unitledger/model_version": "m-1", "unitledger/prompt_version": "v1"}
    # Summed back per origin row: the bill's rows (the unmatched 11h row is not split).
    bill = scan_staged_focus(layout).filter(pl.col("source_line").is_in([3, 4])).collect().sort("source_line")
    sums = split.group_by("source_line").agg(pl.col("BilledCost", "EffectiveCost", "ListCost").sum()).sort("source_line")
    for column in ("BilledCost", "EffectiveCost", "ListCost"):
        assert sums[column].to_list() == bill[column].to_list()

    refresh_views(layout)
    with duckdb.connect(str(layout.duckdb_path), read_only=True) as con:
        total = con.sql("SELECT sum(BilledCost) AS total FROM allocated_costs WHERE AllocatedResourceId = 'chat'").pl()["total"][0]
    assert total == D("0.031")


def test_allocated_costs_check_fails_on_a_split_row_that_does_not_sum_back(layout, settings):
    land_mixed_day(layout)
    run_day(layout, settings)
    split, pools = scan_table(layout, "allocated_costs", [DAY.isoformat()]), scan_table(layout, "allocation_pools", [DAY.isoformat()])
    assert allocated_costs_check(split, pools).passed
    short = split.with_columns(BilledCost=pl.when(pl.col("AllocatedResourceId").is_null()).then(pl.col("BilledCost") / 2).otherwise(pl.col("BilledCost")))
    outcome = allocated_costs_check(short, pools)
    assert not outcome.passed and "line 4" in outcome.description


# --- gateway keys and teams map calls to billing accounts ---------------------------------------------


def test_gateway_keys_staged_on_calls_steer_them_into_their_accounts_pools(layout, settings):
    """LiteLLM SpendLogs calls carry their key, team, organization and end user onto the staged
    calls; account rules map key-a to acct-A and team-b to acct-B. Hour 10: A bills 0.06 for 600
    input tokens, B 0.03 for 300. c1 (key-a, 100) 0.01, c2 (key-a, 200) 0.02, 300 tokens of A
    unlogged 0.03; c3 (team-b, 300) 0.03, all of B."""
    rows = [
        token_row("0.06", "Input Tokens", "600", BillingAccountId="acct-A", ServiceProviderName="OpenAI", x_ModelVersion="gpt-4o-mini-0718"),
        token_row("0.03", "Input Tokens", "300", BillingAccountId="acct-B", ServiceProviderName="OpenAI", x_ModelVersion="gpt-4o-mini-0718"),
    ]
    write_focus_csv(layout.landing_focus / "openai" / "2026-03" / "export.csv", rows, HEADER)
    spend = layout.landing_gateway("litellm") / "spend.csv"
    spend.parent.mkdir(parents=True)
    pl.DataFrame({
        "request_id": ["c1", "c2", "c3"], "call_type": ["acompletion"] * 3, "spend": ["0.0001"] * 3,
        "prompt_tokens": ["100", "200", "300"], "completion_tokens": ["0"] * 3,
        "startTime": ["2026-03-02 10:01:00", "2026-03-02 10:02:00", "2026-03-02 10:03:00"],
        "model": ["gpt-4o-mini-2024-07-18"] * 3, "model_group": ["gpt-4o-mini"] * 3, "custom_llm_provider": ["openai"] * 3,
        "session_id": ["s1", "s2", "s3"], "status": ["success"] * 3, "metadata": ["{}"] * 3,
        "api_key": ["key-a", "key-a", "key-x"], "team_id": ["", "team-b", "team-b"], "organization_id": [None, None, "org-1"],
        "end_user": ["", "u-2", ""],
    }).write_csv(spend)  # fmt: skip
    rules = (AccountRule(billing_account_id="acct-A", api_key_id="key-a"), AccountRule(billing_account_id="acct-B", team_id="team-b"))
    settings = replace(settings, allocation=replace(settings.allocation, account_rules=rules))
    run_day(layout, settings)

    staged = scan_staged_calls(layout).sort("request_id").collect()
    assert staged.select("api_key_id", "team_id", "project_id", "end_user_id").rows() == [
        ("key-a", None, None, None), ("key-a", "team-b", None, "u-2"), ("key-x", "team-b", "org-1", None),
    ]  # "" is no value  # fmt: skip
    costs = read(layout, "request_costs").sort("request_id")
    assert costs.select("request_id", "allocated_effective_cost", "cost_source").rows() == [
        ("c1", D("0.01"), "invoice_allocated"), ("c2", D("0.02"), "invoice_allocated"), ("c3", D("0.03"), "invoice_allocated"),
    ]  # fmt: skip
    pools = read(layout, "allocation_pools").sort("billing_account_id")
    assert pools.select("billing_account_id", "allocation_scope", "pool_calls", "unlogged_effective_cost").rows() == [
        ("acct-A", "pool", 2, D("0.03")), ("acct-B", "pool", 1, D(0)),
    ]


# --- token rows billed for a month -----------------------------------------------------------------


def test_a_month_row_is_allocated_by_the_monthly_step_over_the_calls_of_its_month(layout, settings):
    """0.10 for 1000 input tokens billed for March; a1 (chat, 2 March) logged 100, a2 (search, 20
    March) 300: rate 0.10 / 1000, a1 0.01, a2 0.03, 600 tokens unlogged 0.06."""
    month_row = focus_row(None, "0.10", hour="2026-03-01T00:00:00Z", end="2026-04-01T00:00:00Z", ConsumedQuantity="1000",
                          x_FeatureTag=None, x_PromptVersion=None)  # fmt: skip
    write_focus_csv(layout.landing_focus / "acct-us" / "2026-03" / "export.csv", [month_row], HEADER)
    calls = [
        llm_call("a1", "s1", "2026-03-02T10:00:00Z", input_tokens=100, output_tokens=0),
        llm_call("a2", "s2", "2026-03-20T10:00:00Z", input_tokens=300, output_tokens=0, feature_tag="search"),
    ]
    write_events(layout.landing_events / "march.jsonl", calls)
    for day in (date(2026, 3, 1), DAY, date(2026, 3, 20)):
        run_day(layout, settings, day, day)
    # The daily step leaves it to the monthly step: neither allocated nor listed as unrecognized.
    assert read(layout, "allocation_pools", ["2026-03-01"]).is_empty() and read(layout, "unrecognized_usage", ["2026-03-01"]).is_empty()
    assert read(layout, "request_costs")["allocated_billed_cost"].drop_nulls().sum() == 0

    assert build_monthly_tables(layout, date(2026, 3, 1), date(2026, 3, 1), settings).passed
    pool = read(layout, "allocation_pools_monthly", ["2026-03"]).row(0, named=True)
    assert (pool["status"], pool["pool_logged_tokens"], pool["pool_calls"]) == ("allocated", 400, 2)
    assert (pool["allocated_billed_cost"], pool["unlogged_billed_cost"], pool["unmatched_billed_cost"]) == (D("0.04"), D("0.06"), D(0))
    split = read(layout, "allocated_costs_monthly", ["2026-03"]).sort("AllocatedResourceId", nulls_last=True)
    assert split["AllocatedResourceId"].to_list() == ["chat", "search", None]
    assert split["BilledCost"].to_list() == [D("0.01"), D("0.03"), D("0.06")]
    assert [focus_details(t) for t in split["AllocatedMethodDetails"]] == [(D("0.1"), D(100)), (D("0.3"), D(300)), (D("0.6"), D(600))]

    # Both reconciliations place it as the monthly step did: every cent in a bucket, delta 0.
    assert build_reconciliation(layout, settings, date(2026, 3, 1), date(2026, 3, 1)).passed
    month = read(layout, "reconciliation", ["2026-03"]).filter(pl.col("billing_currency") == "USD").row(0, named=True)
    assert (month["allocated_cost"], month["unlogged_usage_cost"], month["unrecognized_usage_cost"]) == (D("0.04"), D("0.06"), D(0))
    assert month["billed_total"] == D("0.10") and month["delta"] == 0
    first_day = read(layout, "reconciliation_daily", ["2026-03-01"]).filter(pl.col("billing_currency") == "USD").row(0, named=True)
    assert (first_day["allocated_cost"], first_day["unlogged_usage_cost"], first_day["delta"]) == (D("0.04"), D("0.06"), 0)


def land_month_billed_intents(layout: Layout) -> None:
    """0.10 for 1000 input tokens billed for March (0.0001 a token). Session s1 (chat, success):
    a1 on 2 March (100 input; its 50 output tokens billed 0.02 by its own row) and a3 on 3 March
    (100), one intent; s2 (search, failure): a2 on 20 March (300), billed by nothing else; s3
    (chat, unlabeled): a4 on 5 March (100). Shares: a1 0.01, a3 0.01, a2 0.03, a4 0.01; 400 of
    the 1000 tokens unlogged, 0.04."""
    rows = [
        focus_row(None, "0.10", hour="2026-03-01T00:00:00Z", end="2026-04-01T00:00:00Z", ConsumedQuantity="1000",
                  x_FeatureTag=None, x_PromptVersion=None),
        focus_row("a1", "0.02", SkuMeter="Output Tokens", ConsumedQuantity="50"),
    ]  # fmt: skip
    write_focus_csv(layout.landing_focus / "acct-us" / "2026-03" / "export.csv", rows, HEADER)
    events = [
        llm_call("a1", "s1", "2026-03-02T10:00:00Z", input_tokens=100, output_tokens=50),
        llm_call("a3", "s1", "2026-03-03T10:00:00Z", input_tokens=100, output_tokens=0),
        llm_call("a2", "s2", "2026-03-20T10:00:00Z", input_tokens=300, output_tokens=0, feature_tag="search"),
        llm_call("a4", "s3", "2026-03-05T10:00:00Z", input_tokens=100, output_tokens=0),
        outcome("s1", True, "2026-03-03T12:00:00Z"),
        outcome("s2", False, "2026-03-20T12:00:00Z", feature_tag="search"),
    ]
    write_events(layout.landing_events / "march.jsonl", events)


def test_month_row_shares_reach_the_monthly_per_feature_tables(layout, settings):
    """The monthly tables count every allocated cent in the intents of its calls. chat, USD: s1
    0.02 own + 0.01 + 0.01 = 0.04, s3 0.01 (unbilled daily: it takes USD); search, USD: s2 0.03,
    a failure: labor 60.00 x 10 / 60 = 10.00. cost_per_success counts labeled intents only."""
    land_month_billed_intents(layout)
    run_day(layout, settings, date(2026, 3, 1), date(2026, 3, 31))
    daily = read(layout, "cost_per_intent", [f"2026-03-{d:02d}" for d in range(1, 32)])
    assert daily.filter(pl.col("billing_currency") == "USD")["token_cost"].to_list() == [D("0.02")]  # s1's own row only

    result = build_monthly_tables(layout, date(2026, 3, 1), date(2026, 3, 1), settings)
    assert result.passed, result.failures()
    cols = ["feature_tag", "billing_currency", "intents", "token_cost", "allocated_token_cost", "labor_cost", "total_cost"]
    per_intent = read(layout, "cost_per_intent_monthly", ["2026-03"]).sort("feature_tag").select(cols).rows()
    assert per_intent == [
        ("chat", "USD", 2, D("0.05"), D("0.03"), D(0), D("0.05")),
        ("search", "USD", 1, D("0.03"), D("0.03"), D("10"), D("10.03")),
    ]
    success = read(layout, "cost_per_success_monthly", ["2026-03"]).sort("feature_tag")
    assert success.select(*cols, "labeled_intents", "successes", "failures").rows() == [
        ("chat", "USD", 2, D("0.04"), D("0.02"), D(0), D("0.04"), 1, 1, 0),
        ("search", "USD", 1, D("0.03"), D("0.03"), D("10"), D("10.03"), 1, 0, 1),
    ]
    assert success["cost_per_success"].to_list() == [pytest.approx(0.04), None]
    check = next(c for c in result.checks["cost_per_success_monthly"] if c.name == "month_shares_included")
    assert check.passed and check.metadata["shares_not_in_intents"] == "none"


def test_month_shares_outside_an_intent_or_its_currency_are_left_out_and_named():
    """s1 (billed in USD) takes its USD share, not its EUR one; s2 (unbilled daily) has shares in
    two currencies and takes neither (no rate is guessed); s3's call is in no intent of the month."""
    from unitledger.model.intents import place_month_shares

    march = date(2026, 3, 2)
    shares = pl.LazyFrame(
        {
            "session_id": ["s1", "s1", "s2", "s2", "s3"],
            "intent_date": [march, march, march, march, None],
            "billing_currency": ["USD", "EUR", "USD", "EUR", "USD"],
            "share": [D("0.01"), D("0.02"), D("0.03"), D("0.04"), D("0.05")],
        },
        schema_overrides={"share": pl.Decimal(38, 18)},
    )
    intents = pl.LazyFrame(
        {"session_id": ["s1", "s2"], "date": [march, march], "billing_currency": ["USD", None], "outcome": ["success", "failure"]}
    )
    placed = place_month_shares(shares, intents).sort("session_id", "billing_currency").collect()
    assert placed.select("session_id", "billing_currency", "reason").rows() == [
        ("s1", "EUR", "other_currency"), ("s1", "USD", None),
        ("s2", "EUR", "other_currency"), ("s2", "USD", "other_currency"),
        ("s3", "USD", "no_intent"),
    ]  # fmt: skip


def test_month_shares_check_fails_when_a_share_misses_the_table(layout, settings, monkeypatch):
    import unitledger.steps.monthly as monthly

    land_month_billed_intents(layout)
    run_day(layout, settings, date(2026, 3, 1), date(2026, 3, 31))
    real = monthly.changed_intents

    def lossy(*args):  # a3's share lost on the way into s1: the tables are short of 0.01
        before, after = real(*args)
        return before, after.with_columns(token_cost=pl.col("token_cost") - pl.when(pl.col("session_id") == "s1").then(D("0.01")).otherwise(D(0)))

    monkeypatch.setattr(monthly, "changed_intents", lossy)
    result = build_monthly_tables(layout, date(2026, 3, 1), date(2026, 3, 1), settings)
    assert not result.passed
    failed = [f for f in result.failures() if "month_shares_included" in f]
    assert len(failed) == 2 and "2026-03 USD" in failed[0]

    # A share lost before it is placed (s2's 0.03): the tables agree with the placed shares, but
    # those no longer add up to what the pools allocated.
    monkeypatch.setattr(monthly, "changed_intents", real)
    place = monthly.place_shares
    monkeypatch.setattr(monthly, "place_shares", lambda *args: place(*args).filter(pl.col("session_id") != "s2"))
    result = build_monthly_tables(layout, date(2026, 3, 1), date(2026, 3, 1), settings)
    failed = [f for f in result.failures() if "month_shares_included" in f]
    assert len(failed) == 2 and "allocated 0.06" in failed[0] and "sum to 0.03" in failed[0], failed


def test_monthly_allocation_conservation_fails_on_a_lost_share(layout, settings, monkeypatch):
    import unitledger.steps.monthly as monthly

    month_row = focus_row(None, "0.10", hour="2026-03-01T00:00:00Z", end="2026-04-01T00:00:00Z", x_FeatureTag=None, x_PromptVersion=None)
    write_focus_csv(layout.landing_focus / "acct-us" / "2026-03" / "export.csv", [month_row], HEADER)
    write_events(layout.landing_events / "march.jsonl", [llm_call("a1", "s1", "2026-03-02T10:00:00Z", output_tokens=0)])
    run_day(layout, settings)
    real = monthly.allocated_costs
    monkeypatch.setattr(monthly, "allocated_costs", lambda *a: real(*a).filter(pl.col("AllocatedResourceId").is_null()))
    result = build_monthly_tables(layout, date(2026, 3, 1), date(2026, 3, 1), settings)
    assert not result.passed
    assert any("allocation_conservation" in f for f in result.failures()) and any("allocated_costs_sum_back" in f for f in result.failures())


# --- a request whose tokens fall in pools of two currencies ------------------------------------------


def test_a_call_in_pools_of_two_currencies_is_reported_not_allocated_and_the_day_passes(layout, settings):
    """acct-us bills hour 10 in USD (300 input tokens, 0.03), acct-eu in EUR (200, 0.02). c2 (feature
    search) belongs to acct-us by an account rule; c1 names no account and so could be either's: it
    takes part in neither (its cost cannot be one currency's). USD: c2's 100 of 300 tokens, 0.01,
    the rest unlogged; EUR: no call, unmatched_pool."""
    rows = [
        token_row("0.03", "Input Tokens", "300"),
        token_row("0.02", "Input Tokens", "200", BillingAccountId="acct-eu", BillingCurrency="EUR"),
    ]
    write_focus_csv(layout.landing_focus / "both" / "2026-03" / "export.csv", rows, HEADER)
    calls = [
        llm_call("c1", "s1", "2026-03-02T10:05:00Z", input_tokens=100, output_tokens=0),
        llm_call("c2", "s2", "2026-03-02T10:10:00Z", input_tokens=100, output_tokens=0, feature_tag="search"),
    ]
    write_events(layout.landing_events / "2026-03-02.jsonl", calls)
    rule = AccountRule("acct-us", feature_tag="search")
    run_day(layout, replace(settings, allocation=replace(settings.allocation, account_rules=(rule,))))

    costs = {r["request_id"]: r for r in read(layout, "request_costs").iter_rows(named=True)}
    assert costs["c1"]["match_status"] == "telemetry_only" and costs["c1"]["billed_cost"] is None
    assert (costs["c2"]["billed_cost"], costs["c2"]["billing_currency"]) == (D("0.01"), "USD")
    lost = read(layout, "unmatched_models").row(0, named=True)
    assert (lost["reason"], lost["candidates"], lost["tokens"], lost["calls"]) == ("two_currencies", "EUR, USD", 100, 1)
    pools = {r["billing_currency"]: r for r in read(layout, "allocation_pools").iter_rows(named=True)}
    assert (pools["USD"]["allocated_billed_cost"], pools["USD"]["unlogged_billed_cost"]) == (D("0.01"), D("0.02"))
    assert (pools["EUR"]["status"], pools["EUR"]["unmatched_billed_cost"]) == ("unmatched_pool", D("0.02"))
    rec = {r["billing_currency"]: r for r in read(layout, "reconciliation_daily").iter_rows(named=True) if r["billing_currency"]}
    assert rec["USD"]["delta"] == rec["EUR"]["delta"] == 0


def test_fully_loaded_view_is_opt_in_and_spreads_the_tax_beside_token_cost(layout, settings):
    land_mixed_day(layout)
    run_day(layout, settings)
    assert build_monthly_tables(layout, date(2026, 3, 1), date(2026, 3, 1), settings).passed
    assert read(layout, "fully_loaded_costs_monthly", ["2026-03"]).is_empty()  # off by default

    on = replace(settings, allocation=replace(settings.allocation, fully_loaded=True))
    assert build_monthly_tables(layout, date(2026, 3, 1), date(2026, 3, 1), on).passed
    row = read(layout, "fully_loaded_costs_monthly", ["2026-03"]).row(0, named=True)
    # One feature in acct-us: its token cost 0.051 (land_mixed_day), the 1.25 tax all its own.
    assert (row["feature_tag"], row["token_cost"], row["shared_cost_share"], row["fully_loaded_cost"]) == ("chat", D("0.051"), D("1.25"), D("1.301"))
    assert read(layout, "cost_per_success_monthly", ["2026-03"])["token_cost"].to_list() == [D("0.051")]  # never mixed in


def test_requests_with_an_allocated_share_are_billed_not_telemetry_only(layout, settings):
    # a1..a3 are billed by their shares of the aggregated rows, x1 by its own row: no logged request
    # of the day is "never billed", in the day's and in the month's reconciliation.
    land_mixed_day(layout)
    run_day(layout, settings)
    assert build_reconciliation(layout, settings, date(2026, 3, 1), date(2026, 3, 1)).passed
    for table, key in (("reconciliation_daily", DAY.isoformat()), ("reconciliation", "2026-03")):
        logged = read(layout, table, [key]).filter(pl.col("billing_currency").is_null()).row(0, named=True)
        assert (logged["telemetry_requests"], logged["telemetry_only_requests"]) == (4, 0), table
        assert logged["status"] == "ok", logged["status_reason"]


def test_unmatched_models_of_the_daily_step_equal_the_one_pass_allocation(layout, settings):
    """The daily step sums the calls outside every pool hour in its join (their own rows as the
    join sums them) and merges them with the pooled calls' losses. The table equals the one-pass
    allocation's (allocate_billing reporting every call) on: a pooled call whose output no pool
    takes (p1), one billed per request for its input only (u1), one whose call names no model
    version while its row does (u2: named by the call's model alone, as the allocation names it),
    one whose rows name two accounts (u3: its rows cover nothing), one never billed (u4)."""
    rows = [
        token_row("0.01", "Input Tokens", "300"),
        focus_row("u1", "0.002", hour="2026-03-02T14:00:00Z"),
        focus_row("u2", "0.002", hour="2026-03-02T15:00:00Z"),
        focus_row("u3", "0.002", hour="2026-03-02T16:00:00Z"),
        focus_row("u3", "0.002", hour="2026-03-02T16:00:00Z", BillingAccountId="acct-eu"),
    ]
    write_focus_csv(layout.landing_focus / "acct-us" / "2026-03" / "export.csv", rows, HEADER)
    calls = [
        llm_call("p1", "s1", "2026-03-02T10:05:00Z", input_tokens=100, output_tokens=100),
        llm_call("u1", "s2", "2026-03-02T14:05:00Z", input_tokens=1000, output_tokens=100),
        llm_call("u2", "s3", "2026-03-02T15:05:00Z", input_tokens=1000, output_tokens=100, model_version=None),
        llm_call("u3", "s4", "2026-03-02T16:05:00Z", input_tokens=1000, output_tokens=100),
        llm_call("u4", "s5", "2026-03-02T17:05:00Z", input_tokens=1000, output_tokens=100),
    ]
    write_events(layout.landing_events / "2026-03-02.jsonl", calls)
    run_day(layout, settings)
    table = read(layout, "unmatched_models")

    billing = without_request_conflicts(scan_staged_focus(layout))
    one_pass = allocate_billing(billing, dedupe_calls(scan_staged_calls(layout)), settings.allocation)
    expected = one_pass.tables.unmatched_models.filter(pl.col("date") == DAY).collect()
    assert table.sort(pl.all()).equals(expected.select(table.columns).sort(pl.all()))
    # by hand: output no_pool = p1, u1, u3, u4 (100 each); input no_pool = u3, u4; u2's output
    # under its model alone ("claude": no billed model), which its row's x_ModelVersion would hide
    lost = {(r["call_model"], r["token_type"], r["reason"]): (r["calls"], r["tokens"]) for r in table.iter_rows(named=True)}
    assert lost == {("m-1", "output", "no_pool"): (4, 400), ("m-1", "input", "no_pool"): (2, 2000), ("claude", "output", "unknown_model"): (1, 100)}
