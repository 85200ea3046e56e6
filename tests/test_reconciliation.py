"""Reconciliation: every billed cent split once, expectations worked out by hand (Decimal) or from
the source file by an independent route; invoices, tokens, conflicts, thresholds, the real sample."""

import csv
from dataclasses import replace
from datetime import date
from decimal import Decimal

import dagster as dg
import polars as pl
import pytest

from pipelines.definitions import defs
from pipelines.reconciliation import reconciliation_parts, reconciliation_tables
from pipelines.resources import Warehouse
from tests.builders import focus_row, llm_call, write_events, write_focus_csv
from tests.conftest import FOCUS_SAMPLE, REPO, TODAY
from unitledger.checks.conservation import delta_check, reconciliation_conservation_check
from unitledger.cli import main
from unitledger.sources.files import InputFileError
from unitledger.sources.focus import scan_quarantined_focus, scan_staged_focus
from unitledger.steps.daily import build_daily_tables
from unitledger.steps.reconciliation import build_reconciliation, build_reconciliation_daily
from unitledger.steps.staging import stage_billing, stage_events
from unitledger.warehouse.manifest import scan_table

MARCH = date(2026, 3, 1)
D = Decimal


def land(layout, more_us_rows=()):
    """acct-us (USD, INV-1) and acct-eu (EUR, INV-EU) in March 2026; every case of the split
    (`more_us_rows`: added to acct-us's delivery)."""
    write_focus_csv(
        layout.landing_focus / "acct-us" / "2026-03" / "d1" / "export.csv",
        [
            focus_row("r1", "0.010000000001", SkuMeter="Input Tokens", ConsumedQuantity="1000"),
            focus_row("r1", "0.020000000000", SkuMeter="Output Tokens", ConsumedQuantity="100"),
            focus_row("r2", "0.030000000000"),  # telemetry never saw r2
            # called 10 minutes before the period, the day before: its call's (billing_delay_days = 2)
            focus_row("r-early", "0.011000000000", hour="2026-03-01T00:00:00Z"),
            # called 9 days before: too far to be its call's cost, within the detection horizon: late
            focus_row("r-old", "0.012000000000", hour="2026-03-01T00:00:00Z"),
            focus_row("r-x", "0.050000000000"),  # also billed to acct-eu in EUR: a conflict
            focus_row("r4", "0.004000000000", SkuMeter="Input Tokens", ConsumedQuantity="900"),
            focus_row("r4", "0.000500000000", SkuMeter="Cache Read Tokens", ConsumedQuantity="100"),
            # billed as if telemetry's input had no cache reads: a token mismatch
            focus_row("r5", "0.006000000000", SkuMeter="Input Tokens", ConsumedQuantity="1000"),
            focus_row("r6", "0.070000000000", ChargeCategory="Refund"),  # quarantined, cost readable
            focus_row("r7", "0.080000000000", BilledCost="abc"),  # quarantined, BilledCost unreadable
            focus_row(None, "1.250000000000", ChargeCategory="Tax", ServiceProviderName="Unitgate"),
            focus_row(None, "-0.500000000000", ChargeCategory="Credit", ServiceProviderName="Unitgate"),
            *more_us_rows,
        ],
    )
    write_focus_csv(
        layout.landing_focus / "acct-eu" / "2026-03" / "d1" / "export.csv",
        [
            focus_row("r-x", "0.040000000000", BillingAccountId="acct-eu", BillingCurrency="EUR", InvoiceId="INV-EU"),
            focus_row("r8", "0.090000000000", BillingAccountId="acct-eu", BillingCurrency="EUR", InvoiceId="INV-EU"),
        ],
    )
    write_events(
        layout.landing_events / "calls.jsonl",
        [
            llm_call("r1", "s1", "2026-03-02T10:15:00Z", input_tokens=1000, output_tokens=100),
            llm_call("r-early", "s2", "2026-02-28T23:50:00Z", output_tokens=0),
            llm_call("r-old", "s3", "2026-02-20T12:00:00Z"),
            llm_call("r-x", "s4", "2026-03-02T10:20:00Z"),
            llm_call("r4", "s5", "2026-03-02T10:30:00Z", input_tokens=1000, output_tokens=0, cache_read_input_tokens=100),
            llm_call("r5", "s5", "2026-03-02T10:40:00Z", input_tokens=1000, output_tokens=0, cache_read_input_tokens=100),
            llm_call("r8", "s6", "2026-03-02T11:00:00Z", provider="openai", model="gpt", output_tokens=0),
            llm_call("tel-only", "s7", "2026-03-03T09:00:00Z"),
        ],
    )


def reconcile(layout, settings, first=MARCH, last=MARCH):
    assert stage_billing(layout, settings, TODAY).passed
    assert stage_events(layout).passed
    result = build_reconciliation(layout, settings, first, last)
    assert result.passed, result.failures()
    return result


def table(layout, name, periods=("2026-03",)):
    return scan_table(layout, name, list(periods)).collect()


def row(frame, **where):
    found = frame.filter(**{k: v for k, v in where.items()}) if where else frame
    assert found.height == 1, (where, found)
    return found.row(0, named=True)


def test_every_cent_lands_in_exactly_one_part(layout, settings):
    land(layout)
    reconcile(layout, settings)
    rec = table(layout, "reconciliation")

    us = row(rec, billing_account_id="acct-us", service_provider_name="Anthropic")
    attributed = D("0.010000000001") + D("0.02") + D("0.011") + D("0.004") + D("0.0005") + D("0.006")  # r1 r-early r4 r5
    unmatched = D("0.03")  # r2
    assert us["attributed_cost"] == attributed
    assert us["unmatched_billing_cost"] == unmatched
    assert us["late_billing_cost"] == us["late_effective_cost"] == D("0.012")  # r-old
    assert us["conflicting_cost"] == D("0.05")
    assert us["quarantined_cost"] == D("0.07")  # r7's BilledCost is unreadable: counted, not summed
    assert us["unattributable_cost"] == 0
    assert us["billed_total"] == attributed + unmatched + D("0.012") + D("0.05") + D("0.07")
    assert us["delta"] == 0 and us["effective_delta"] == 0
    # EffectiveCost of r7 is readable: it is in the effective split.
    assert us["quarantined_effective_cost"] == D("0.07") + D("0.08")
    assert (us["billing_rows"], us["quarantined_rows"], us["quarantined_rows_unknown_cost"]) == (9, 2, 1)
    assert (us["attributed_requests"], us["unmatched_requests"], us["late_requests"], us["conflicting_requests"]) == (4, 1, 1, 1)
    assert us["coverage"] == pytest.approx(float(attributed / us["billed_total"]), rel=1e-12)

    fees = row(rec, billing_account_id="acct-us", service_provider_name="Unitgate")
    assert fees["unattributable_cost"] == fees["billed_total"] == D("0.75")
    assert fees["coverage"] == 0.0

    eu = row(rec, billing_account_id="acct-eu")
    assert (eu["billing_currency"], eu["invoice_id"]) == ("EUR", "INV-EU")
    assert eu["conflicting_cost"] == D("0.04") and eu["attributed_cost"] == D("0.09")

    # Calls of March: r1 r-x r4 r5 tel-only (anthropic), r8 (openai); only tel-only was never billed.
    logged = rec.filter(pl.col("billing_account_id").is_null()).sort("service_provider_name")
    assert logged["service_provider_name"].to_list() == ["anthropic", "openai"]
    assert logged["telemetry_requests"].to_list() == [5, 1]
    assert logged["telemetry_only_requests"].to_list() == [1, 0]
    assert logged["billed_total"].to_list() == [0, 0]


def test_status_follows_the_thresholds_with_reasons(layout, settings):
    land(layout)
    reconcile(layout, settings)
    rec = table(layout, "reconciliation")
    us = row(rec, billing_account_id="acct-us", service_provider_name="Anthropic")
    assert us["status"] == "fail"
    reason = us["status_reason"]
    assert "1 quarantined row(s) with an unreadable or out-of-range BilledCost" in reason
    assert "20.0% of billed requests unknown to telemetry (fail above 5.00%)" in reason  # 1 of 5
    assert "1 request(s) billed late, 0.012 of late_billing_cost" in reason
    assert "2 row(s) quarantined, 0.07 of them counted as quarantined_cost" in reason
    assert "1 request(s) billed to two accounts or currencies" in reason
    assert row(rec, billing_account_id="acct-us", service_provider_name="Unitgate")["status"] == "ok"
    anthropic = row(rec, service_provider_name="anthropic")
    assert anthropic["status"] == "warn" and "20.0% of logged requests never billed" in anthropic["status_reason"]

    # Looser thresholds: the same data, different statuses.
    loose = replace(settings, reconciliation=replace(settings.reconciliation, unmatched_requests_warn=0.4, unmatched_requests_fail=0.5, telemetry_only_warn=0.5))
    build_reconciliation(layout, loose, MARCH, MARCH)
    rec = table(layout, "reconciliation")
    assert "unknown to telemetry" not in row(rec, billing_account_id="acct-us", service_provider_name="Anthropic")["status_reason"]
    assert row(rec, service_provider_name="anthropic")["status"] == "ok"


def test_conflicting_request_is_listed_and_left_out_of_request_costs(layout, settings):
    land(layout)
    reconcile(layout, settings)
    conflicts = table(layout, "request_conflicts").sort("billing_account_id")
    assert conflicts.select("request_id", "billing_account_id", "billing_currency", "billed_cost").rows() == [
        ("r-x", "acct-eu", "EUR", D("0.04")),
        ("r-x", "acct-us", "USD", D("0.05")),
    ]
    # The daily tables run (and their conservation check passes) without summing EUR into USD.
    daily = build_daily_tables(layout, settings, date(2026, 3, 2), date(2026, 3, 2))
    assert daily.passed, daily.failures()
    requests = scan_table(layout, "request_costs", ["2026-03-02"]).collect()
    r_x = row(requests, request_id="r-x")
    assert (r_x["match_status"], r_x["billing_rows"], r_x["billed_cost"]) == ("telemetry_only", 0, None)
    assert row(requests, request_id="r8")["billed_cost"] == D("0.09")


def test_tokens_compared_with_the_cache_convention(layout, settings):
    land(layout)
    reconcile(layout, settings)
    mismatches = table(layout, "token_mismatches")
    # r4 bills 900 input + 100 cache read for telemetry's 1000 input (cache included): a match.
    # r5 bills 1000 input and no cache read for the same telemetry: input and cache_read differ.
    assert mismatches["request_id"].to_list() == ["r5"]
    r5 = mismatches.row(0, named=True)
    assert r5["mismatched"] == "input,cache_read"
    assert (r5["billed_input_tokens"], r5["telemetry_input_tokens"]) == (D(1000), 900)
    assert (r5["billed_cache_read_tokens"], r5["telemetry_cache_read_tokens"]) == (D(0), 100)
    counts = table(layout, "token_reconciliation").sort("service_provider_name", "model")
    # Compared: token rows attributed to a call: not r2 (no call), r-old (billed late), r-x (conflicting).
    assert counts.select("service_provider_name", "model", "requests_compared", "requests_mismatched").rows() == [
        ("Anthropic", "claude", 4, 1),  # r1 r-early r4 r5
        ("Anthropic", "gpt", 1, 0),  # r8: billed under the row's provider, model from telemetry
    ]


def test_invoices_from_accounts_payable(layout, settings):
    land(layout)
    us_total = D("0.010000000001") + D("0.02") + D("0.03") + D("0.011") + D("0.012") + D("0.05") + D("0.004") + D("0.0005") + D("0.006") + D("0.07") + D("0.75")
    invoices = layout.landing_invoices / "ap-2026-03.csv"
    invoices.parent.mkdir(parents=True)
    invoices.write_text(
        "invoice_id,billing_account_id,billing_period,invoice_total,currency\n"
        f"INV-1,acct-us,2026-03,{us_total},USD\n"
        "INV-EU,acct-eu,2026-03,0.14,EUR\n"  # FOCUS has 0.13
        "INV-404,acct-us,2026-03,12.5,USD\n"  # not in FOCUS at all
    )
    reconcile(layout, settings)
    rec = table(layout, "reconciliation")
    for provider in ("Anthropic", "Unitgate"):
        us = row(rec, billing_account_id="acct-us", invoice_id="INV-1", service_provider_name=provider)
        assert (us["invoice_total"], us["invoice_delta"]) == (us_total, 0)
    eu = row(rec, invoice_id="INV-EU")
    assert eu["invoice_delta"] == D("-0.01") and eu["status"] == "fail"
    assert "FOCUS differs from the invoice total by -0.01" in eu["status_reason"]
    missing = row(rec, invoice_id="INV-404")
    assert (missing["billed_total"], missing["invoice_delta"], missing["status"]) == (0, D("-12.5"), "fail")


def test_bad_invoice_line_fails_naming_file_line_and_column(layout, settings):
    land(layout)
    invoices = layout.landing_invoices / "ap.csv"
    invoices.parent.mkdir(parents=True)
    invoices.write_text("invoice_id,billing_account_id,billing_period,invoice_total,currency\nINV-1,acct-us,2026-03,12.x,USD\n")
    stage_billing(layout, settings, TODAY)
    stage_events(layout)
    with pytest.raises(InputFileError, match=r"^ap\.csv: line 2: invoice_total is not a decimal number: 12\.x$"):
        build_reconciliation(layout, settings, MARCH, MARCH)
    assert not layout.table("reconciliation").exists()


def test_days_add_up_to_the_month(layout, settings):
    land(layout)
    reconcile(layout, settings)
    daily = build_reconciliation_daily(layout, settings, MARCH, date(2026, 3, 31))
    assert daily.passed, daily.failures()
    days = scan_table(layout, "reconciliation_daily").collect()
    money = ["billed_total", "attributed_cost", "unmatched_billing_cost", "conflicting_cost", "unattributable_cost",
             "quarantined_cost", "effective_total", "quarantined_effective_cost"]
    counts = ["billing_rows", "quarantined_rows", "quarantined_rows_unknown_cost", "telemetry_only_requests"]
    keys = ["billing_period", "billing_account_id", "invoice_id", "service_provider_name", "billing_currency"]
    summed = days.group_by(keys).agg(pl.col(*money, *counts).sum()).sort(keys, nulls_last=True)
    month = table(layout, "reconciliation").select(*keys, *money, *counts).sort(keys, nulls_last=True)
    assert summed.select(month.columns).equals(month)


def test_checks_can_fail(layout, settings):
    land(layout)
    reconcile(layout, settings)
    published = scan_table(layout, "reconciliation", ["2026-03"])
    rows = scan_staged_focus(layout)
    held = scan_quarantined_focus(layout)
    period = pl.col("BillingPeriodStart").dt.strftime("%Y-%m")
    held_period = pl.col("billing_period_start").dt.strftime("%Y-%m")
    assert reconciliation_conservation_check(published, rows, held, "billing_period", period, held_period).passed
    lost = published.filter(pl.col("service_provider_name") != "Unitgate")
    failed = reconciliation_conservation_check(lost, rows, held, "billing_period", period, held_period)
    assert not failed.passed and "2026-03 USD: billed_total" in failed.description
    uneven = published.with_columns(delta=pl.when(pl.col("invoice_id") == "INV-EU").then(pl.lit(D("0.01"))).otherwise(pl.col("delta")))
    assert delta_check(published).passed
    assert "delta 0.010000000000000000" in delta_check(uneven).description


def test_real_focus_sample_reconciles_to_the_cent(layout, settings):
    target = layout.landing_focus / "sample" / FOCUS_SAMPLE.name
    target.parent.mkdir(parents=True)
    target.write_bytes(FOCUS_SAMPLE.read_bytes())
    # The sample bills 2024: the pipeline starts then (earlier periods would be quarantined).
    reconcile(layout, replace(settings, start_date=date(2024, 9, 1)), date(2024, 9, 1), date(2024, 10, 1))

    expected: dict[tuple, list[Decimal]] = {}
    with open(FOCUS_SAMPLE, newline="") as fh:
        for r in csv.DictReader(fh):
            key = (r["BillingPeriodStart"][:7], r["BillingAccountId"], r["ProviderName"], r["BillingCurrency"])
            sums = expected.setdefault(key, [D(0), D(0), 0])
            sums[0] += D(r["BilledCost"])
            sums[1] += D(r["EffectiveCost"])
            sums[2] += 1
    rec = table(layout, "reconciliation", ["2024-09", "2024-10"])
    got = {
        (r["billing_period"], r["billing_account_id"], r["service_provider_name"], r["billing_currency"]): [
            r["billed_total"], r["effective_total"], r["billing_rows"]
        ]
        for r in rec.iter_rows(named=True)
    }
    assert got == expected
    # FOCUS 1.0 has no request ids: everything is unattributable, nothing attributed or lost.
    assert rec["unattributable_cost"].to_list() == rec["billed_total"].to_list()
    for column in ("attributed_cost", "unmatched_billing_cost", "conflicting_cost", "quarantined_cost", "delta", "effective_delta"):
        assert set(rec[column]) == {0}, column
    assert rec["invoice_id"].null_count() == rec.height  # FOCUS 1.0 sample has no InvoiceId


def test_cli_prints_the_month_and_fails_on_a_failing_row(layout, settings, capsys):
    land(layout)
    reconcile(layout, settings)
    assert main(["reconcile", "--data-dir", str(layout.data_dir), "--month", "2026-03"]) == 1
    out = capsys.readouterr().out
    assert "acct-us" in out and "INV-EU" in out and "0.1400000" not in out
    assert "unreadable or out-of-range" in out
    # Every part holding money this month is printed (so the printed parts add up to the
    # total), parts that are 0 on every row are not.
    published = scan_table(layout, "reconciliation", ["2026-03"]).collect()
    header = next(line for line in out.splitlines() if "billed_total" in line).split()
    for part in ("attributed_cost", "unmatched_billing_cost", "late_billing_cost", "conflicting_cost", "allocated_cost",
                 "unlogged_usage_cost", "unmatched_pool_cost", "unrecognized_usage_cost", "unattributable_cost", "quarantined_cost"):
        shown = part.removesuffix("_cost").removesuffix("_billing")
        assert (shown in header) == (published[part] != 0).any(), part
    assert {"quarantined", "unattributable"} <= set(header)
    assert main(["reconcile", "--data-dir", str(layout.data_dir), "--month", "2026-04"]) == 1
    assert "2026-04 is not reconciled yet" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["reconcile", "--data-dir", str(layout.data_dir), "--month", "2026-3/../x"])


def test_dagster_assets_reconcile_a_month_with_their_checks(layout):
    land(layout)
    resources = {"warehouse": Warehouse(data_dir=str(layout.data_dir), config_path=str(REPO / "unitledger.toml"))}
    assets = [*defs.assets]
    staged = dg.materialize(assets, selection=["staged_billing", "staged_events"], resources=resources, instance=dg.DagsterInstance.ephemeral())
    assert staged.success
    result = dg.materialize(
        assets,
        selection=[reconciliation_parts, reconciliation_tables],
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
        tags={"dagster/asset_partition_range_start": "2026-03", "dagster/asset_partition_range_end": "2026-03"},
        raise_on_error=False,
    )
    assert result.success  # the failing rows warn; no blocking check fails
    checks = {(c.asset_key.to_user_string(), c.check_name): c for c in result.get_asset_check_evaluations()}
    assert all(checks[("reconciliation", name)].passed for name in ("schema", "delta_zero", "conservation", "quarantine_placed"))
    status = checks[("reconciliation", "status")]
    assert not status.passed and status.severity == dg.AssetCheckSeverity.WARN
    assert not checks[("token_reconciliation", "tokens_match")].passed
    meta = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert meta["reconciliation"]["billed_total"].value == {"EUR": "0.130000000000000000", "USD": "0.963500000001000000"}


def test_rerun_gives_the_same_rows(layout, settings):
    land(layout)
    reconcile(layout, settings)
    tables = ["reconciliation", "token_reconciliation", "token_mismatches", "request_conflicts"]
    first = {name: table(layout, name) for name in tables}
    reconcile(layout, settings)
    for name, frame in first.items():
        again = table(layout, name)
        assert again.sort(again.columns, nulls_last=True).equals(frame.sort(frame.columns, nulls_last=True)), name


def test_billing_periods_no_reconciliation_covers_are_quarantined_with_their_cost(layout, settings):
    """Rows of billing periods outside pipeline.start_date..today (1970, 2099, a month before the
    start) would be in no table and no message: they are quarantined with the reason and their
    cost; staged + quarantined still hold every landed cent. A later start date or today is
    decided again by the next staging run."""
    def period(start: str, end: str, hour: str) -> dict:
        return {"BillingPeriodStart": start, "BillingPeriodEnd": end, "hour": hour}

    landed = {
        "r1": ("0.010000000000", period("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", "2026-03-02T10:00:00Z")),
        "r-1970": ("0.020000000000", period("1970-01-01T00:00:00Z", "1970-02-01T00:00:00Z", "2026-03-02T11:00:00Z")),
        "r-2099": ("0.040000000000", period("2099-01-01T00:00:00Z", "2099-02-01T00:00:00Z", "2099-01-02T10:00:00Z")),
        "r-dec": ("0.080000000000", period("2025-12-01T00:00:00Z", "2026-01-01T00:00:00Z", "2025-12-02T10:00:00Z")),
    }
    rows = []
    for request, (cost, p) in landed.items():
        hour = p.pop("hour")
        rows.append(focus_row(request, cost, hour=hour, **p))
    write_focus_csv(layout.landing_focus / "acct-us" / "export.csv", rows)
    write_events(layout.landing_events / "calls.jsonl", [llm_call("r1", "s1", "2026-03-02T10:15:00Z"), llm_call("r-1970", "s2", "2026-03-02T11:05:00Z")])
    result = stage_billing(layout, settings, date(2026, 3, 15))
    assert stage_events(layout).passed
    assert result.passed and result.tables["staged_billing"]["rows_outside_billing_periods"] == 3
    warning = result.warnings["staged_billing"][0]
    assert not warning.passed and "3 FOCUS row(s) of billing periods outside pipeline.start_date..today" in warning.description

    def held() -> pl.DataFrame:
        # as readers see them: the published quarantine table's partition of these rows
        return scan_table(layout, "quarantine", ["focus_periods"]).collect().sort("billed_cost")

    outside = held()
    assert outside.select("source_file", "source_line", "column", "billed_cost").rows() == [
        ("acct-us/export.csv", 3, "BillingPeriodStart", D("0.02")),
        ("acct-us/export.csv", 4, "BillingPeriodStart", D("0.04")),
        ("acct-us/export.csv", 5, "BillingPeriodStart", D("0.08")),
    ]
    assert outside["reason"][0] == "billing period 1970-01 is outside pipeline.start_date..today (2026-01..2026-03): no reconciliation covers it"
    assert outside["reason"][2].startswith("billing period 2025-12 is outside")
    # Every landed cent is staged (and current) or quarantined, once.
    staged = scan_staged_focus(layout).collect()
    assert staged["x_RequestId"].to_list() == ["r1"]
    assert staged["BilledCost"].sum() + outside["billed_cost"].sum() == sum(D(cost) for cost, _ in landed.values())
    # The quarantined row is in no daily table: its request r-1970 is telemetry-only.
    assert build_daily_tables(layout, settings, date(2026, 3, 2), date(2026, 3, 2)).passed
    requests = scan_table(layout, "request_costs", ["2026-03-02"]).collect().sort("request_id")
    assert requests.select("request_id", "match_status").rows() == [("r-1970", "telemetry_only"), ("r1", "matched")]

    # A start date in December 2025 and a today in 2099: decided again, nothing stale.
    assert stage_billing(layout, replace(settings, start_date=date(2025, 12, 1)), date(2099, 1, 20)).passed
    assert held().select("billed_cost").to_series().to_list() == [D("0.02")]
    assert sorted(scan_staged_focus(layout).collect()["x_RequestId"]) == ["r-2099", "r-dec", "r1"]


def _published(layout, periods=("2026-03",)):
    tables = ["reconciliation", "token_reconciliation", "token_mismatches", "request_conflicts"]
    frames = {name: table(layout, name, periods) for name in tables}
    return {name: f.sort([c for c, t in f.schema.items() if not t.is_float()], nulls_last=True) for name, f in frames.items()}


@pytest.mark.parametrize("buckets", [2, 5])
def test_month_in_buckets_equals_the_month_in_one_part(layout, settings, buckets):
    """The month summed bucket by bucket of request ids (plus the rows without one, by day) equals
    the month in one part, to the last digit: a request billed on two days (r9, 2 and 3 March) and
    one billed twice to two accounts (r-x) are each counted once, whichever bucket holds them."""
    from unitledger.steps.reconciliation import plan_month, prepare_parts, reconcile_part

    land(layout, [focus_row("r9", "0.001000000000"), focus_row("r9", "0.002000000000", hour="2026-03-03T08:00:00Z")])
    write_events(layout.landing_events / "more.jsonl", [llm_call("r9", "s9", "2026-03-02T09:00:00Z")])
    reconcile(layout, settings)  # 3 buckets (tests/conftest.py)
    one = build_reconciliation(layout, settings, MARCH, MARCH, buckets=1)
    assert one.passed, one.failures()
    whole = _published(layout)
    us = row(whole["reconciliation"], billing_account_id="acct-us", service_provider_name="Anthropic")
    assert us["attributed_requests"] == 5 and us["attributed_cost"] == D("0.051500000001") + D("0.003")  # r9 once, both rows

    plan = plan_month(layout, MARCH, buckets)
    assert plan.parts() == [f"bucket_{b:04}" for b in range(buckets)] + ["unrequested"]
    # Every row with a request id is in exactly one bucket's figures.
    out = layout.data_dir / "parts"
    prepare_parts(layout, settings, plan, out)
    # Each bucket's files hold the rows and calls of its request ids only; every row with one is in a bucket.
    staged = scan_staged_focus(layout).collect()
    for source, column in (("focus", "x_RequestId"), ("calls", "request_id")):
        split = [pl.read_parquet(out / "split" / source / f"bucket={b}" / "*.parquet") for b in range(buckets)]
        for b, rows in enumerate(split):
            assert (rows[column].drop_nulls().hash(seed=0) % buckets == b).all()
        assert sum(1 for rows in split if rows.height) > 1
    focus_split = pl.concat(pl.read_parquet(out / "split" / "focus" / f"bucket={b}" / "*.parquet") for b in range(buckets))
    assert sorted(focus_split["x_RequestId"]) == sorted(staged["x_RequestId"].drop_nulls())
    for part in plan.parts():
        reconcile_part(layout, settings, plan, part, out)
    sums = [pl.read_parquet(f)["billing_rows"].sum() for f in plan.files(out, "figures")]
    assert sum(sums[:-1]) == staged["x_RequestId"].is_not_null().sum()
    assert sums[-1] == staged["x_RequestId"].is_null().sum()
    assert sum(1 for s in sums[:-1] if s > 0) > 1  # the rows really are spread over buckets

    parted = build_reconciliation(layout, settings, MARCH, MARCH, buckets=buckets)
    assert parted.passed, parted.failures()
    again = _published(layout)
    for name, frame in whole.items():
        assert again[name].equals(frame), name
