"""What the analyst reads first: money rounded for reading (the data keeps every digit), the
unbilled rows and small samples explained in a legend; progress lines with counts and time left;
runs of the CLI recorded in the Dagster instance of the repo's dagster.yaml."""

from __future__ import annotations

import io
import re
import shutil
from decimal import Decimal

import dagster as dg
import polars as pl

from schemas.types import MONEY
from tests.conftest import REPO
from unitledger.layout import Layout
from unitledger.progress import Progress
from unitledger.steps.backfill import dagster_instance
from unitledger.warehouse.display import SMALL_SAMPLE, UNBILLED, money, readable


def test_money_is_rounded_half_up_to_cents_from_one_and_four_places_below():
    assert money(Decimal("1234.565")) == "1,234.57"
    assert money(Decimal("-2.005")) == "-2.01"
    assert money(Decimal("0.00125")) == "0.0013"
    assert money(Decimal("0.123449999999999999")) == "0.1234"
    assert money(0.5) == "0.5000" and money(33.8325) == "33.83"
    assert money(None) == ""


def test_readable_names_unbilled_rows_flags_small_samples_and_explains_both():
    frame = pl.DataFrame(
        {
            "feature_tag": ["a", "a", "b"],
            "billing_currency": ["USD", None, "EUR"],
            "labeled_intents": [99, 400, 100],
            "token_cost": [Decimal("12.345678901234567890"), None, Decimal("0.000049")],
            "cost_per_success": [3.14159, None, 0.333333],
            "success_rate": [0.912345, 0.5, 0.25],
        },
        schema_overrides={"token_cost": MONEY},
    )
    shown, legend = readable(frame)
    assert shown["billing_currency"].to_list() == ["USD", UNBILLED, "EUR"]
    assert [t.strip() for t in shown["token_cost"].to_list()] == ["12.35", "", "0.0000"]
    assert [t.strip() for t in shown["cost_per_success"].to_list()] == ["3.14", "", "0.3333"]
    assert shown["success_rate"].to_list() == [0.9123, 0.5, 0.25]  # a rate, not money
    assert shown["sample"].to_list() == [SMALL_SAMPLE, "", ""]  # 99 < 100 labeled intents; 100 is enough
    text = " ".join(legend)
    assert "rounded" in text and "--format csv" in text and UNBILLED in text and "not zero" in text and "fewer than 100" in text
    assert frame["token_cost"][0] == Decimal("12.345678901234567890")  # display only


def test_readable_says_when_token_cost_holds_estimates():
    money = {"token_cost": MONEY, "gateway_reported_token_cost": MONEY, "list_estimate_token_cost": MONEY}
    invoiced = pl.DataFrame({"token_cost": [Decimal("1")], "gateway_reported_token_cost": [Decimal(0)], "list_estimate_token_cost": [None]}, schema=money)
    assert not any("estimates" in line for line in readable(invoiced)[1])
    estimated = invoiced.with_columns(list_estimate_token_cost=pl.lit(Decimal("0.25"), MONEY))
    assert any("list_estimate_token_cost" in line for line in readable(estimated)[1])


def test_readable_adds_no_legend_when_there_is_nothing_to_explain():
    shown, legend = readable(pl.DataFrame({"billing_period": ["2026-03"], "intents": [5]}))
    assert legend == [] and shown.columns == ["billing_period", "intents"]


def test_progress_lines_count_steps_and_estimate_the_time_left():
    out = io.StringIO()
    with Progress(4, "materialize", out) as progress:
        for k in range(4):
            progress.step(f"step {k + 1}")
    lines = out.getvalue().splitlines()
    assert [re.search(r"\] (\d)/4 step (\d)", line).groups() for line in lines] == [(str(k), str(k)) for k in range(1, 5)]
    assert lines[1].startswith("[" + "#" * 12 + "." * 12 + "]") and lines[-1].startswith("[" + "#" * 24 + "]")
    assert all("elapsed" in line for line in lines)


def test_cli_runs_are_recorded_in_the_instance_of_the_repo_dagster_yaml(tmp_path, monkeypatch):
    """A data root beside a dagster.yaml (./data in the repo, what `make ui` opens): the CLI's runs
    go to that instance's storage, relative paths resolved against its folder, whatever the
    working directory; without one, an ephemeral instance."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert dagster_instance(Layout(tmp_path / "elsewhere" / "data")).is_ephemeral
    home = tmp_path / "repo"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    layout = Layout(home / "data")

    @dg.asset
    def probe() -> int:
        return 1

    instance = dagster_instance(layout)
    assert not instance.is_ephemeral
    assert dg.materialize([probe], instance=instance).success
    again = dagster_instance(layout)
    assert len(again.get_run_records()) == 1
    assert (home / ".dagster" / "storage").is_dir() and not (tmp_path / ".dagster").exists()
