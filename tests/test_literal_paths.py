"""Landing file names and the data root are data, never patterns: a file named `part-[0].csv`,
`*.csv` or `?.csv` is read as itself (Polars' readers would otherwise expand it into the files it
matches), and a data root whose name holds `[...]` reads its own files."""

from datetime import date
from decimal import Decimal

import polars as pl
import pytest

from tests.builders import FOCUS_HEADER, focus_row, llm_call, write_events, write_focus_csv
from tests.conftest import TODAY
from unitledger.layout import Layout
from unitledger.sources.events import scan_staged_calls
from unitledger.sources.focus import scan_staged_focus
from unitledger.steps.daily import build_daily_tables
from unitledger.steps.staging import stage_billing, stage_events
from unitledger.warehouse.manifest import scan_table

# Each name beside the others: `part-[0]` matches `part-0`, `*` every file, `?` the one-letter names.
NAMES = ["part-0", "part-[0]", "*", "?", "a"]


def _focus_rows(k: int) -> list[dict]:
    # File k: k + 1 rows of distinct requests, each of cost (k + 1) * 0.001 plus its index: every
    # file's total differs from every other's, so a file read twice or not at all changes the sum.
    return [focus_row(f"f{k}-r{i}", f"{(k + 1) * Decimal('0.001') + i}") for i in range(k + 1)]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_focus_file_names_are_literal(layout, settings, suffix):
    folder = layout.landing_focus / "acct" / "d1"
    expected_rows, expected_total = {}, Decimal(0)
    for k, name in enumerate(NAMES):
        rows = _focus_rows(k)
        path = folder / f"{name}{suffix}"
        if suffix == ".csv":
            write_focus_csv(path, rows)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            pl.DataFrame(rows, schema={c: pl.String for c in FOCUS_HEADER}).write_parquet(path)
        expected_rows[f"acct/d1/{name}{suffix}"] = len(rows)
        expected_total += sum(Decimal(r["BilledCost"]) for r in rows)
    assert stage_billing(layout, settings, TODAY).passed
    staged = scan_staged_focus(layout).collect()
    per_file = dict(staged.group_by("source_file").len().iter_rows())
    assert per_file == expected_rows
    assert staged["x_RequestId"].n_unique() == staged.height  # no row staged twice
    assert staged["BilledCost"].sum() == expected_total


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_event_file_names_are_literal(layout, suffix):
    expected = {}
    for k, name in enumerate(NAMES):
        events = [llm_call(f"e{k}-r{i}", f"s{k}", input_tokens=10 ** k) for i in range(k + 1)]
        path = layout.landing_events / f"{name}{suffix}"
        if suffix == ".jsonl":
            write_events(path, events)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            pl.DataFrame(events).write_parquet(path)
        expected[f"{name}{suffix}"] = len(events)
    assert stage_events(layout).passed
    calls = scan_staged_calls(layout).collect()
    assert dict(calls.group_by("source_file").len().iter_rows()) == expected
    assert calls["input_tokens"].sum() == sum((k + 1) * 10**k for k in range(len(NAMES)))


def test_a_data_root_named_like_a_pattern_reads_its_own_files(tmp_path, settings):
    # `root[1]` as a pattern matches `root1`: a sibling root with other data must not be read.
    day = date(2026, 3, 2)
    roots = {"root[1]": ("r-bracket", "0.5"), "root1": ("r-plain", "7")}
    for folder, (request, cost) in roots.items():
        layout = Layout(tmp_path / folder)
        write_focus_csv(layout.landing_focus / "acct" / "d1" / "export.csv", [focus_row(request, cost)])
        write_events(layout.landing_events / "calls.jsonl", [llm_call(request)])
    for folder, (request, cost) in roots.items():
        layout = Layout(tmp_path / folder)
        assert stage_billing(layout, settings, TODAY).passed
        assert stage_events(layout).passed
        assert build_daily_tables(layout, settings, day, day).passed
        costs = scan_table(layout, "request_costs", [day.isoformat()]).collect()
        assert costs.select("request_id", "billed_cost").rows() == [(request, Decimal(cost))]


def test_every_polars_reader_call_turns_globbing_off():
    # The rule, kept by every future call: Polars readers that take a `glob` flag expand patterns by
    # default, so each call in the package passes glob=False (paths are data, never patterns).
    import ast
    import inspect
    from pathlib import Path

    globbing = {name for name in dir(pl) if name.startswith(("scan_", "read_")) and "glob" in inspect.signature(getattr(pl, name)).parameters}
    assert {"scan_csv", "read_csv", "scan_parquet", "read_parquet", "scan_lines"} <= globbing
    repo = Path(__file__).resolve().parents[1]
    offenders = []
    for path in sorted([*repo.glob("unitledger/**/*.py"), *repo.glob("pipelines/**/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            func = node.func if isinstance(node, ast.Call) else None
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "pl" and func.attr in globbing:
                flags = [k.value for k in node.keywords if k.arg == "glob"]
                if not (len(flags) == 1 and isinstance(flags[0], ast.Constant) and flags[0].value is False):
                    offenders.append(f"{path.relative_to(repo)}:{node.lineno}")
    assert offenders == []
