"""The daily tables fanned out as Dagster steps (job daily_fanout: a step per hash bucket of
requests for the join and of sessions for the intents, one writer) publish exactly the tables of
the single-process build (steps.daily.build_daily_tables in one bucket), on the multiprocess
executor, on generated days of which one account is billed in aggregate (allocated by token share)."""

from datetime import date
from decimal import Decimal

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from pipelines.daily import daily_fanout
from pipelines.definitions import defs
from tests.builders import focus_row, llm_call, outcome, write_events, write_focus_csv
from tests.compare import read_held, read_table, staged_copy
from tests.conftest import REPO, TODAY
from unitledger.config import load_settings
from unitledger.layout import Layout
from unitledger.steps.daily import DAILY_TABLES, build_daily_tables, daily_parts_folder
from unitledger.tools.generate import generate

CONFIG = REPO / "unitledger.toml"
FIRST, LAST = date(2026, 2, 24), date(2026, 2, 26)
BUCKETS = 3


def daily_fanout_on_processes() -> dg.JobDefinition:
    return defs.resolve_job_def(daily_fanout.name)


def _settled_and_held(layout: Layout) -> None:
    """Requests the buckets cannot place alone (settle_daily) and rows held back, beside the
    generated ones: x-r0 (called 02-22) billed again on 02-26, late; x-b billed on 02-25 and 02-26
    without a call, billing-only; x-r1 (called 02-24) billed on its day and 3 days later (spread);
    session x-s2 billed in USD and EUR (its calls quarantined)."""
    period = {"BillingPeriodStart": "2026-02-01T00:00:00Z", "BillingPeriodEnd": "2026-03-01T00:00:00Z", "BillingAccountId": "acct-x"}
    euro = {**period, "BillingAccountId": "acct-x-eu", "BillingCurrency": "EUR", "InvoiceId": "INV-EU"}
    rows = [("x-r0", "2026-02-22", period), ("x-r0", "2026-02-26", period), ("x-b", "2026-02-25", period), ("x-b", "2026-02-26", period),
            ("x-r1", "2026-02-24", period), ("x-r1", "2026-02-27", period), ("x-r5", "2026-02-25", period), ("x-r6", "2026-02-25", euro)]  # fmt: skip
    write_focus_csv(
        layout.landing_focus / "acct-x" / "2026-02" / "export.csv",
        [focus_row(request, "0.010000000000", hour=f"{day}T10:00:00Z", **columns) for request, day, columns in rows],
    )
    calls = [("x-r0", "x-s0", "2026-02-22"), ("x-r1", "x-s1", "2026-02-24"), ("x-r5", "x-s2", "2026-02-25"), ("x-r6", "x-s2", "2026-02-25")]
    write_events(
        layout.landing_events / "extra.jsonl",
        [llm_call(request, session, f"{day}T10:15:00Z") for request, session, day in calls] + [outcome("x-s1", True, "2026-02-24T12:00:00Z")],
    )


@pytest.fixture(scope="module")
def landed(tmp_path_factory) -> Layout:
    """Three generated days, restated deliveries included, one account billed in aggregate; with
    the hand-made rows of _settled_and_held."""
    layout = Layout(tmp_path_factory.mktemp("landed") / "data")
    generate(layout.data_dir, start=FIRST, days=3, requests_per_day=150, seed=12, restated_delivery=True, billing="aggregated")
    _settled_and_held(layout)
    return layout


@pytest.fixture(scope="module")
def single_process(landed, tmp_path_factory) -> Layout:
    layout = staged_copy(landed, tmp_path_factory.mktemp("single"), CONFIG)
    result = build_daily_tables(layout, load_settings(CONFIG), FIRST, LAST, buckets=1)
    assert result.passed, result.failures()
    return layout


def test_fanned_out_on_processes_equals_the_single_process_build(landed, single_process, tmp_path):
    layout = staged_copy(landed, tmp_path, CONFIG)
    run_config = {
        "resources": {"warehouse": {"config": {"data_dir": str(layout.data_dir), "config_path": str(CONFIG), "today": TODAY.isoformat()}}},
        "ops": {"plan_daily": {"config": {"buckets": BUCKETS}}},
        "execution": {"config": {"multiprocess": {"max_concurrent": 2}}},
    }
    tags = {"dagster/asset_partition_range_start": FIRST.isoformat(), "dagster/asset_partition_range_end": LAST.isoformat()}
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        result = dg.execute_job(dg.reconstructable(daily_fanout_on_processes), instance=instance, run_config=run_config, tags=tags)
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        steps = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
        processes = {e.pid for e in result.all_events if e.event_type_value == "STEP_START"}
        materialized = {
            (e.asset_key.path[-1], e.partition) for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"
        }
    # Each bucket's join and intents were steps of their own, in processes of their own.
    buckets = [f"bucket_{b:04}" for b in range(BUCKETS)]
    assert {f"join_daily_bucket[{b}]" for b in buckets} | {f"intents_daily_bucket[{b}]" for b in buckets} <= steps, sorted(steps)
    assert {"plan_daily", "settle_daily", "publish_daily"} <= steps
    assert len(processes) > 2
    days = ["2026-02-24", "2026-02-25", "2026-02-26"]
    assert materialized == {(name, day) for name in DAILY_TABLES for day in days}
    assert not daily_parts_folder(layout, FIRST, LAST).exists()  # removed once published

    # The data exercises what the buckets must get right: allocated shares, intents, several buckets' requests.
    costs = read_table(single_process, "request_costs")
    assert costs.filter(pl.col("cost_source") == "invoice_allocated").height > 0
    assert read_table(single_process, "allocation_pools").height > 0
    assert read_table(single_process, "intent_costs").height > 0
    matched = costs.filter(pl.col("request_id").str.starts_with("x-")).sort("request_id").select("request_id", "date", "match_status", "effective_cost")
    assert matched.rows() == [
        ("x-b", date(2026, 2, 25), "billing_only", Decimal("0.02")),  # its rows of 02-25 and 02-26
        ("x-r1", date(2026, 2, 24), "matched", Decimal("0.01")),  # its row of 02-27 is that day's (late)
        ("x-r5", date(2026, 2, 25), "matched", Decimal("0.01")),
        ("x-r6", date(2026, 2, 25), "matched", Decimal("0.01")),
    ]
    reference = read_held(single_process)
    assert sorted(reference) == ["2026-02-25", "2026-02-26"]  # x-s2's calls; x-r0's late row
    for name in DAILY_TABLES:
        assert_frame_equal(read_table(layout, name), read_table(single_process, name), check_exact=False, rel_tol=1e-12, abs_tol=1e-12)
    held = read_held(layout)
    assert held.keys() == reference.keys()
    for day in held:
        assert_frame_equal(held[day].sort(held[day].columns), reference[day].sort(reference[day].columns))
