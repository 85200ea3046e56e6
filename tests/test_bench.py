"""The benchmark's guard: on the same generated landing files, the pipeline, the hand-written
DuckDB SQL and the pandas implementation produce the same tables. Times are printed by
`unitledger bench`, never asserted (machines are noisy)."""

import os
import subprocess
import sys
from datetime import date
from decimal import Decimal

import polars as pl
import pytest

from unitledger.steps.daily import DAILY_TABLES
from unitledger.tools import bench
from unitledger.warehouse.publish import polars_schema


def _quiet(*_args) -> None:
    pass


def _assert_agree(report: bench.Report, requests: int) -> None:
    assert report.disagreements == []
    assert set(report.table_rows) == set(bench.IMPLEMENTATIONS)
    rows = report.table_rows["pipeline"]
    # Not vacuous: about one request_costs row per request (a few cross midnight or are billing
    # only), sessions of 1-5 calls, a few dozen (feature, model, prompt, currency) groups.
    assert 0.95 * requests < rows["request_costs"] <= 1.01 * requests
    assert requests / 5 < rows["intent_costs"] < requests
    assert 5 < rows["cost_per_intent"] == rows["cost_per_success"] < 100
    assert 2.3 * requests < report.input_rows["focus"] < 2.7 * requests


def test_pipeline_duckdb_and_pandas_agree_on_a_100k_request_parquet_day():
    report = bench.run_benchmark(100_000, "parquet", log=_quiet)
    _assert_agree(report, 100_000)
    assert {r.implementation for r in report.runs} == set(bench.IMPLEMENTATIONS)
    assert all(r.peak_rss > 0 and r.timings for r in report.runs)
    assert "results agree" in bench.format_report(report)


def test_csv_and_jsonl_in_two_shards_agree_too():
    # Two generator shards: two FOCUS files per delivery folder and two event files.
    report = bench.run_benchmark(20_000, "csv", log=_quiet, shard_requests=10_000)
    _assert_agree(report, 20_000)


def _run(implementation: str, repeat: int, seconds: float, **timings: float) -> bench.Run:
    return bench.Run(implementation, timings, seconds, peak_rss=1, repeat=repeat)


def test_rounds_alternate_their_order_so_no_side_always_runs_first():
    impls = ("pipeline", "duckdb", "pandas")
    assert [bench.run_order(impls, k) for k in range(3)] == [impls, ("pandas", "duckdb", "pipeline"), impls]


def test_ratios_are_taken_per_round_then_summarised():
    # Fake timings: the machine slows down by 3x in round 1; each round's pair shares it, so the
    # per-round ratios stay 0.5 / 0.6 / 0.4, where a ratio of the medians would mix rounds.
    runs = [
        _run("pipeline", 0, 10.0, join=2.0, intents=1.0, features=1.0),
        _run("duckdb", 0, 20.0, join=2.0, intents=2.0, features=1.0),
        _run("duckdb", 1, 60.0, join=6.0, intents=6.0, features=3.0),
        _run("pipeline", 1, 36.0, join=6.0, intents=3.0, features=3.0),
        _run("pipeline", 2, 8.0, join=1.0, intents=1.0, features=1.0),
        _run("duckdb", 2, 20.0, join=4.0, intents=2.0, features=2.0),
        _run("pandas", 2, 40.0, join=4.0),  # a reference of one round only
    ]
    total = bench.paired_ratios(runs, "pipeline", "duckdb")
    assert (total.median, total.low, total.high, total.pairs) == (0.5, 0.4, 0.6, 3)
    assert str(total) == "0.50 (0.40-0.60)"
    intents = bench.paired_ratios(runs, "pipeline", "duckdb", "intents")
    assert (intents.median, intents.low, intents.high) == (0.5, 0.5, 0.5)
    core = bench.paired_ratios(runs, "pipeline", "duckdb", "core")  # join + intents + features: 4/5, 12/15, 3/8
    assert core.median == pytest.approx(0.8) and core.low == pytest.approx(0.375) and core.pairs == 3
    one = bench.paired_ratios(runs, "pipeline", "pandas")
    assert (one.median, one.pairs, str(one)) == (0.2, 1, "0.20")
    assert bench.paired_ratios(runs, "pipeline", "pandas", "features") is None  # pandas took no time there
    assert bench.paired_ratios(runs, "pipeline", "nothing") is None


def test_the_report_names_machine_commit_load_and_per_round_ratios():
    report = bench.Report(
        requests=10, fmt="parquet", day=bench.DEFAULT_DAY, input_rows={"focus": 25, "events": 20}, generate_seconds=1.0,
        runs=[_run("pipeline", 0, 1.0, join=0.5), _run("duckdb", 0, 2.0, join=0.5), _run("duckdb", 1, 4.0, join=1.0), _run("pipeline", 1, 3.0, join=1.0)],
        table_rows={"pipeline": {"request_costs": 10}}, commit="abc1234", load_before=(1.0, 2.0, 3.0), load_after=(4.0, 5.0, 6.0),
    )  # fmt: skip
    text = bench.format_report(report)
    assert "commit abc1234" in text and "1.00/2.00/3.00 before, 4.00/5.00/6.00 after" in text
    assert "CPU " in text and " cores" in text
    total = next(line for line in text.splitlines() if line.startswith("total "))
    assert total.split()[1:] == ["2.00", "3.00", "0.62", "(0.50-0.75)"]  # medians 2.0 and 3.0; ratios 0.5 and 0.75


def _per_intent_row(**changes) -> pl.LazyFrame:
    row = {
        "date": date(2026, 3, 2), "feature_tag": "support_chat", "model_version": "m-1", "prompt_version": "v1",
        "billing_currency": "USD", "intents": 3, "requests": 4, "token_cost": Decimal("0.30"),
        "labor_cost": Decimal("15.00"), "total_cost": Decimal("15.30"), "token_cost_per_intent": 0.1,
        "cost_per_intent": 5.1,
    } | changes  # fmt: skip
    return pl.DataFrame([row], schema=polars_schema(DAILY_TABLES["cost_per_intent"])).lazy()


def _tables(per_intent: pl.LazyFrame) -> dict[str, pl.LazyFrame]:
    empty = {name: pl.DataFrame(schema=polars_schema(model)).lazy() for name, model in DAILY_TABLES.items()}
    return empty | {"cost_per_intent": per_intent}


@pytest.mark.parametrize(
    ("changes", "flagged"),
    [
        ({}, None),
        ({"total_cost": Decimal("15.31")}, "exact columns differ"),  # one cent
        ({"total_cost": Decimal("15.300000000000000001")}, "exact columns differ"),  # 1e-18
        ({"intents": 4}, "exact columns differ"),
        ({"billing_currency": None}, "exact columns differ"),
        ({"cost_per_intent": 5.1 * (1 + 1e-7)}, "float columns differ"),
        ({"cost_per_intent": 5.1 * (1 + 1e-12)}, None),  # float noise of a different summation order
        ({"cost_per_intent": None}, "float columns differ"),
    ],
)
def test_comparison_is_exact_for_money_and_counts_and_tolerant_for_ratios(changes, flagged):
    problems = bench.compare_outputs({"pipeline": _tables(_per_intent_row()), "duckdb": _tables(_per_intent_row(**changes))})
    if flagged is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problems[0].startswith("duckdb cost_per_intent:") and flagged in problems[0]


def test_a_missing_row_is_a_disagreement():
    problems = bench.compare_outputs(
        {"pipeline": _tables(pl.concat([_per_intent_row(), _per_intent_row(feature_tag="other")])), "pandas": _tables(_per_intent_row())}
    )
    assert any("2 rows vs 1" in p for p in problems)


def test_a_day_joined_in_hash_buckets_gives_the_same_tables(tmp_path, monkeypatch, settings):
    """Past BUCKET_CALLS calls the pipeline works bucket by bucket (requests, sessions): the tables
    must not change (checked against the DuckDB route, which never buckets)."""
    from unitledger.model.requests import in_bucket

    day = bench.DEFAULT_DAY
    data = tmp_path / "data"
    bench.generate_day(data, day, 4_000, "parquet")
    seen = set()

    def spy(column, bucket, buckets):
        seen.add((column, bucket, buckets))
        return in_bucket(column, bucket, buckets)

    monkeypatch.setattr("unitledger.steps.daily.BUCKET_CALLS", 1_500)
    monkeypatch.setattr("unitledger.model.requests.in_bucket", spy)
    for implementation, run in (("pipeline", bench.run_pipeline), ("duckdb", bench.run_duckdb)):
        (tmp_path / "out" / implementation).mkdir(parents=True)
        run(data, settings, day, tmp_path / "out" / implementation)
    # (the allocation's shares are summed in buckets of its own: one at this size)
    assert {(bucket, buckets) for _, bucket, buckets in seen if buckets > 1} == {(0, 3), (1, 3), (2, 3)}
    assert {column for column, _, _ in seen} == {"x_RequestId", "request_id", "session_id"}
    results = {i: bench._load_tables(i, data, tmp_path / "out" / i, day) for i in ("pipeline", "duckdb")}
    assert bench.compare_outputs(results) == []
    assert results["pipeline"]["request_costs"].select(pl.len()).collect().item() > 3_500


@pytest.mark.parametrize("operator_setting, expected", [(None, "2"), ("6", "6")])
def test_parquet_prefetch_is_bounded_unless_the_operator_set_it(operator_setting, expected):
    """unitledger caps the row groups a Parquet scan decodes ahead (peak memory), but an
    operator's own POLARS_ROW_GROUP_PREFETCH_SIZE is kept."""
    env = {k: v for k, v in os.environ.items() if k != "POLARS_ROW_GROUP_PREFETCH_SIZE"}
    if operator_setting is not None:
        env["POLARS_ROW_GROUP_PREFETCH_SIZE"] = operator_setting
    code = "import os, unitledger.steps.daily; print(os.environ['POLARS_ROW_GROUP_PREFETCH_SIZE'])"
    printed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert printed.strip() == expected


def test_allocation_bench_pipeline_and_duckdb_sql_allocate_alike():
    """`unitledger bench --allocation`: on a generated provider-billed day, the pipeline's
    allocation and the DuckDB SQL of the same rule split every origin row identically (times are
    printed, never asserted)."""
    from unitledger.tools.alloc_bench import format_allocation_report, run_allocation_benchmark

    report = run_allocation_benchmark(1500, log=_quiet)
    assert report.disagreements == []
    assert report.token_rows > 100 and report.shares > report.calls  # calls share several rows (types)
    assert "results agree" in format_allocation_report(report)
