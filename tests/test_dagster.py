"""Dagster wiring: definitions load, the nightly schedule covers yesterday, partitions materialize
in an ephemeral instance, and failing blocking checks stop the run."""

from datetime import datetime, timezone

import dagster as dg
import polars as pl

from pipelines.automation import DAILY_ASSETS
from pipelines.definitions import defs
from pipelines.resources import Warehouse
from tests.builders import focus_row, llm_call, outcome, write_events, write_focus_csv
from tests.conftest import REPO
from unitledger.cli import main
from unitledger.warehouse.manifest import scan_table

DAILY_TABLES = ["request_costs", "intent_costs", "cost_per_intent", "cost_per_success", "cost_breakdown"]


def land(layout):
    write_focus_csv(
        layout.landing_focus / "acct" / "2026-03" / "export.csv",
        [focus_row("r1"), focus_row("r2", hour="2026-03-03T09:00:00Z"), focus_row(None, "2.00", ChargeCategory="Tax")],
    )
    write_events(
        layout.landing_events / "events.jsonl",
        [llm_call("r1", "s1"), llm_call("r2", "s2", "2026-03-03T09:30:00Z"), outcome("s1", True), outcome("s2", False)],
    )


def materialize_range(layout, start, end, config=REPO / "unitledger.toml"):
    return dg.materialize(
        DAILY_ASSETS,
        instance=dg.DagsterInstance.ephemeral(),
        resources={"warehouse": Warehouse(data_dir=str(layout.data_dir), config_path=str(config))},
        tags={"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end},
        raise_on_error=False,
    )


def test_definitions_load_with_assets_checks_and_schedule():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"staged_billing", "staged_events", *DAILY_TABLES} <= keys
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert ("request_costs", "conservation") in checks
    assert all((t, "schema") in checks for t in DAILY_TABLES)
    assert defs.resolve_schedule_def("nightly") is not None


def test_nightly_schedule_covers_yesterday_in_one_range_run(tmp_path):
    schedule = defs.resolve_schedule_def("nightly")
    when = datetime(2026, 3, 5, 2, 0, tzinfo=timezone.utc)
    resources = {"warehouse": Warehouse(data_dir=str(tmp_path), config_path=str(REPO / "unitledger.toml"))}
    with dg.build_schedule_context(scheduled_execution_time=when, resources=resources) as context:
        requests = schedule.evaluate_tick(context).run_requests
    assert len(requests) == 1
    tags = requests[0].tags
    # Yesterday is the last day; the default window also keeps February until its invoice is final.
    assert tags["dagster/asset_partition_range_end"] == "2026-03-04"
    assert tags["dagster/asset_partition_range_start"] == "2026-02-01"


def test_range_materializes_every_table_and_reports_metadata(layout):
    land(layout)
    result = materialize_range(layout, "2026-03-02", "2026-03-03")
    assert result.success
    for table in DAILY_TABLES:
        frame = scan_table(layout, table, ["2026-03-02", "2026-03-03"]).collect()
        assert set(frame["date"].cast(pl.String)) == {"2026-03-02", "2026-03-03"}, table
    events = result.get_asset_materialization_events()
    meta = {e.asset_key.to_user_string(): e.materialization.metadata for e in events}
    assert meta["request_costs"]["dagster/row_count"].value == 2
    assert meta["request_costs"]["effective_cost"].value == {"USD": "0.020000000000000000"}
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)
    assert (layout.data_dir / "warehouse.duckdb").exists()


def test_failing_blocking_check_stops_the_run_and_publishes_nothing(layout, tmp_path):
    land(layout)
    config = tmp_path / "eur-only.toml"
    config.write_text('[labor.EUR]\ndefault = { flat = "1.00" }\n')  # no USD labor cost: s2's failure has none
    result = materialize_range(layout, "2026-03-02", "2026-03-03", config)
    assert not result.success
    failed = [c for c in result.get_asset_check_evaluations() if not c.passed]
    # cost_breakdown sums those intents' (missing) labor cost too: its components no longer add up.
    assert [(c.asset_key.to_user_string(), c.check_name) for c in failed] == [("intent_costs", "schema"), ("cost_breakdown", "schema")]
    assert not layout.table("intent_costs").exists()
    assert not layout.table("cost_per_success").exists()


def test_cli_materialize_exits_non_zero_naming_an_unreadable_file(layout, capsys):
    land(layout)
    (layout.landing_events / "broken.jsonl").write_text('{"event_type": "llm_call", "event_id": "x"\n')
    code = main(["materialize", "--data-dir", str(layout.data_dir), "--start", "2026-03-02", "--end", "2026-03-02"])
    assert code == 1
    assert "broken.jsonl: line 1: not valid JSON" in capsys.readouterr().err
