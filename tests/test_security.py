"""Inputs are untrusted: nothing from them becomes a path, SQL or code; prompt and response text
is never ingested; the Dagster UI listens on localhost only."""

import json
import re
from datetime import date
from pathlib import Path

import duckdb
import polars as pl

from tests.builders import FOCUS_HEADER, focus_row, llm_call, outcome, write_events, write_focus_csv
from tests.compare import build_with_reconciliation as build
from tests.conftest import REPO
from unitledger.layout import Layout
from unitledger.sources.events import EVENT_FIELDS
from unitledger.sources.files import scan_quarantine
from unitledger.sources.focus import FOCUS_COLUMNS, scan_staged_focus, stage_focus
from unitledger.warehouse.manifest import scan_table

SECRET = "TOP-SECRET-PROMPT-7f3a9"
CONTENT_FIELDS = ("prompt", "completion", "content", "messages", "response", "input", "output")
# Every folder the pipeline may create under warehouse/: fixed names, and partition keys that are
# dates or billing periods whatever the data says.
ALLOWED_DIR = re.compile(
    r"^(staged|quarantine|_backfills|staged/\w+|staged/quarantine/(focus|events|evaluations|focus_periods)"
    r"|quarantine/source=(focus|events|focus_periods)|quarantine/daily=\d{4}-\d{2}-\d{2}|\w+"
    r"|\w+/date=\d{4}-\d{2}-\d{2}|\w+/billing_period=\d{4}-\d{2})$"
)


def hostile_landing(layout):
    traversal = "../../../../escaped"
    write_focus_csv(
        layout.landing_focus / "acct" / "d1" / "export.csv",
        [
            focus_row(traversal, x_FeatureTag=traversal, x_ModelVersion="'; DROP VIEW request_costs; --"),
            focus_row("r2", BillingPeriodStart=f"{traversal}/2026-03-01", ChargePeriodStart="2026-03-02T10:00:00Z/.."),
            focus_row("r3", InvoiceId="INV-1' OR '1'='1", BillingAccountId="acct/../../x"),
            focus_row("r4", ChargeDescription="=cmd|' /C calc'!A0", SkuId="__import__('os').system('touch pwned')"),
        ],
    )
    write_events(
        layout.landing_events / "calls.jsonl",
        [
            llm_call(traversal, "s/../../1", feature_tag=traversal),
            llm_call("r3", "s2", input_tokens="__import__('os').system('touch pwned')"),
            outcome("s/../../1", True),
        ],
    )


def test_values_from_data_never_become_paths(tmp_path, settings):
    layout = Layout(tmp_path / "data")
    hostile_landing(layout)
    build(layout, settings)
    folders = [p.relative_to(layout.warehouse).as_posix() for p in layout.warehouse.rglob("*") if p.is_dir()]
    assert folders and all(ALLOWED_DIR.match(f) for f in folders), [f for f in folders if not ALLOWED_DIR.match(f)]
    # Nothing was written outside the data root, nor anywhere named by the data.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    assert not list(tmp_path.rglob("escaped*")) and not list(tmp_path.rglob("pwned"))
    # The hostile values are kept as plain text where they belong.
    requests = scan_table(layout, "request_costs", ["2026-03-02"]).collect()
    assert "../../../../escaped" in requests["request_id"].to_list()
    held = scan_quarantine(layout).collect()
    assert set(held["column"]) == {"BillingPeriodStart,ChargePeriodStart", "input_tokens"}


def test_symbolic_links_in_landing_are_not_followed(tmp_path):
    outside = write_focus_csv(tmp_path / "outside" / "secret.csv", [focus_row("r1")])
    layout = Layout(tmp_path / "data")
    write_focus_csv(layout.landing_focus / "acct" / "d1" / "export.csv", [focus_row("r2")])
    (layout.landing_focus / "acct" / "d1" / "linked.csv").symlink_to(outside)
    (layout.landing_focus / "linked-dir").symlink_to(outside.parent, target_is_directory=True)
    assert stage_focus(layout).rows["focus"] == 1
    assert scan_staged_focus(layout).collect()["x_RequestId"].to_list() == ["r2"]


def test_views_are_built_from_the_data_root_only(tmp_path, settings):
    layout = Layout(tmp_path / "it's; DROP VIEW x; --")
    hostile_landing(layout)
    build(layout, settings)
    with duckdb.connect(str(layout.duckdb_path), read_only=True) as con:
        views = dict(con.sql("SELECT view_name, sql FROM duckdb_views() WHERE NOT internal").fetchall())
        assert {"request_costs", "reconciliation", "quarantine"} <= set(views)
        for name, sql in views.items():
            # Quoted data-root paths are the only literals; no value of the data appears.
            assert "escaped" not in sql and "DROP VIEW request_costs" not in sql and "OR '1'='1" not in sql, name
        ids = {r[0] for r in con.sql("SELECT request_id FROM request_costs").fetchall()}
        invoices = {r[0] for r in con.sql("SELECT invoice_id FROM reconciliation").fetchall()}
    assert "../../../../escaped" in ids
    assert "INV-1' OR '1'='1" in invoices


def test_prompt_and_response_text_is_never_ingested(tmp_path, settings):
    layout = Layout(tmp_path / "data")
    write_focus_csv(layout.landing_focus / "acct" / "d1" / "export.csv", [focus_row("r1"), focus_row("r2")])
    content = {field: f"{SECRET} {field}" for field in CONTENT_FIELDS}
    events = [
        llm_call("r1", **content),
        llm_call("r2", status="maybe", **content),  # quarantined: its raw record is kept
        outcome("s1", True, **content),
    ]
    write_events(layout.landing_events / "calls.jsonl", events)
    pl.DataFrame([{**llm_call("r3"), **content}]).write_parquet(layout.landing_events / "more.parquet")
    build(layout, settings)
    files = list(layout.warehouse.rglob("*.parquet"))
    assert files
    for path in files:
        frame = pl.read_parquet(path)
        assert not set(frame.columns) & set(CONTENT_FIELDS), path
        text = frame.select(pl.col(pl.String)).to_dicts()
        assert SECRET not in json.dumps(text), path
    assert SECRET.encode() not in layout.duckdb_path.read_bytes()
    held = scan_quarantine(layout).collect()
    assert held.height == 1 and set(json.loads(held["raw"][0])) <= set(EVENT_FIELDS)


def test_the_dagster_ui_listens_on_localhost_only():
    makefile = (REPO / "Makefile").read_text()
    [recipe] = re.findall(r"^ui:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert "dagster dev" in recipe and "--host 127.0.0.1" in recipe
    assert "0.0.0.0" not in makefile


def test_the_header_is_never_evaluated(tmp_path):
    layout = Layout(tmp_path / "data")
    header = [*FOCUS_HEADER, "__import__('os').system('touch pwned')", "=HYPERLINK(\"x\")"]
    write_focus_csv(layout.landing_focus / "acct" / "d1" / "export.csv", [focus_row("r1")], header=header)
    assert stage_focus(layout).rows["focus"] == 1
    assert not list(Path(tmp_path).rglob("pwned"))
    assert set(scan_staged_focus(layout).collect_schema().names()) <= {*FOCUS_COLUMNS, "source_file", "source_line", "delivery", "charge_date"}
