"""A multi-month backfill gives identical tables through every route (dg.materialize with
partition-range tags, `unitledger materialize`, `dagster asset materialize --partition-range`),
and `unitledger materialize` resumes after a failure without redoing finished months."""

import json
import os
import subprocess
from datetime import date

import dagster as dg
import polars as pl
import pytest

from pipelines.assets import daily_tables, staged_billing, staged_events
from pipelines.automation import FRESHNESS_CHECKS, range_tags
from pipelines.definitions import ALL_ASSETS
from pipelines.monthly import monthly_tables
from pipelines.resources import Warehouse
from tests.builders import outcome, write_events
from tests.compare import assert_same_tables, copy_landing, read_table
from tests.conftest import REPO
from unitledger.cli import main
from unitledger.layout import Layout
from unitledger.steps import backfill
from unitledger.steps.daily import build_daily_tables
from unitledger.tools.generate import generate
from unitledger.warehouse.manifest import read_manifest

START, END = "2026-01-27", "2026-03-03"  # three billing periods, the first and last partial
CONFIG = REPO / "unitledger.toml"


@pytest.fixture(scope="module")
def landed(tmp_path_factory) -> Layout:
    layout = Layout(tmp_path_factory.mktemp("landed") / "data")
    generate(layout.data_dir, start=date(2026, 1, 27), days=36, requests_per_day=20, seed=5)
    return layout


@pytest.fixture(scope="module")
def reference(landed, tmp_path_factory) -> Layout:
    """The range through dg.materialize: staging + daily tables in one range run, then the
    monthly tables in one range run (different partitions definitions: two runs)."""
    layout = Layout(tmp_path_factory.mktemp("reference") / "data")
    copy_landing(landed, layout)
    instance = dg.DagsterInstance.ephemeral()
    resources = {"warehouse": Warehouse(data_dir=str(layout.data_dir), config_path=str(CONFIG))}
    for selection, first, last in [
        ([staged_billing, staged_events, daily_tables], START, END),
        ([monthly_tables], "2026-01", "2026-03"),
    ]:
        result = dg.materialize(
            [*ALL_ASSETS, *FRESHNESS_CHECKS], selection=selection, instance=instance, resources=resources, tags=range_tags(first, last)
        )
        assert result.success
    return layout


def _crash_in_february(build):
    def build_or_crash(layout, settings, start, end):
        if start.month == 2:
            raise RuntimeError("simulated crash")
        return build(layout, settings, start, end)

    return build_or_crash


def _copy(landed: Layout, tmp_path) -> Layout:
    layout = Layout(tmp_path / "data")
    copy_landing(landed, layout)
    return layout


def test_reference_covers_three_months(reference):
    periods = set(read_table(reference, "cost_per_success_monthly")["billing_period"])
    assert periods == {"2026-01", "2026-02", "2026-03"}
    days = read_table(reference, "request_costs")["date"]
    assert days.min() == date(2026, 1, 27) and days.max() == date(2026, 3, 3)


def test_unitledger_materialize_gives_identical_tables_in_month_runs(landed, reference, tmp_path, capsys):
    layout = _copy(landed, tmp_path)
    assert main(["materialize", "--data-dir", str(layout.data_dir), "--config", str(CONFIG), "--start", START, "--end", END]) == 0
    progress = capsys.readouterr().err
    for line in ["1/7 staged landing files", "2/7 daily 2026-01 (5 days", "3/7 daily 2026-02 (28 days", "4/7 daily 2026-03 (3 days",
                 "5/7 monthly 2026-01..2026-03", f"6/7 decision tables and report {layout.report_path}", "7/7 DuckDB views"]:
        assert line in progress
    assert_same_tables(layout, reference)
    assert not (layout.warehouse / "_backfills").exists() or not any((layout.warehouse / "_backfills").iterdir())


def test_dagster_cli_partition_range_gives_identical_tables(landed, reference, tmp_path):
    layout = _copy(landed, tmp_path)
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "UNITLEDGER_DATA_DIR": str(layout.data_dir), "UNITLEDGER_CONFIG": str(CONFIG)}
    in_process = json.dumps({"execution": {"config": {"in_process": {}}}})  # one process: faster to start
    daily = "staged_billing,staged_events,allocation_pools,unrecognized_usage,unmatched_models,allocated_costs,request_costs,intent_costs,cost_per_intent,cost_per_success,cost_breakdown,gateway_gap"
    monthly = "cost_per_intent_monthly,cost_per_success_monthly,cost_breakdown_monthly,allocation_pools_monthly,allocated_costs_monthly,fully_loaded_costs_monthly"
    for select, partitions in [(daily, f"{START}...{END}"), (monthly, "2026-01...2026-03")]:
        command = [str(REPO / ".venv/bin/dagster"), "asset", "materialize", "-m", "pipelines.definitions"]
        command += ["--select", select, "--partition-range", partitions, "--config-json", in_process]
        done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    assert_same_tables(layout, reference)


def test_resume_skips_the_months_finished_before_a_failure(landed, reference, tmp_path, monkeypatch, capsys):
    layout = _copy(landed, tmp_path)
    args = ["materialize", "--data-dir", str(layout.data_dir), "--config", str(CONFIG), "--start", START, "--end", END]
    build = build_daily_tables
    monkeypatch.setattr("unitledger.steps.daily.build_daily_tables", _crash_in_february(build))
    assert main(args) == 1
    assert "Stopped at 2026-02" in capsys.readouterr().err
    record = json.loads((layout.warehouse / "_backfills" / f"{START}_{END}.json").read_text())
    assert record["done"] == ["2026-01"]
    def published(month: str) -> dict[str, list[str]]:  # day → its files (new names on every publish)
        return {d: f for d, f in read_manifest(layout).tables["intent_costs"].items() if d.startswith(month)}

    written = published("2026-01")
    assert len(written) == 5
    assert published("2026-02") == {}

    monkeypatch.setattr("unitledger.steps.daily.build_daily_tables", build)
    assert main(args) == 0
    progress = capsys.readouterr().err
    assert "daily 2026-01: built by the interrupted run, skipped" in progress
    assert "daily 2026-02 (28 days" in progress
    assert published("2026-01") == written
    assert not (layout.warehouse / "_backfills" / f"{START}_{END}.json").exists()
    assert_same_tables(layout, reference)


def test_resume_rebuilds_a_finished_month_whose_inputs_changed(landed, tmp_path, monkeypatch, capsys):
    layout = _copy(landed, tmp_path)
    args = ["materialize", "--data-dir", str(layout.data_dir), "--config", str(CONFIG), "--start", START, "--end", END]
    build = build_daily_tables
    monkeypatch.setattr("unitledger.steps.daily.build_daily_tables", _crash_in_february(build))
    assert main(args) == 1
    capsys.readouterr()
    intents = read_table(layout, "intent_costs").filter(pl.col("date") == date(2026, 1, 29), pl.col("outcome") == "success")
    session = intents["session_id"][0]
    # A late label flips a January session to failure: January has to be rebuilt, not skipped.
    write_events(layout.landing_events / "late.jsonl", [outcome(session, False, "2026-03-20T00:00:00Z", event_id="late-1")])

    monkeypatch.setattr("unitledger.steps.daily.build_daily_tables", build)
    assert main(args) == 0
    progress = capsys.readouterr().err
    assert "rebuilding 2026-01" in progress
    assert "daily 2026-01 (5 days" in progress
    rebuilt = read_table(layout, "intent_costs").filter(pl.col("session_id") == session)
    assert rebuilt["outcome"].to_list() == ["failure"]


def test_month_chunks_cut_the_range_at_month_boundaries():
    assert backfill.month_chunks(date(2026, 1, 27), date(2026, 3, 3)) == [
        (date(2026, 1, 27), date(2026, 1, 31)),
        (date(2026, 2, 1), date(2026, 2, 28)),
        (date(2026, 3, 1), date(2026, 3, 3)),
    ]
    assert backfill.month_chunks(date(2026, 12, 30), date(2027, 1, 2)) == [
        (date(2026, 12, 30), date(2026, 12, 31)),
        (date(2027, 1, 1), date(2027, 1, 2)),
    ]


def test_materialize_refuses_a_range_beyond_the_last_complete_day(landed, tmp_path):
    layout = _copy(landed, tmp_path)
    with pytest.raises(SystemExit, match="after the last complete UTC day"):
        main(["materialize", "--data-dir", str(layout.data_dir), "--config", str(CONFIG), "--start", "2026-01-27", "--end", "2099-01-01"])
