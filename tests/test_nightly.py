"""Keeping the recent past right: the nightly window, the landing sensor (exactly the days whose
inputs changed), the monthly rollups after daily runs, the freshness checks, and the restatement
test: load a month, land late labels and a restated export, run the nightly path, compare with a
from-scratch run over all inputs."""

import csv
import json
import shutil
from datetime import date, datetime, timedelta, timezone

import dagster as dg
import polars as pl
import pytest

from pipelines.automation import (
    FRESHNESS_CHECKS,
    daily_job,
    label_coverage,
    landing_changes,
    monthly_after_daily,
    monthly_job,
    nightly,
    nightly_window,
    yesterday_built,
)
from pipelines.definitions import ALL_ASSETS
from pipelines.monthly import monthly_tables
from pipelines.resources import Warehouse
from tests.compare import assert_same_tables, copy_landing, read_table
from unitledger.checks import freshness
from unitledger.config import load_settings
from unitledger.layout import Layout
from unitledger.steps import backfill
from unitledger.tools.generate import generate

LATE_DAYS = {date(2026, 3, 3), date(2026, 3, 7)}  # sessions of these days get their labels late
TODAY = date(2026, 3, 12)  # the Warehouse resource's today: nothing here reads the clock
CONFIG_TEXT = """
[pipeline]
start_date = "2026-01-01"
[schedule]
trailing_days = 2
[labor.USD]
default = { flat = "10.00" }
[labor.EUR]
default = { flat = "9.00" }
"""


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "unitledger.toml"
    path.write_text(CONFIG_TEXT)
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Layout:
    """March 1-10 with an earlier and a restated FOCUS delivery per account (JSON lines events)."""
    layout = Layout(tmp_path_factory.mktemp("source") / "data")
    generate(layout.data_dir, start=date(2026, 3, 1), days=10, requests_per_day=30, seed=3, events_format="jsonl", restated_delivery=True)
    return layout


def _events(layout: Layout) -> list[dict]:
    return [json.loads(line) for p in sorted(layout.landing_events.glob("*.jsonl")) for line in p.read_text().splitlines()]


def _session_days(events: list[dict]) -> dict[str, date]:
    days: dict[str, date] = {}
    for e in events:
        if e["event_type"] == "llm_call":
            day = date.fromisoformat(e["timestamp"][:10])
            days[e["session_id"]] = min(day, days.get(e["session_id"], day))
    return days


def _call_days(events: list[dict], sessions: set[str]) -> set[date]:
    """Every date the sessions called on: each of their intents is dated by one."""
    return {date.fromisoformat(e["timestamp"][:10]) for e in events if e["event_type"] == "llm_call" and e["session_id"] in sessions}


def _deliveries(layout: Layout) -> tuple[list, list]:
    """(earlier, final) delivery folders: per account, the older folder and the newer one."""
    earlier, final = [], []
    for month in sorted(layout.landing_focus.glob("*/*")):
        folders = sorted(month.iterdir())
        assert len(folders) == 2, folders
        earlier.append(folders[0])
        final.append(folders[1])
    return earlier, final


def _initial(source: Layout, target: Layout, with_final_billing: bool) -> list[str]:
    """Land the source without the labels of LATE_DAYS' sessions (returned as JSON lines) and,
    unless `with_final_billing`, without the restated deliveries."""
    copy_landing(source, target)
    late_sessions = {s for s, d in _session_days(_events(source)).items() if d in LATE_DAYS}
    withheld = []
    for path in sorted(target.landing_events.glob("*.jsonl")):
        stat = path.stat()
        kept = []
        for line in path.read_text().splitlines():
            event = json.loads(line)
            (withheld if event["event_type"] == "outcome" and event["session_id"] in late_sessions else kept).append(line)
        path.write_text("".join(line + "\n" for line in kept))
        shutil.copystat(source.landing_events / path.name, path)
        assert path.stat().st_mtime_ns == stat.st_mtime_ns
    earlier, final = _deliveries(target)
    for folder in final if not with_final_billing else earlier:
        shutil.rmtree(folder)
    assert withheld
    return withheld


def _land_late(source: Layout, target: Layout, withheld: list[str], restated: bool) -> None:
    (target.landing_events / "late-labels.jsonl").write_text("".join(line + "\n" for line in withheld))
    if restated:
        for folder in _deliveries(source)[1]:
            shutil.copytree(folder, target.landing_focus / folder.relative_to(source.landing_focus), copy_function=shutil.copy2)


def _resources(layout: Layout, config) -> dict:
    return {"warehouse": Warehouse(data_dir=str(layout.data_dir), config_path=str(config), today=TODAY.isoformat())}


def _sensor_tick(layout: Layout, config, instance, cursor):
    with dg.build_sensor_context(cursor=cursor, instance=instance, resources=_resources(layout, config)) as context:
        return landing_changes(context)


def _execute(layout: Layout, config, instance, selection, tags) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        [*ALL_ASSETS, *FRESHNESS_CHECKS], selection=selection, instance=instance, resources=_resources(layout, config), tags=tags
    )
    assert result.success
    return result


def _execute_daily_then_monthly(layout: Layout, config, instance, tags: dict) -> None:
    """What the daemon does: the daily job's run, then the monthly job's run monthly_after_daily asks for."""
    result = _execute(layout, config, instance, daily_job.selection, tags)
    context = dg.build_run_status_sensor_context(
        sensor_name="monthly_after_daily",
        dagster_event=result.get_run_success_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
    )
    request = monthly_after_daily(context)
    assert isinstance(request, dg.RunRequest)
    _execute(layout, config, instance, monthly_job.selection, request.tags)


def _days(requests) -> set[date]:
    found = set()
    for r in requests:
        first = date.fromisoformat(r.tags["dagster/asset_partition_range_start"])
        last = date.fromisoformat(r.tags["dagster/asset_partition_range_end"])
        found |= {first + timedelta(days=i) for i in range((last - first).days + 1)}
    return found


def _charge_days(folders) -> set[date]:
    return {
        date.fromisoformat(row["ChargePeriodStart"][:10])
        for folder in folders
        for path in folder.glob("*.csv")
        for row in csv.DictReader(path.open())
    }


def _load(source, layout, config, with_final_billing):
    withheld = _initial(source, layout, with_final_billing)
    assert backfill.run(layout, load_settings(config), date(2026, 3, 1), date(2026, 3, 10), today=TODAY)
    instance = dg.DagsterInstance.ephemeral()
    first = _sensor_tick(layout, config, instance, None)
    assert not first.run_requests and first.cursor  # the first look only remembers the files
    return withheld, instance, first.cursor


# --- the nightly window ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "today, window",
    [
        (date(2026, 4, 3), (date(2026, 3, 1), date(2026, 4, 2))),  # previous month until its invoice is final
        (date(2026, 4, 5), (date(2026, 3, 1), date(2026, 4, 4))),
        (date(2026, 4, 6), (date(2026, 4, 1), date(2026, 4, 5))),  # then month to date
        (date(2026, 4, 1), (date(2026, 3, 1), date(2026, 3, 31))),
        (date(2026, 1, 2), (date(2026, 1, 1), date(2026, 1, 1))),  # never before the start date
    ],
)
def test_nightly_window_default_is_month_to_date_plus_previous_month_until_invoice_final(settings, today, window):
    assert settings.nightly.trailing_days is None and settings.nightly.invoice_final_day == 5
    assert nightly_window(today, settings) == window


def test_nightly_window_trailing_days_and_nothing_before_the_start(config):
    settings = load_settings(config)
    assert nightly_window(date(2026, 4, 3), settings) == (date(2026, 4, 1), date(2026, 4, 2))
    assert nightly_window(date(2026, 1, 1), settings) is None


def test_nightly_schedule_asks_for_one_range_run(config, tmp_path):
    when = datetime(2026, 4, 3, 2, 0, tzinfo=timezone.utc)
    resources = _resources(Layout(tmp_path), config)
    with dg.build_schedule_context(scheduled_execution_time=when, resources=resources) as context:
        request = nightly(context)
    assert request.tags["dagster/asset_partition_range_start"] == "2026-04-01"
    assert request.tags["dagster/asset_partition_range_end"] == "2026-04-02"


# --- the landing sensor -----------------------------------------------------------------------------


def test_late_labels_rebuild_exactly_the_days_of_their_sessions(source, config, tmp_path):
    layout = Layout(tmp_path / "data")
    withheld, instance, cursor = _load(source, layout, config, with_final_billing=True)
    assert not _sensor_tick(layout, config, instance, cursor).run_requests  # nothing changed yet
    _land_late(source, layout, withheld, restated=False)
    result = _sensor_tick(layout, config, instance, cursor)
    late_sessions = {s for s, d in _session_days(_events(source)).items() if d in LATE_DAYS}
    # The days of the labelled sessions' calls (a session crossing midnight calls on the next day too).
    assert _days(result.run_requests) == _call_days(_events(source), late_sessions)
    assert LATE_DAYS <= _days(result.run_requests)
    assert not _sensor_tick(layout, config, instance, result.cursor).run_requests


def test_a_restated_export_rebuilds_every_day_it_or_the_delivery_it_replaces_bills(source, config, tmp_path):
    layout = Layout(tmp_path / "data")
    _, instance, cursor = _load(source, layout, config, with_final_billing=False)
    earlier, final = _deliveries(source)
    _land_late(source, layout, [], restated=True)
    result = _sensor_tick(layout, config, instance, cursor)
    # A billing row is read by the partitions of its request's call (B = 2 days either side) and of
    # that call's intent (S = 2 days before), within the days built (up to yesterday).
    billed = _charge_days(earlier) | _charge_days(final)
    expected = {d + timedelta(days=k) for d in billed for k in range(-4, 3)}
    assert _days(result.run_requests) == {d for d in expected if date(2026, 1, 1) <= d < TODAY}


def test_the_sensor_and_the_backfill_take_today_from_the_resource_not_the_clock(source, config, tmp_path):
    """The last day either builds is the day before the Warehouse resource's today, whatever the
    clock says (these tests passed only after March 2026 while the clock was read)."""
    layout = Layout(tmp_path / "data")
    _, instance, cursor = _load(source, layout, config, with_final_billing=False)
    _land_late(source, layout, [], restated=True)

    def warehouse(today: date) -> dict:
        return {"warehouse": Warehouse(data_dir=str(layout.data_dir), config_path=str(config), today=today.isoformat())}

    with dg.build_sensor_context(cursor=cursor, instance=instance, resources=warehouse(date(2026, 3, 6))) as context:
        early = landing_changes(context)
    with dg.build_sensor_context(cursor=cursor, instance=instance, resources=warehouse(TODAY)) as context:
        later = landing_changes(context)
    assert max(_days(early.run_requests)) == date(2026, 3, 5)
    assert max(_days(later.run_requests)) == date(2026, 3, 11)
    with pytest.raises(SystemExit, match="after the last complete UTC day, 2026-03-05"):
        backfill.run(layout, load_settings(config), date(2026, 3, 1), date(2026, 3, 10), today=date(2026, 3, 6))
    with pytest.raises(SystemExit, match="none yet"):
        backfill.run(layout, load_settings(config), date(2026, 1, 1), date(2026, 1, 1), today=date(2026, 1, 1))


def test_restatement_and_late_labels_through_the_nightly_path_equal_a_from_scratch_run(source, config, tmp_path):
    live = Layout(tmp_path / "live")
    withheld, instance, cursor = _load(source, live, config, with_final_billing=False)
    before = read_table(live, "cost_per_success_monthly")
    _land_late(source, live, withheld, restated=True)

    # The sensor's runs, then the nightly run of 2026-03-12 (trailing_days = 2: March 10-11).
    for request in _sensor_tick(live, config, instance, cursor).run_requests:
        _execute_daily_then_monthly(live, config, instance, request.tags)
    when = datetime(2026, 3, 12, 2, 0, tzinfo=timezone.utc)
    with dg.build_schedule_context(scheduled_execution_time=when, resources=_resources(live, config)) as context:
        _execute_daily_then_monthly(live, config, instance, nightly(context).tags)

    scratch = Layout(tmp_path / "scratch")
    copy_landing(live, scratch)
    assert backfill.run(scratch, load_settings(config), date(2026, 3, 1), date(2026, 3, 11), today=TODAY)
    assert_same_tables(live, scratch)
    assert not before.equals(read_table(live, "cost_per_success_monthly"))  # the test changed something


def test_monthly_after_daily_skips_runs_that_built_no_daily_partition(source, config, tmp_path):
    layout = Layout(tmp_path / "data")
    copy_landing(source, layout)
    instance = dg.DagsterInstance.ephemeral()
    result = _execute(layout, config, instance, [monthly_tables], {"dagster/partition": "2026-03"})
    context = dg.build_run_status_sensor_context(
        sensor_name="monthly_after_daily",
        dagster_event=result.get_run_success_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
    )
    assert isinstance(monthly_after_daily(context), dg.SkipReason)


# --- freshness ----------------------------------------------------------------------------------------


def test_closed_week_is_the_latest_monday_to_sunday_week_past_the_grace_days():
    # 2026-03-12 is a Thursday: with 3 grace days, Sunday 2026-03-08 closed on Wednesday night.
    assert freshness.closed_week(date(2026, 3, 12), 3) == date(2026, 3, 2)
    assert freshness.closed_week(date(2026, 3, 11), 3) == date(2026, 2, 23)
    assert freshness.closed_week(date(2026, 3, 9), 0) == date(2026, 3, 2)


def test_freshness_checks_warn_on_missing_yesterday_and_low_label_coverage(source, config, tmp_path):
    layout = Layout(tmp_path / "data")
    _initial(source, layout, with_final_billing=True)
    assert backfill.run(layout, load_settings(config), date(2026, 3, 1), date(2026, 3, 10), today=TODAY)

    def warehouse(today: date) -> Warehouse:
        return Warehouse(data_dir=str(layout.data_dir), config_path=str(config), today=today.isoformat())

    missing = yesterday_built(warehouse=warehouse(date(2026, 3, 12)))
    assert not missing.passed and missing.severity == dg.AssetCheckSeverity.WARN and "2026-03-11" in missing.description
    assert yesterday_built(warehouse=warehouse(date(2026, 3, 11))).passed

    # Independent count of the week's label coverage per feature from the intents.
    intents = read_table(layout, "intent_costs").filter(pl.col("date").is_between(date(2026, 3, 2), date(2026, 3, 8)))
    expected = intents.group_by("feature_tag").agg((pl.col("outcome") != "unlabeled").mean().alias("coverage"))
    expected = dict(expected.iter_rows())
    coverage = label_coverage(warehouse=warehouse(date(2026, 3, 12)))
    assert coverage.severity == dg.AssetCheckSeverity.WARN
    assert {k.removeprefix("coverage_"): v.value for k, v in coverage.metadata.items()} == pytest.approx(expected, abs=1e-4)
    assert coverage.passed == all(v >= 0.8 for v in expected.values())
    assert not coverage.passed  # two days' labels are withheld
