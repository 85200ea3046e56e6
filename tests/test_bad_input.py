"""Bad input: each case shows its message and that no cost was lost.

A whole file that cannot be read stops the run naming the file (and the line where there is one);
nothing of it is staged. A bad row goes to quarantine with file, line, column and reason, and its
readable cost stays in the reconciliation."""

import gzip
import json
import os
import re
from datetime import date
from decimal import Decimal

import polars as pl
import pytest

from tests.builders import FOCUS_HEADER, focus_row, llm_call, write_events, write_focus_csv
from tests.conftest import TODAY, leftovers
from unitledger.cli import main
from unitledger.sources.events import event_outputs, scan_staged_calls, stage_events
from unitledger.sources.files import InputFileError, list_landing, scan_quarantine
from unitledger.sources.focus import focus_outputs, scan_staged_focus, stage_focus
from unitledger.steps import staging
from unitledger.steps.reconciliation import build_reconciliation
from unitledger.warehouse.manifest import scan_table

MARCH = date(2026, 3, 1)
GOOD_ROWS = [focus_row("r1", "0.010000000000"), focus_row("r2", "0.020000000000")]


def _csv_text(rows, header=FOCUS_HEADER) -> str:
    lines = [",".join(header)] + [",".join("" if r.get(c) is None else str(r[c]) for c in header) for r in rows]
    return "\n".join(lines) + "\n"


def _parquet_bytes(tmp_path, rows) -> bytes:
    path = tmp_path / "rows.parquet"
    pl.DataFrame(rows, schema={c: pl.String for c in FOCUS_HEADER}).write_parquet(path)
    return path.read_bytes()


# name → (file name, bytes of the file, message expected after the file name)
def _unreadable_focus(tmp_path):
    good = _csv_text(GOOD_ROWS).encode()
    parquet = _parquet_bytes(tmp_path, GOOD_ROWS)
    wide = _csv_text(GOOD_ROWS) + ",".join(["x"] * (len(FOCUS_HEADER) + 1)) + "\n"
    return {
        "corrupt gzip": ("export.csv.gz", gzip.compress(good)[:-12], "corrupt gzip data (Compressed file ended before the end-of-stream marker"),
        "not gzip at all": ("export.csv.gz", good, "corrupt gzip data (Not a gzipped file"),
        "corrupt parquet": ("export.parquet", parquet[: len(parquet) // 2], "not a readable Parquet file ("),
        "binary junk": ("export.csv", bytes(range(256)) * 4, "line 1: binary data (NUL bytes), not a CSV file"),
        "binary junk without NUL": ("export.csv", bytes(range(128, 256)) * 4, "line 1: not UTF-8 text, not a CSV file"),
        "empty file": ("export.csv", b"", "empty file (0 bytes)"),
        "header only": ("export.csv", _csv_text([]).encode(), "no data rows (empty or header only)"),
        "missing mandatory column": (
            "export.csv",
            _csv_text(GOOD_ROWS, [c for c in FOCUS_HEADER if c != "BilledCost"]).encode(),
            "line 1: missing mandatory FOCUS column(s) BilledCost",
        ),
        "record wider than the header": ("export.csv", wide.encode(), f"line 4: {len(FOCUS_HEADER) + 1} fields, the header has {len(FOCUS_HEADER)}"),
        "latin-1 text": ("export.csv", _csv_text([focus_row("r1", ChargeDescription="caf\xe9")]).encode("latin-1"), "line 2: not UTF-8 text"),
    }


@pytest.mark.parametrize(
    "case",
    ["corrupt gzip", "not gzip at all", "corrupt parquet", "binary junk", "binary junk without NUL", "empty file", "header only",
     "missing mandatory column", "record wider than the header", "latin-1 text"],
)
def test_unreadable_focus_file_stops_staging_naming_it(layout, tmp_path, case):
    name, content, message = _unreadable_focus(tmp_path)[case]
    write_focus_csv(layout.landing_focus / "acct" / "d1" / "good.csv", GOOD_ROWS)
    bad = layout.landing_focus / "acct" / "d2" / name
    bad.parent.mkdir(parents=True)
    bad.write_bytes(content)
    with pytest.raises(InputFileError) as raised:
        stage_focus(layout)
    assert str(raised.value).startswith(f"acct/d2/{name}: {message}"), str(raised.value)
    # Nothing of the bad file is staged, no half-written output is left.
    staged = scan_staged_focus(layout).collect()
    assert set(staged["source_file"]) == {"acct/d1/good.csv"}
    assert not leftovers(layout)
    # Fixed, the file is staged in full on the next run.
    bad.unlink()
    write_focus_csv(layout.landing_focus / "acct" / "d2" / "export.csv", GOOD_ROWS)
    assert stage_focus(layout).rows["focus"] == 4


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("events.jsonl", (json.dumps(llm_call("r1")) + "\n" + json.dumps(llm_call("r2"))[:50]).encode(), "line 2: not valid JSON"),
        ("events.jsonl", b'{"event_type": "llm_call"}\n[1, 2]\n', "line 2: not a JSON object"),
        ("events.jsonl.gz", gzip.compress(b"{}\n" * 100)[:-8], "corrupt gzip data"),
        ("events.jsonl", b"\xff\xfe\x00junk" * 50, "line 1: not valid JSON"),
        ("events.jsonl", b"", "empty file (0 bytes)"),
        ("events.jsonl", b"\n\n", "no data rows (empty or header only)"),
        ("events.parquet", b"PAR1" + os.urandom(64), "not a readable Parquet file ("),
    ],
    ids=["truncated line", "not an object", "corrupt gzip", "binary junk", "empty", "blank lines", "corrupt parquet"],
)
def test_unreadable_event_file_stops_staging_naming_it(layout, name, content, message):
    write_events(layout.landing_events / "0-good.jsonl", [llm_call("r1")])
    bad = layout.landing_events / name
    bad.write_bytes(content)
    with pytest.raises(InputFileError) as raised:
        stage_events(layout)
    assert str(raised.value).startswith(f"{name}: {message}"), str(raised.value)
    assert set(scan_staged_calls(layout).collect()["source_file"]) == {"0-good.jsonl"}
    assert not leftovers(layout)


def test_unreadable_file_fails_the_dagster_run_naming_it(layout, capsys):
    write_focus_csv(layout.landing_focus / "acct" / "d1" / "good.csv", GOOD_ROWS)
    (layout.landing_focus / "acct" / "d1" / "broken.csv.gz").write_bytes(b"not gzip")
    code = main(["materialize", "--data-dir", str(layout.data_dir), "--start", "2026-03-02", "--end", "2026-03-02"])
    assert code == 1
    assert "Unreadable landing file: acct/d1/broken.csv.gz: corrupt gzip data" in capsys.readouterr().err
    assert not layout.table("request_costs").exists()


# --- bad rows: quarantined, their cost still reconciled --------------------------------------------


def _stage_and_reconcile(layout, settings, month=MARCH):
    assert staging.stage_billing(layout, settings, TODAY).passed
    assert staging.stage_events(layout).passed
    return build_reconciliation(layout, settings, month, month)


def _quarantined(layout, source="focus"):
    return scan_quarantine(layout).filter(pl.col("source") == source).sort("source_line").collect()


def _month(layout, period="2026-03"):
    return scan_table(layout, "reconciliation", [period]).collect()


@pytest.mark.parametrize(
    ("overrides", "column", "reason"),
    [
        ({"ChargeCategory": "Refund"}, "ChargeCategory", "ChargeCategory is not a FOCUS ChargeCategory: Refund"),
        ({"BillingCurrency": "USX"}, "BillingCurrency", "BillingCurrency is not an ISO 4217 currency code: USX"),
        ({"ChargePeriodStart": "2026-03-32T10:00:00Z"}, "ChargePeriodStart", "ChargePeriodStart is not a timestamp: 2026-03-32T10:00:00Z"),
        ({"ChargePeriodEnd": "2026-03-02T09:00:00Z"}, "ChargePeriodStart", "ChargePeriodStart is not before ChargePeriodEnd"),
        # The row's billing period is unreadable: it is reconciled in its delivery's only period.
        ({"BillingPeriodStart": "March 2026"}, "BillingPeriodStart", "BillingPeriodStart is not a timestamp: March 2026"),
    ],
    ids=["unknown ChargeCategory", "non-ISO currency", "bad timestamp", "period backwards", "bad billing period"],
)
def test_bad_row_is_quarantined_and_its_cost_reconciled(layout, settings, overrides, column, reason):
    bad = focus_row("r3", "0.070000000000", **overrides)
    write_focus_csv(layout.landing_focus / "acct-us" / "d1" / "export.csv", [*GOOD_ROWS, bad])
    write_events(layout.landing_events / "calls.jsonl", [llm_call("r1"), llm_call("r2")])
    result = _stage_and_reconcile(layout, settings)
    assert result.passed, result.failures()

    held = _quarantined(layout).row(0, named=True)
    assert (held["source_file"], held["source_line"], held["column"]) == ("acct-us/d1/export.csv", 4, column)
    assert reason in held["reason"]
    rec = _month(layout)
    # Nothing lost: every billed cent of the file is in the month's billed_total, the bad row's
    # as quarantined_cost (in the row of its own, possibly non-ISO, currency).
    assert sum(rec["billed_total"]) == Decimal("0.10")
    quarantined = rec.filter(pl.col("quarantined_rows") > 0).row(0, named=True)
    assert quarantined["quarantined_cost"] == Decimal("0.07")
    assert quarantined["billing_currency"] == bad["BillingCurrency"]
    assert quarantined["status"] == "warn" and "1 row(s) quarantined" in quarantined["status_reason"]


def test_unreadable_cost_is_quarantined_and_flagged_as_missing(layout, settings):
    write_focus_csv(
        layout.landing_focus / "acct-us" / "d1" / "export.csv",
        [*GOOD_ROWS, focus_row("r3", "0.07", BilledCost="abc"), focus_row("r4", "0.05", BilledCost="1,5")],
    )
    assert _stage_and_reconcile(layout, settings).passed
    held = _quarantined(layout)
    assert held["reason"].to_list() == ["BilledCost is not a decimal number: abc", "BilledCost is not a decimal number: 1,5"]
    assert held["source_line"].to_list() == [4, 5]
    assert held["effective_cost"].to_list() == [Decimal("0.07"), Decimal("0.05")]
    row = _month(layout).row(0, named=True)
    # The readable costs are all there; the two unreadable ones are counted and fail the row.
    assert row["billed_total"] == Decimal("0.03")
    assert row["effective_total"] == Decimal("0.03") + Decimal("0.07") + Decimal("0.05")
    assert row["quarantined_rows_unknown_cost"] == 2
    assert row["status"] == "fail"
    assert "2 quarantined row(s) with an unreadable or out-of-range BilledCost: billed_total is incomplete" in row["status_reason"]


def test_amounts_too_large_to_sum_exactly_are_quarantined_and_the_month_builds(layout, settings, capsys):
    # Two costs of 6e19 fit Decimal(38,18) one by one, but their sum does not (20 integer digits):
    # the month failed with a bare Polars overflow. They are quarantined, named, and flagged unknown.
    huge = [focus_row("r3", "6e19"), focus_row("r4", "60000000000000000000.5", EffectiveCost="0.05")]
    write_focus_csv(layout.landing_focus / "acct-us" / "d1" / "export.csv", [GOOD_ROWS[0], *huge, GOOD_ROWS[1]])
    write_events(layout.landing_events / "calls.jsonl", [llm_call("r1"), llm_call("r2"), llm_call("r3"), llm_call("r4")])
    code = main(["materialize", "--data-dir", str(layout.data_dir), "--start", "2026-03-02", "--end", "2026-03-02"])
    assert code == 0, capsys.readouterr().err
    held = _quarantined(layout)
    assert held.select("source_file", "source_line").rows() == [("acct-us/d1/export.csv", 3), ("acct-us/d1/export.csv", 4)]
    assert held["column"].to_list() == ["BilledCost,EffectiveCost,ListCost,ContractedCost", "BilledCost,ListCost,ContractedCost"]
    bound = "is out of range: an amount must be below 10^15 in magnitude for sums to stay exact"
    assert held["reason"][0].startswith(f"BilledCost {bound}: 6e19; EffectiveCost {bound}: 6e19")
    assert held["billed_cost"].to_list() == [None, None]  # unknown, not summed
    assert held["effective_cost"].to_list() == [None, Decimal("0.05")]
    costs = scan_table(layout, "request_costs", ["2026-03-02"]).sort("request_id").collect()
    assert costs.select("request_id", "billed_cost").rows() == [
        ("r1", Decimal("0.01")), ("r2", Decimal("0.02")), ("r3", None), ("r4", None)
    ]
    row = _month(layout).filter(pl.col("quarantined_rows") > 0).row(0, named=True)
    assert (row["billed_total"], row["quarantined_rows"], row["quarantined_rows_unknown_cost"]) == (Decimal("0.03"), 2, 2)
    assert row["effective_total"] == Decimal("0.03") + Decimal("0.05")
    assert row["status"] == "fail" and "2 quarantined row(s) with an unreadable or out-of-range BilledCost" in row["status_reason"]


def test_quarantined_row_with_no_billing_period_stops_the_reconciliation(layout, settings):
    # Both periods unreadable and the delivery spans two billing periods: no month can hold it.
    write_focus_csv(
        layout.landing_focus / "acct-us" / "d1" / "export.csv",
        [
            *GOOD_ROWS,
            focus_row("r5", BillingPeriodStart="2026-04-01T00:00:00Z", BillingPeriodEnd="2026-05-01T00:00:00Z", hour="2026-04-02T10:00:00Z"),
            focus_row("r3", "0.07", BillingPeriodStart="soon", BillingPeriodEnd="later"),
        ],
    )
    result = _stage_and_reconcile(layout, settings)
    assert not result.passed
    assert any(
        "quarantined FOCUS row(s) have no readable BillingPeriodStart" in f and "acct-us/d1/export.csv line 5" in f
        for f in result.failures()
    )
    assert not layout.table("reconciliation").exists()


def test_negative_token_count_quarantines_the_event_and_keeps_the_billed_cost(layout, settings):
    write_focus_csv(layout.landing_focus / "acct-us" / "d1" / "export.csv", GOOD_ROWS)
    write_events(
        layout.landing_events / "calls.jsonl",
        [llm_call("r1", input_tokens=-5), llm_call("r2", timestamp="2026-03-02 25:00")],
    )
    assert _stage_and_reconcile(layout, settings).passed
    held = _quarantined(layout, "events")
    assert held.select("source_file", "source_line", "column").rows() == [("calls.jsonl", 1, "input_tokens"), ("calls.jsonl", 2, "timestamp")]
    assert held["reason"].to_list() == ["input_tokens is below 0: -5", "timestamp is not a timestamp: 2026-03-02 25:00"]
    # Without a usable call the billed rows are unmatched: their cost is still reconciled.
    row = _month(layout).filter(pl.col("billing_account_id").is_not_null()).row(0, named=True)
    assert (row["billed_total"], row["unmatched_billing_cost"], row["unmatched_requests"]) == (Decimal("0.03"), Decimal("0.03"), 2)


def test_token_counts_too_large_to_sum_are_quarantined(layout, settings):
    # Int64 sums wrap around silently: two counts of 6e18 would add up to a negative number.
    write_focus_csv(layout.landing_focus / "acct-us" / "d1" / "export.csv", GOOD_ROWS)
    write_events(
        layout.landing_events / "calls.jsonl",
        [llm_call("r1", input_tokens=6 * 10**18), llm_call("r2", output_tokens=10**9), llm_call("r3", output_tokens=10**9 - 1)],
    )
    assert _stage_and_reconcile(layout, settings).passed
    held = _quarantined(layout, "events")
    assert held.select("source_line", "column").rows() == [(1, "input_tokens"), (2, "output_tokens")]
    assert held["reason"][0] == "input_tokens is out of range: a token count must be below 10^9 for sums to stay exact: 6000000000000000000"
    assert scan_staged_calls(layout).collect()["request_id"].to_list() == ["r3"]


def test_quoted_empty_cells_are_nulls_not_bad_values(layout):
    path = layout.landing_focus / "acct" / "d1" / "quoted.csv"
    path.parent.mkdir(parents=True)
    header = ",".join(f'"{c}"' for c in FOCUS_HEADER)
    values = ",".join(f'"{"" if v is None else v}"' for v in focus_row("r1").values())
    path.write_text(f"{header}\n{values}\n")
    report = stage_focus(layout)
    assert (report.rows["focus"], report.quarantined_rows) == (1, 0)
    assert scan_staged_focus(layout).collect()["ChargeClass"].to_list() == [None]


# --- a huge file is streamed --------------------------------------------------------------------


def _nodes_off_the_streaming_engine(plan: pl.LazyFrame) -> list[str]:
    """Nodes of the physical plan that fall back to the in-memory engine or hold all their input
    in memory (Polars colours them in its plan graph)."""
    graph = plan.show_graph(engine="streaming", plan_stage="physical", show=False, raw_output=True)
    return [re.sub(r'\\n.*', "", line) for line in graph.splitlines() if "fillcolor=" in line]


@pytest.mark.parametrize(("kind", "name"), [("focus", "f.csv"), ("focus", "f.csv.gz"), ("focus", "f.parquet"),
                                             ("events", "e.jsonl"), ("events", "e.jsonl.gz"), ("events", "e.parquet")])
def test_staging_runs_entirely_on_the_streaming_engine(layout, tmp_path, kind, name):
    if kind == "focus":
        path = layout.landing_focus / name
        path.parent.mkdir(parents=True)
        text = _csv_text(GOOD_ROWS)
        frame = pl.DataFrame(GOOD_ROWS, schema={c: pl.String for c in FOCUS_HEADER})
    else:
        path = layout.landing_events / name
        path.parent.mkdir(parents=True)
        text = "".join(json.dumps(e) + "\n" for e in [llm_call("r1"), llm_call("r2")])
        frame = pl.DataFrame([llm_call("r1"), llm_call("r2")])
    if name.endswith(".parquet"):
        frame.write_parquet(path)
    else:
        path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    [f] = list_landing(path.parent, (name.split(".", 1)[1],))
    outputs = focus_outputs(layout, f) if kind == "focus" else event_outputs(layout, f)
    for target, plan in outputs.items():
        sink = plan.sink_parquet(tmp_path / target.name, lazy=True)
        assert _nodes_off_the_streaming_engine(sink) == [], target


def test_a_large_file_stages_with_every_cent(layout):
    rows = 100_000
    frame = pl.DataFrame({c: pl.repeat(v, rows, eager=True, dtype=pl.String) for c, v in focus_row("r").items()})
    frame = frame.with_columns(
        x_RequestId=pl.format("req-{}", pl.int_range(rows)),
        BilledCost=(pl.int_range(rows) % 1000).cast(pl.String) + ".000000000123",
    )
    path = layout.landing_focus / "acct" / "d1" / "big.csv"
    path.parent.mkdir(parents=True)
    frame.write_csv(path)
    report = stage_focus(layout)
    assert (report.rows["focus"], report.quarantined_rows) == (rows, 0)
    assert layout.tmp.is_dir() and not leftovers(layout)  # the text was decoded once into scratch, then removed
    # Σ (i mod 1000) over 100 full cycles of 0..999, plus 0.000000000123 per row.
    expected = Decimal(100 * sum(range(1000))) + rows * Decimal("0.000000000123")
    assert scan_staged_focus(layout).select(pl.col("BilledCost").sum()).collect().item() == expected
