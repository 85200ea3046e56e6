"""Results do not depend on how a range of days was split into runs: on generated data with long
sessions, late billing, billing-only requests spread over days and copies across midnight, one
range run, day-by-day runs and two overlapping range runs publish identical tables, every check
passes, and no request appears twice."""

import random
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from tests.builders import focus_row, llm_call, outcome, write_events, write_focus_csv
from tests.compare import copy_landing, read_held, read_table
from tests.conftest import TODAY
from unitledger.layout import Layout
from unitledger.steps import daily, reconciliation, staging

FIRST, LAST = date(2026, 3, 3), date(2026, 3, 12)  # the days built; data from March 1 to 15
DAILY = ["request_costs", "intent_costs", "cost_per_intent", "cost_per_success", "reconciliation_daily"]


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # as the generator writes events


def _hour(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:00:00Z")


def generate(layout: Layout, seed: int) -> dict:
    """Random sessions over March 1-15 and their billing, with every case of the bounds (S = B = 2):
    sessions calling on 3 consecutive days (one intent), on 4 (the last day beyond the bound), with a
    pause of 4 days (two intents); rows billed 1 and 2 days after the call (the call's), 3 or more
    days (late), a day before it; billing-only requests with a row 1 day later (one request) and one
    4 days later (late); copies of a call a minute later across midnight; an intent billed in EUR
    and USD. Returns what was built, for the expectations."""
    rng = random.Random(seed)
    calls, outcomes, us_rows, eu_rows = [], [], [], []
    late, counter = [], iter(range(1_000_000))

    def bill(request: str, moment: datetime, currency: str = "USD", shift: int = 0) -> None:
        cost = f"0.{rng.randrange(1, 10**6):06d}000000"
        row = focus_row(request, cost, hour=_hour(moment + timedelta(days=shift)))
        if currency == "EUR":
            row.update(BillingAccountId="acct-eu", BillingCurrency="EUR", InvoiceId="INV-EU")
            eu_rows.append(row)
        else:
            us_rows.append(row)
        if abs(shift) > 2:
            late.append((request, Decimal(cost)))

    for s in range(60):
        session = f"s{seed}-{s}"
        first = datetime(2026, 3, 1, tzinfo=timezone.utc) + timedelta(minutes=rng.randrange(14 * 24 * 60))
        shape = rng.choice(["short", "three_days", "four_days", "pause", "short", "short"])
        offsets = {
            "short": [timedelta(minutes=rng.randrange(1, 90)) for _ in range(rng.randrange(0, 3))],
            "three_days": [timedelta(days=1, minutes=5), timedelta(days=2, minutes=7)],
            "four_days": [timedelta(days=1), timedelta(days=2), timedelta(days=3)],
            "pause": [timedelta(days=4)],
        }[shape]
        currency = "EUR" if s % 7 == 0 else "USD"
        for k, offset in enumerate([timedelta(0), *offsets]):
            moment = first + offset
            request = f"r{seed}-{next(counter)}"
            calls.append(llm_call(request, session, _ts(moment), attempt=1 + (k % 3 == 2)))
            roll = rng.random()
            if roll < 0.05:
                continue  # never billed: telemetry-only
            # an intent of s % 11 == 0 has its second call billed in the other currency
            mixed = s % 11 == 0 and k == 1
            shift = rng.choice([0, 0, 0, 0, 1, 2, -1, 3, 5]) if roll < 0.5 else 0
            bill(request, moment, ("USD" if currency == "EUR" else "EUR") if mixed else currency, shift)
            if rng.random() < 0.3:
                bill(request, moment, "EUR" if mixed else currency)  # a second row (output tokens)
            if rng.random() < 0.05:  # a copy a minute later, perhaps across midnight
                copy = dict(calls[-1], timestamp=_ts(moment + timedelta(minutes=1)), event_id=f"copy-{request}")
                calls.append(copy)
        if rng.random() < 0.7:
            outcomes.append(outcome(session, rng.random() < 0.6, _ts(first + timedelta(days=3, hours=1))))
    for b in range(25):  # billing-only requests, some billed again 1 or 4 days later
        moment = datetime(2026, 3, 1, tzinfo=timezone.utc) + timedelta(minutes=rng.randrange(14 * 24 * 60))
        request = f"b{seed}-{b}"
        bill(request, moment)
        if b % 3 == 0:
            bill(request, moment, shift=rng.choice([1, 4]))
    write_focus_csv(layout.landing_focus / "acct-us" / "2026-03" / "export.csv", us_rows)
    write_focus_csv(layout.landing_focus / "acct-eu" / "2026-03" / "export.csv", eu_rows)
    write_events(layout.landing_events / "calls.jsonl", [c for c in calls if not c["event_id"].startswith("copy-")])
    write_events(layout.landing_events / "copies.jsonl", [c for c in calls if c["event_id"].startswith("copy-")])
    write_events(layout.landing_events / "labels.jsonl", outcomes)
    return {"late": late}


def build(layout: Layout, settings, ranges: list[tuple[date, date]]) -> None:
    assert staging.stage_billing(layout, settings, TODAY).passed
    assert staging.stage_events(layout).passed
    for first, last in ranges:
        for result in (
            daily.build_daily_tables(layout, settings, first, last),
            reconciliation.build_reconciliation_daily(layout, settings, first, last),
        ):
            assert result.passed, result.failures()


def tables(layout: Layout) -> dict[str, pl.DataFrame]:
    found = {name: read_table(layout, name) for name in DAILY}
    held = [rows.with_columns(file=pl.lit(day)) for day, rows in read_held(layout).items()]
    found["quarantine"] = pl.concat(held).sort(pl.all())
    return found


@pytest.mark.parametrize("seed", [1, 2])
def test_a_range_run_day_by_day_runs_and_overlapping_runs_publish_the_same_tables(tmp_path, settings, seed):
    source = Layout(tmp_path / "source" / "data")
    generated = generate(source, seed)
    day_by_day = [(FIRST + timedelta(days=i),) * 2 for i in range((LAST - FIRST).days + 1)]
    splits = {
        "range": [(FIRST, LAST)],
        "days": day_by_day,
        "overlapping": [(FIRST, date(2026, 3, 8)), (date(2026, 3, 6), LAST)],
    }
    built = {}
    for name, ranges in splits.items():
        layout = Layout(tmp_path / name / "data")
        copy_landing(source, layout)
        build(layout, settings, ranges)
        built[name] = tables(layout)

    reference = built["range"]
    for name in ("days", "overlapping"):
        for table, frame in reference.items():
            # Exact for every key, count and amount; ratios and sums of squares (floats) to 1e-12:
            # a float sum's last bits follow the order the engine adds in.
            assert_frame_equal(frame, built[name][table], check_exact=False, rel_tol=1e-12, abs_tol=1e-12), (table, name)

    requests = reference["request_costs"]
    assert requests["request_id"].is_unique().all(), "a request appears twice"
    intents = reference["intent_costs"]
    assert intents.select("session_id", "date").is_unique().all()
    # Not vacuous: the cases the data was built for happened.
    held = reference["quarantine"]
    late_held = held.filter(pl.col("reason").str.starts_with("late billing"))
    assert late_held.height > 0 and held.filter(pl.col("column") == "session_id").height > 0
    assert requests.filter(pl.col("match_status") == "billing_only").height > 0
    assert intents.group_by("session_id").len().filter(pl.col("len") > 1).height > 0  # resumed after a pause
    # Late rows are quarantined with their cost, never a request's: only rows generated late.
    ids = late_held.select(pl.col("raw").str.json_decode(pl.Struct({"x_RequestId": pl.String})).struct.field("x_RequestId"))
    assert set(ids.to_series()) <= {r for r, _ in generated["late"]}


def test_the_benchmark_references_agree_with_the_pipeline_on_the_same_data(tmp_path, settings):
    """The bench's DuckDB SQL and pandas implement the same rules independently: on this hostile
    data (late billing, long sessions, billing-only rows days apart, copies across midnight, an
    intent in two currencies) they compute the same day as the pipeline."""
    from unitledger.tools import bench

    source = Layout(tmp_path / "data")
    generate(source, 3)
    seen = {"intents": 0, "billing_only": 0, "telemetry_only": 0}
    for day in (date(2026, 3, 4), date(2026, 3, 6), date(2026, 3, 8), date(2026, 3, 10)):
        results = {}
        for implementation, run in (("pipeline", bench.run_pipeline), ("duckdb", bench.run_duckdb), ("pandas", bench.run_pandas)):
            out = tmp_path / "out" / str(day) / implementation
            out.mkdir(parents=True)
            run(source.data_dir, settings, day, out)
            results[implementation] = bench._load_tables(implementation, source.data_dir, out, day)
        assert bench.compare_outputs(results) == [], day
        ours = results["pipeline"]
        seen["intents"] += ours["intent_costs"].select(pl.len()).collect().item()
        statuses = ours["request_costs"].group_by("match_status").len().collect()
        for status, count in statuses.iter_rows():
            seen[status] = seen.get(status, 0) + count
    assert seen["intents"] > 8 and seen["billing_only"] > 0 and seen["telemetry_only"] > 0, seen
