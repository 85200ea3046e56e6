"""Decision tables on hand-built daily sums. Every expectation is computed in the test from the
per-intent values it starts from (plain Python: sums, statistics.variance, the textbook interval
formulas), never from the code under test."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from schemas.decisions import (
    BreakEven,
    CostBreakdown,
    CostPerSuccessTrend,
    LabelCoverage,
    MoneyBreakdown,
    TurnCosts,
    VersionRegressions,
    WeightedCostPerSuccess,
    WorkflowClassCosts,
)
from schemas.types import MONEY, TIMESTAMP
from unitledger.config import ConfigError, load_settings
from unitledger.model import decisions

Z = 1.959963984540054
DAY1 = date(2026, 3, 2)
L75 = Decimal("75")


# ---------------------------------------------------------------------------------------------
# Hand-built intents and their daily sums (the cost_per_success columns the decisions read)
# ---------------------------------------------------------------------------------------------


@dataclass
class Intent:
    day: date
    model: str | None
    outcome: str  # success | failure | unlabeled
    token: Decimal
    labor: Decimal = Decimal(0)  # L when the outcome is failure
    feature: str = "support_chat"
    prompt: str | None = "v1"
    currency: str | None = "USD"

    @property
    def total(self) -> Decimal:
        return self.token + (self.labor if self.outcome == "failure" else 0)


def daily_rows(intents: list[Intent]) -> pl.LazyFrame:
    """cost_per_success-shaped rows (sums and moments) per date × feature × model × prompt × currency."""
    groups: dict[tuple, list[Intent]] = {}
    for i in intents:
        groups.setdefault((i.day, i.feature, i.model, i.prompt, i.currency), []).append(i)
    rows = []
    for (day, feature, model, prompt, currency), members in groups.items():
        labeled = [i for i in members if i.outcome != "unlabeled"]
        billed = currency is not None
        rows.append(
            {
                "date": day, "feature_tag": feature, "model_version": model, "prompt_version": prompt,
                "billing_currency": currency, "intents": len(members), "labeled_intents": len(labeled),
                "successes": sum(i.outcome == "success" for i in labeled),
                "failures": sum(i.outcome == "failure" for i in labeled),
                "escalations": 0,
                "token_cost": sum((i.token for i in labeled), Decimal(0)) if billed else None,
                "allocated_token_cost": Decimal(0) if billed else None,  # no aggregated rows here
                "gateway_reported_token_cost": Decimal(0) if billed else None,  # nor estimates
                "list_estimate_token_cost": Decimal(0) if billed else None,
                "labor_cost": sum((i.total - i.token for i in labeled), Decimal(0)) if billed else None,
                "total_cost": sum((i.total for i in labeled), Decimal(0)) if billed else None,
                "success_total_cost": sum((i.total for i in labeled if i.outcome == "success"), Decimal(0)) if billed else None,
                "total_cost_sq": sum(float(i.total) ** 2 for i in labeled) if billed else None,
            }
        )
    money = {c: MONEY for c in ("token_cost", "allocated_token_cost", "gateway_reported_token_cost", "list_estimate_token_cost", "labor_cost", "total_cost", "success_total_cost")}
    return pl.DataFrame(rows, schema_overrides={**money, "total_cost_sq": pl.Float64}).lazy()


def labor_table(amount: Decimal = L75, currency: str = "USD") -> pl.LazyFrame:
    return pl.DataFrame(
        {"feature_tag": [None], "billing_currency": [currency], "labor_cost_per_failure": [amount]},
        schema={"feature_tag": pl.String, "billing_currency": pl.String, "labor_cost_per_failure": MONEY},
    ).lazy()


def model_intents(model: str, n: int, failures: int, tokens: tuple[str, str], labor: Decimal = L75,
                  days: int = 2, unlabeled: int = 0, **kw) -> list[Intent]:
    """n labeled intents (the first `failures` fail), token costs alternating between two values,
    spread over `days` days; plus `unlabeled` intents that must not count."""
    out = []
    for k in range(n + unlabeled):
        outcome = "unlabeled" if k >= n else ("failure" if k < failures else "success")
        out.append(Intent(DAY1 + timedelta(days=k % days), model, outcome, Decimal(tokens[k % 2]), labor, **kw))
    return out


def wilson(successes: int, n: int) -> tuple[float, float]:
    p = successes / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z / (1 + Z * Z / n) * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return centre - half, centre + half


def cps_and_se(members: list[Intent], labor: Decimal | None = None, factor: Decimal = Decimal(1)) -> tuple[float, float]:
    """Cost per success and its delta-method standard error, from the intents themselves:
    residuals e = X − R·Y, Var(R) = n Σe² / ((n − 1) (ΣY)²)."""
    labeled = [i for i in members if i.outcome != "unlabeled"]
    xs = [float(i.token * factor + ((labor if labor is not None else i.labor) if i.outcome == "failure" else 0)) for i in labeled]
    ys = [1.0 if i.outcome == "success" else 0.0 for i in labeled]
    r = sum(xs) / sum(ys)
    n = len(xs)
    residual = sum((x - r * y) ** 2 for x, y in zip(xs, ys))
    return r, math.sqrt(n * residual / ((n - 1) * sum(ys) ** 2))


def tco_and_variance(members: list[Intent], labor: Decimal | None = None, factor: Decimal = Decimal(1)) -> tuple[float, float]:
    labeled = [i for i in members if i.outcome != "unlabeled"]
    xs = [float(i.token * factor + ((labor if labor is not None else i.labor) if i.outcome == "failure" else 0)) for i in labeled]
    return statistics.fmean(xs), statistics.variance(xs) / len(xs)


def window(rows: pl.LazyFrame) -> tuple[date, date]:
    return DAY1, DAY1 + timedelta(days=31)


# ---------------------------------------------------------------------------------------------
# Break-even: the reference case to the cent
# ---------------------------------------------------------------------------------------------

# Budget: C = 0.08 (tokens alternate 0.05 / 0.11), p = 45 %; frontier: C = 1.04 (1.00 / 1.08), p = 8 %.
BUDGET = model_intents("budget-1", 100, 45, ("0.05", "0.11"), unlabeled=7)
FRONTIER = model_intents("frontier-1", 100, 8, ("1.00", "1.08"), unlabeled=3)


def reference_row() -> dict:
    rows = daily_rows(BUDGET + FRONTIER)
    result = decisions.break_even(rows, labor_table(), *window(rows)).collect()
    BreakEven.validate(result)
    assert result.height == 1
    return result.row(0, named=True)


def test_reference_case_reproduces_to_the_cent():
    row = reference_row()
    assert (row["model_a"], row["model_b"]) == ("budget-1", "frontier-1")  # a: the lower token cost per intent
    assert row["labeled_intents_a"] == 100 and row["labeled_intents_b"] == 100  # unlabeled intents left out
    assert row["token_cost_a"] == Decimal("8.00") and row["token_cost_b"] == Decimal("104.00")  # exact sums
    assert row["token_cost_per_intent_a"] == pytest.approx(0.08, abs=1e-12)
    assert row["token_cost_per_intent_b"] == pytest.approx(1.04, abs=1e-12)
    assert (row["failure_rate_a"], row["failure_rate_b"]) == (0.45, 0.08)
    assert row["labor_cost_per_failure"] == L75
    assert round(row["tco_a"], 2) == 33.83 and round(row["tco_b"], 2) == 7.04
    assert row["tco_a"] == pytest.approx(0.08 + 0.45 * 75) and row["tco_b"] == pytest.approx(1.04 + 0.08 * 75)
    assert round(row["delta_token_cost"], 2) == 0.96
    assert row["delta_failure_rate"] == pytest.approx(0.37)
    assert round(100 * row["break_even_failure_gap"], 2) == 1.28  # Δp* = 1.28 pp
    assert row["break_even_failure_gap"] == pytest.approx(0.96 / 75)
    assert row["break_even_labor_cost"] == pytest.approx(0.96 / 0.37)  # L* = $2.59: far below L = $75
    assert row["cost_per_success_a"] == pytest.approx(3383 / 55)
    assert row["cost_per_success_b"] == pytest.approx(704 / 92)
    assert row["cheaper_per_success"] == "frontier-1"
    assert row["sample_ok"] is True and row["significant"] is True
    assert row["verdict"] == "frontier-1 cheaper per success (significant at 95%)"
    assert row["scenario"] == decisions.ACTUAL


def test_reference_case_intervals_match_the_textbook_formulas():
    row = reference_row()
    for side, f, n in (("a", 45, 100), ("b", 8, 100)):
        low, high = wilson(f, n)
        assert row[f"failure_rate_{side}_ci95_low"] == pytest.approx(low)
        assert row[f"failure_rate_{side}_ci95_high"] == pytest.approx(high)
    # Wilson 45/100 and 8/100, as published tables give them (3 decimals).
    assert round(row["failure_rate_a_ci95_low"], 3) == 0.356 and round(row["failure_rate_a_ci95_high"], 3) == 0.548
    assert round(row["failure_rate_b_ci95_low"], 3) == 0.041 and round(row["failure_rate_b_ci95_high"], 3) == 0.150
    # Newcombe: Δp ± the root of the squared distances to the Wilson bounds.
    la, ha = wilson(45, 100)
    lb, hb = wilson(8, 100)
    assert row["delta_failure_rate_ci95_low"] == pytest.approx(0.37 - math.sqrt((0.45 - la) ** 2 + (hb - 0.08) ** 2))
    assert row["delta_failure_rate_ci95_high"] == pytest.approx(0.37 + math.sqrt((ha - 0.45) ** 2 + (0.08 - lb) ** 2))
    tco_a, var_a = tco_and_variance(BUDGET)
    tco_b, var_b = tco_and_variance(FRONTIER)
    assert row["tco_difference"] == pytest.approx(tco_b - tco_a)
    assert row["tco_difference_ci95_low"] == pytest.approx(tco_b - tco_a - Z * math.sqrt(var_a + var_b))
    cps_a, se_a = cps_and_se(BUDGET)
    cps_b, se_b = cps_and_se(FRONTIER)
    assert row["cost_per_success_a_ci95_low"] == pytest.approx(cps_a - Z * se_a)
    assert row["cost_per_success_b_ci95_high"] == pytest.approx(cps_b + Z * se_b)
    assert row["cost_per_success_difference_ci95_high"] == pytest.approx(cps_b - cps_a + Z * math.hypot(se_a, se_b))


def test_days_summed_equal_one_day():
    """Re-aggregating daily sums gives what one day holding every intent gives."""
    spread = daily_rows(BUDGET + FRONTIER)
    one_day = daily_rows([Intent(DAY1, i.model, i.outcome, i.token, i.labor) for i in BUDGET + FRONTIER])
    a = decisions.break_even(spread, labor_table(), *window(spread)).collect()
    b = decisions.break_even(one_day, labor_table(), *window(one_day)).collect()
    for column in ("tco_a", "tco_b", "tco_difference_ci95_low", "cost_per_success_a_ci95_high", "delta_failure_rate_ci95_low"):
        assert a[column][0] == pytest.approx(b[column][0])


@pytest.mark.parametrize("labeled, expected_ok", [(99, False), (100, True)])
def test_not_enough_data_under_100_labeled_intents_each(labeled, expected_ok):
    budget = model_intents("budget-1", labeled, labeled * 45 // 100, ("0.05", "0.11"))
    rows = daily_rows(budget + FRONTIER)
    row = decisions.break_even(rows, labor_table(), *window(rows)).collect().row(0, named=True)
    assert row["sample_ok"] is expected_ok
    if expected_ok:
        assert row["verdict"].startswith("frontier-1 cheaper per success")
        assert row["significant"] is True
    else:
        assert row["verdict"] == f"not enough data: {labeled} and 100 labeled intents (100 each needed)"
        assert row["significant"] is None
        assert row["tco_a"] is not None  # the figures are still there, the verdict withheld


@pytest.mark.parametrize("frontier_failures, significant", [(44, False), (20, True)])
def test_significance_follows_the_interval_of_the_difference(frontier_failures, significant):
    """Both models cost about the same per success (44 failures): not significant; 20: significant."""
    budget = model_intents("budget-1", 400, 180, ("0.05", "0.11"))
    frontier = model_intents("frontier-1", 400, frontier_failures * 4, ("1.00", "1.08"))
    rows = daily_rows(budget + frontier)
    row = decisions.break_even(rows, labor_table(), *window(rows)).collect().row(0, named=True)
    cps_a, se_a = cps_and_se(budget)
    cps_b, se_b = cps_and_se(frontier)
    assert (abs(cps_b - cps_a) > Z * math.hypot(se_a, se_b)) is significant  # the hand computation agrees
    assert row["significant"] is significant
    assert row["verdict"].endswith("(significant at 95%)" if significant else "(not significant at 95%)")


def test_pairs_of_three_models_and_currencies_never_mixed():
    third = model_intents("mid-1", 100, 20, ("0.40", "0.60"))
    eur = model_intents("budget-1", 100, 45, ("0.05", "0.11"), currency="EUR")
    rows = daily_rows(BUDGET + FRONTIER + third + eur)
    labor = pl.concat([labor_table(), labor_table(Decimal("70"), "EUR")])
    result = decisions.break_even(rows, labor, *window(rows)).collect().sort("model_a", "model_b")
    pairs = list(zip(result["billing_currency"], result["model_a"], result["model_b"]))
    # C: budget 0.08 < mid 0.50 < frontier 1.04; EUR has one model, so no pair.
    assert pairs == [("USD", "budget-1", "frontier-1"), ("USD", "budget-1", "mid-1"), ("USD", "mid-1", "frontier-1")]


def test_a_currency_missing_from_the_labor_table_keeps_the_stored_l():
    rows = daily_rows(model_intents("budget-1", 100, 45, ("0.05", "0.11"), labor=Decimal("40"), currency="EUR")
                      + model_intents("frontier-1", 100, 8, ("1.00", "1.08"), labor=Decimal("40"), currency="EUR"))
    row = decisions.break_even(rows, labor_table(), *window(rows)).collect().row(0, named=True)  # USD only
    assert row["labor_cost_per_failure"] == Decimal("40")
    assert row["tco_a"] == pytest.approx(0.08 + 0.45 * 40)


def test_unbilled_rows_and_rows_outside_the_window_are_left_out():
    unbilled = model_intents("budget-1", 50, 50, ("0.05", "0.11"), currency=None)
    late = [Intent(DAY1 + timedelta(days=40), "budget-1", "failure", Decimal("9")) for _ in range(30)]
    rows = daily_rows(BUDGET + FRONTIER + unbilled + late)
    row = decisions.break_even(rows, labor_table(), *window(rows)).collect().row(0, named=True)
    assert row["labeled_intents_a"] == 100 and row["failure_rate_a"] == 0.45


# ---------------------------------------------------------------------------------------------
# What-if
# ---------------------------------------------------------------------------------------------


def test_what_if_changes_only_the_scenario_rows():
    rows = daily_rows(BUDGET + FRONTIER)
    before = rows.collect()
    scenario = decisions.Scenario(
        "next quarter", labor=labor_table(Decimal("100")), price_multipliers={"frontier-1": Decimal("0.5")}
    )
    result = decisions.what_if(rows, labor_table(), *window(rows), scenario).collect()
    BreakEven.validate(result)
    actual = result.filter(pl.col("scenario") == decisions.ACTUAL)
    assert actual.equals(decisions.break_even(rows, labor_table(), *window(rows)).collect())
    assert rows.collect().equals(before)  # the billed sums are untouched
    what = result.filter(pl.col("scenario") == "next quarter").row(0, named=True)
    assert what["scenario_description"] == "L USD default = 100; prices of frontier-1 x 0.5"
    assert (what["model_a"], what["model_b"]) == ("budget-1", "frontier-1")  # same pair, same order
    assert what["labor_cost_per_failure"] == Decimal("100")
    assert what["token_cost_b"] == Decimal("52.00") and what["token_cost_a"] == Decimal("8.00")
    assert what["tco_a"] == pytest.approx(0.08 + 0.45 * 100)
    assert what["tco_b"] == pytest.approx(0.52 + 0.08 * 100)
    assert what["break_even_failure_gap"] == pytest.approx((0.52 - 0.08) / 100)
    assert what["break_even_labor_cost"] == pytest.approx(0.44 / 0.37)
    # The moments were transformed exactly: intervals equal those of the repriced intents.
    tco_a, var_a = tco_and_variance(BUDGET, labor=Decimal("100"))
    tco_b, var_b = tco_and_variance(FRONTIER, labor=Decimal("100"), factor=Decimal("0.5"))
    assert what["tco_difference_ci95_high"] == pytest.approx(tco_b - tco_a + Z * math.sqrt(var_a + var_b))
    cps_b, se_b = cps_and_se(FRONTIER, labor=Decimal("100"), factor=Decimal("0.5"))
    assert what["cost_per_success_b"] == pytest.approx(cps_b)
    assert what["cost_per_success_b_ci95_low"] == pytest.approx(cps_b - Z * se_b)
    actual_row = actual.row(0, named=True)
    assert what["tco_a"] != actual_row["tco_a"] and what["tco_b"] != actual_row["tco_b"]


def test_a_repricing_can_flip_delta_c_and_keeps_the_pair_order():
    rows = daily_rows(BUDGET + FRONTIER)
    scenario = decisions.Scenario("cut", price_multipliers={"frontier-1": Decimal("0.05")})  # C_b = 0.052
    what = decisions.what_if(rows, labor_table(), *window(rows), scenario).collect().filter(pl.col("scenario") == "cut").row(0, named=True)
    assert (what["model_a"], what["model_b"]) == ("budget-1", "frontier-1")
    assert what["delta_token_cost"] == pytest.approx(0.052 - 0.08)
    assert what["break_even_labor_cost"] < 0  # frontier pays off whatever L is


def test_what_if_from_the_config(tmp_path: Path):
    config = tmp_path / "u.toml"
    config.write_text(
        '[labor.USD]\ndefault = { flat = "75" }\n'
        '[decisions.what_if.labor.USD]\ndefault = { hourly_rate = "60", minutes_to_fix = 90 }\n'
        '[decisions.what_if.price_multipliers]\n"frontier-1" = "0.5"\n'
    )
    settings = load_settings(config)
    scenario = decisions.Scenario.from_config(settings.decisions.what_if)
    rows = daily_rows(BUDGET + FRONTIER)
    what = decisions.what_if(rows, settings.labor_table(), *window(rows), scenario).collect().row(1, named=True)
    assert what["labor_cost_per_failure"] == Decimal("90")  # 60 an hour × 90 minutes
    assert what["tco_b"] == pytest.approx(0.52 + 0.08 * 90)


# ---------------------------------------------------------------------------------------------
# Where the money goes
# ---------------------------------------------------------------------------------------------


def t(minute: int) -> datetime:
    return datetime(2026, 3, 2, 10, minute, tzinfo=timezone.utc)


def requests_frame(rows: list[dict], typed: bool = True, tool: bool = True) -> pl.LazyFrame:
    """request_costs-shaped rows, with the optional per-token-type cost and after_tool_call columns."""
    out = []
    for r in rows:
        row = {
            "request_id": r["id"], "date": DAY1, "session_id": r["session"], "called_at": t(r["minute"]),
            "attempt": r.get("attempt", 1), "status": r.get("status", "ok"),
            "effective_cost": None if r["cost"] is None else Decimal(r["cost"]),
            "input_tokens": r.get("tokens", (0, 0, 0, 0))[0] + r.get("tokens", (0, 0, 0, 0))[2] + r.get("tokens", (0, 0, 0, 0))[3],
            "output_tokens": r.get("tokens", (0, 0, 0, 0))[1],
            "cache_read_input_tokens": r.get("tokens", (0, 0, 0, 0))[2],
            "cache_write_input_tokens": r.get("tokens", (0, 0, 0, 0))[3],
        }
        if typed:
            split = r.get("split")
            for k, name in enumerate(decisions.TYPED_COSTS):
                row[name] = None if split is None else Decimal(split[k])
        if tool:
            row["after_tool_call"] = r.get("tool", False)
        out.append(row)
    money = {c: MONEY for c in ("effective_cost", *decisions.TYPED_COSTS)}
    return pl.DataFrame(out, schema_overrides={**money, "called_at": TIMESTAMP}).lazy()


CALLS = [
    # s1: first turn (its cache write carved out), a failed first attempt and its retry, a tool
    # round trip, a later turn. Split: (input, output, cache read, cache write); tokens likewise.
    {"id": "r1", "session": "s1", "minute": 0, "cost": "0.10", "split": ("0.02", "0.05", "0.01", "0.02"), "tokens": (200, 100, 500, 80)},
    {"id": "r2", "session": "s1", "minute": 1, "cost": "0.03", "status": "error", "split": ("0.01", "0.02", "0", "0"), "tokens": (100, 40, 0, 0)},
    {"id": "r3", "session": "s1", "minute": 2, "cost": "0.04", "attempt": 2, "split": ("0.01", "0.03", "0", "0"), "tokens": (100, 60, 0, 0)},
    {"id": "r4", "session": "s1", "minute": 5, "cost": "0.05", "tool": True, "split": ("0.02", "0.02", "0.01", "0"), "tokens": (200, 40, 500, 0)},
    {"id": "r5", "session": "s1", "minute": 6, "cost": "0.06", "split": ("0.02", "0.03", "0.01", "0"), "tokens": (200, 60, 500, 0)},
    # s2: one call, a success.
    {"id": "r6", "session": "s2", "minute": 3, "cost": "0.07", "split": ("0.03", "0.04", "0", "0"), "tokens": (300, 80, 0, 0)},
    # s3: nothing billed.
    {"id": "r7", "session": "s3", "minute": 4, "cost": None},
    # A call of a session dated another day (lookaround): not ours.
    {"id": "r8", "session": "s9", "minute": 9, "cost": "5.00", "split": ("5", "0", "0", "0"), "tokens": (10, 0, 0, 0)},
]


def intents_frame() -> pl.LazyFrame:
    return pl.DataFrame(
        [
            {"session_id": "s1", "date": DAY1, "feature_tag": "chat", "model_version": "m-1", "prompt_version": "v1",
             "billing_currency": "USD", "requests": 5, "turns": 4, "outcome": "failure", "escalated": True,
             "token_cost": Decimal("0.28"), "labor_cost": Decimal("2"), "total_cost": Decimal("2.28")},
            {"session_id": "s2", "date": DAY1, "feature_tag": "chat", "model_version": "m-1", "prompt_version": "v1",
             "billing_currency": "USD", "requests": 1, "turns": 1, "outcome": "success", "escalated": False,
             "token_cost": Decimal("0.07"), "labor_cost": Decimal("0"), "total_cost": Decimal("0.07")},
            {"session_id": "s3", "date": DAY1, "feature_tag": "chat", "model_version": "m-1", "prompt_version": "v1",
             "billing_currency": None, "requests": 1, "turns": 1, "outcome": "unlabeled", "escalated": None,
             "token_cost": None, "labor_cost": None, "total_cost": None},
        ],
        schema_overrides={"token_cost": MONEY, "labor_cost": MONEY, "total_cost": MONEY},
    ).lazy()


def breakdown_by_bucket(typed: bool = True, tool: bool = True) -> dict[tuple, dict]:
    frame = decisions.cost_breakdown(requests_frame(CALLS, typed, tool), intents_frame()).collect()
    CostBreakdown.validate(frame)
    return {(r["billing_currency"], r["turns_bucket"]): r for r in frame.iter_rows(named=True)}


def test_breakdown_puts_each_call_in_one_component():
    rows = breakdown_by_bucket()
    assert set(rows) == {("USD", "4-5"), ("USD", "1"), (None, "1")}
    s1 = rows[("USD", "4-5")]
    assert s1["cache_write_cost"] == Decimal("0.02")  # r1's cache write
    assert s1["first_attempt_cost"] == Decimal("0.08")  # r1 without its cache write
    assert s1["retry_cost"] == Decimal("0.07")  # r2 failed + r3 attempt 2
    assert s1["tool_cost"] == Decimal("0.05") and s1["tool_requests"] == 1
    assert s1["multi_turn_cost"] == Decimal("0.06")
    assert s1["wasted_requests"] == 2 and s1["requests"] == 5
    assert s1["token_cost"] == Decimal("0.28") and s1["labor_cost"] == Decimal("2") and s1["total_cost"] == Decimal("2.28")
    assert (s1["failures"], s1["escalations"], s1["labeled_total_cost"]) == (1, 1, Decimal("2.28"))
    assert (s1["input_cost"], s1["output_cost"], s1["cache_read_cost"]) == (Decimal("0.08"), Decimal("0.15"), Decimal("0.03"))
    assert (s1["input_tokens"], s1["output_tokens"], s1["cache_read_tokens"], s1["cache_write_tokens"]) == (800, 300, 1500, 80)
    s2 = rows[("USD", "1")]
    assert s2["first_attempt_cost"] == Decimal("0.07") and s2["multi_turn_cost"] == 0 and s2["retry_cost"] == 0
    unbilled = rows[(None, "1")]
    assert unbilled["intents"] == 1 and unbilled["total_cost"] is None and unbilled["first_attempt_cost"] is None


def test_breakdown_without_the_optional_columns_keeps_their_cost_in_the_others():
    rows = breakdown_by_bucket(typed=False, tool=False)
    s1 = rows[("USD", "4-5")]
    assert s1["cache_write_cost"] is None and s1["tool_cost"] is None and s1["tool_requests"] is None
    assert s1["input_cost"] is None and s1["cache_read_tokens"] is None
    assert s1["first_attempt_cost"] == Decimal("0.10")  # r1 whole
    assert s1["multi_turn_cost"] == Decimal("0.11")  # r4 and r5 are later turns
    assert s1["retry_cost"] == Decimal("0.07")


def test_breakdown_first_turn_is_the_earliest_attempt_one_call_ties_by_request_id():
    """The first turn is each intent's earliest call with attempt 1 (ties on called_at: the
    smallest request_id); counted in first_attempt_cost only when it is not an error, else in
    retry_cost and the intent has no first-attempt cost; a later retry or an earlier one is never
    the first turn; an unbilled first turn adds nothing. Sessions told apart by feature."""
    calls = [
        # a: a retry before any first attempt, two attempt-1 calls at the same minute, a later turn
        {"id": "a1", "session": "a", "minute": 0, "cost": "0.50", "attempt": 2},
        {"id": "a2", "session": "a", "minute": 1, "cost": "0.10"},
        {"id": "a0b", "session": "a", "minute": 1, "cost": "0.20"},
        {"id": "a4", "session": "a", "minute": 2, "cost": "0.30"},
        # b: the first attempt-1 call failed; the next is a later turn
        {"id": "b1", "session": "b", "minute": 0, "cost": "0.10", "status": "error"},
        {"id": "b2", "session": "b", "minute": 1, "cost": "0.20"},
        # c: retries only
        {"id": "c1", "session": "c", "minute": 0, "cost": "0.40", "attempt": 2},
        # d: an unbilled first turn, then a billed later turn
        {"id": "d1", "session": "d", "minute": 0, "cost": None},
        {"id": "d2", "session": "d", "minute": 1, "cost": "0.30"},
    ]
    money = {"a": "1.10", "b": "0.30", "c": "0.40", "d": "0.30"}
    intents = pl.DataFrame(
        [
            {"session_id": s, "date": DAY1, "feature_tag": s, "model_version": "m-1", "prompt_version": "v1", "billing_currency": "USD",
             "requests": n, "turns": 1, "outcome": "unlabeled", "escalated": None,
             "token_cost": Decimal(money[s]), "labor_cost": Decimal(0), "total_cost": Decimal(money[s])}
            for s, n in (("a", 4), ("b", 2), ("c", 1), ("d", 2))
        ],
        schema_overrides={"token_cost": MONEY, "labor_cost": MONEY, "total_cost": MONEY},
    ).lazy()
    frame = decisions.cost_breakdown(requests_frame(calls, typed=False, tool=False), intents).collect()
    CostBreakdown.validate(frame)
    got = {r["feature_tag"]: (r["first_attempt_cost"], r["multi_turn_cost"], r["retry_cost"], r["wasted_requests"]) for r in frame.iter_rows(named=True)}
    assert got == {
        "a": (Decimal("0.20"), Decimal("0.40"), Decimal("0.50"), 1),
        "b": (Decimal("0"), Decimal("0.20"), Decimal("0.10"), 1),
        "c": (Decimal("0"), Decimal("0"), Decimal("0.40"), 1),
        "d": (Decimal("0"), Decimal("0.30"), Decimal("0"), 0),
    }


def test_breakdown_check_fails_when_components_do_not_add_up():
    frame = decisions.cost_breakdown(requests_frame(CALLS), intents_frame()).collect()
    broken = frame.with_columns(
        retry_cost=pl.when(pl.col("turns_bucket") == "4-5").then(pl.col("retry_cost") + Decimal("0.01")).otherwise(pl.col("retry_cost"))
    )
    import pandera.errors

    with pytest.raises(pandera.errors.SchemaErrors, match="components_add_up"):
        CostBreakdown.validate(broken, lazy=True)


def test_money_breakdown_shares_sum_to_total_exactly():
    frame = decisions.cost_breakdown(requests_frame(CALLS), intents_frame())
    result = decisions.money_breakdown(frame, DAY1, DAY1 + timedelta(days=1)).collect()
    MoneyBreakdown.validate(result)
    assert result.height == 1  # the unbilled intent has no currency: not in a money table
    row = result.row(0, named=True)
    parts = ["first_attempt_cost", "multi_turn_cost", "retry_cost", "tool_cost", "cache_write_cost", "labor_cost"]
    assert sum(row[c] for c in parts) == row["total_cost"] == Decimal("2.35")
    assert [row[c] for c in parts] == [Decimal(x) for x in ("0.15", "0.06", "0.07", "0.05", "0.02", "2")]
    shares = [row[c.replace("_cost", "_share")] for c in parts]
    assert shares == pytest.approx([0.15 / 2.35, 0.06 / 2.35, 0.07 / 2.35, 0.05 / 2.35, 0.02 / 2.35, 2 / 2.35])
    assert sum(shares) == pytest.approx(1.0)
    # Cache effect at this model's uncached input price: input 0.11 for 1100 tokens = 0.0001 a token.
    rate = 0.11 / 1100
    read_savings = 1500 * rate - 0.03
    write_premium = 0.02 - 80 * rate
    assert row["cache_read_savings"] == pytest.approx(read_savings)
    assert row["cache_write_premium"] == pytest.approx(write_premium)
    assert row["cache_net_savings"] == pytest.approx(read_savings - write_premium)
    assert row["cache_write_premium_per_read_token"] == pytest.approx(write_premium / 1500)
    assert row["no_cache_token_cost"] == pytest.approx(0.35 + read_savings - write_premium)


def test_turn_costs_by_bucket():
    frame = decisions.cost_breakdown(requests_frame(CALLS), intents_frame())
    result = decisions.turn_costs(frame, DAY1, DAY1 + timedelta(days=1)).collect()
    TurnCosts.validate(result)
    rows = {r["turns_bucket"]: r for r in result.iter_rows(named=True)}
    assert rows["4-5"]["intent_share"] == 0.5 and rows["1"]["intent_share"] == 0.5
    assert rows["4-5"]["cost_share"] == pytest.approx(2.28 / 2.35)
    assert rows["4-5"]["success_rate"] == 0.0 and rows["4-5"]["cost_per_success"] is None
    assert rows["1"]["success_rate"] == 1.0 and rows["1"]["cost_per_success"] == pytest.approx(0.07)
    assert rows["4-5"]["token_cost_per_intent"] == pytest.approx(0.28)


@pytest.mark.parametrize("turns, bucket", [(0, "1"), (1, "1"), (2, "2-3"), (3, "2-3"), (4, "4-5"), (5, "4-5"), (6, "6+"), (40, "6+")])
def test_turns_buckets(turns, bucket):
    assert pl.select(decisions.turns_bucket(pl.lit(turns))).item() == bucket


# ---------------------------------------------------------------------------------------------
# Weighted cost per successful task
# ---------------------------------------------------------------------------------------------


def class_intents() -> list[Intent]:
    """Model A: support 2.00 per success (4 intents, 2 succeed, token 1.00 each), code 4.00 (2 of 4,
    token 2.00); model B serves support only: 1.00 per success (2 intents, both succeed, 1.00 each)."""
    out = []
    for k in range(4):
        out.append(Intent(DAY1, "A", "success" if k < 2 else "failure", Decimal("1.00"), Decimal(0), feature="support_chat"))
        out.append(Intent(DAY1, "A", "success" if k < 2 else "failure", Decimal("2.00"), Decimal(0), feature="code_review"))
    out += [Intent(DAY1, "B", "success", Decimal("1.00"), feature="support_chat") for _ in range(2)]
    return out


def classes(weights: tuple[float | None, float | None]) -> pl.LazyFrame:
    return pl.DataFrame(
        {"workflow_class": ["support", "engineering"], "feature_tag": ["support_chat", "code_review"], "weight": list(weights)},
        schema={"workflow_class": pl.String, "feature_tag": pl.String, "weight": pl.Float64},
    ).lazy()


def test_weighted_cost_per_success_with_configured_weights():
    rows = daily_rows(class_intents())
    per_class = decisions.workflow_class_costs(rows, *window(rows), classes((3.0, 1.0)), "config")
    WorkflowClassCosts.validate(per_class.collect())
    result = decisions.weighted_cost_per_success(per_class).collect()
    WeightedCostPerSuccess.validate(result)
    by_model = {r["model_version"]: r for r in result.iter_rows(named=True)}
    assert by_model["A"]["weighted_cost_per_success"] == pytest.approx(0.75 * 2.0 + 0.25 * 4.0)
    assert by_model["A"]["classes_served"] == 2 and by_model["A"]["missing_classes"] == ""
    assert by_model["B"]["weighted_cost_per_success"] is None  # B does not serve engineering
    assert by_model["B"]["missing_classes"] == "engineering" and by_model["B"]["weight_served"] == 0.75
    assert by_model["B"]["served_weighted_cost_per_success"] == pytest.approx(1.0)
    assert by_model["A"]["sample_ok"] is False


def test_weighted_cost_per_success_with_observed_weights():
    rows = daily_rows(class_intents())
    per_class = decisions.workflow_class_costs(rows, *window(rows), classes((None, None)), "observed").collect()
    weights = {r["workflow_class"]: r["weight"] for r in per_class.iter_rows(named=True)}
    # support: 4 + 2 intents, engineering 4, of 10.
    assert weights == {"support": pytest.approx(0.6), "engineering": pytest.approx(0.4)}
    a = decisions.weighted_cost_per_success(per_class.lazy()).collect().filter(pl.col("model_version") == "A").row(0, named=True)
    assert a["weighted_cost_per_success"] == pytest.approx(0.6 * 2.0 + 0.4 * 4.0)
    assert a["weight_source"] == "observed"


def test_without_classes_each_feature_is_its_own_class():
    rows = daily_rows(class_intents())
    per_class = decisions.workflow_class_costs(rows, *window(rows)).collect()
    assert set(per_class["workflow_class"]) == {"support_chat", "code_review"}


# ---------------------------------------------------------------------------------------------
# Trends and regressions
# ---------------------------------------------------------------------------------------------


def trend_intents() -> list[Intent]:
    """Day k (0..9, day 5 without intents): k + 1 successes and one failure, token 1.00 each, L 10."""
    out = []
    for k in range(10):
        if k == 5:
            continue
        day = DAY1 + timedelta(days=k)
        out += [Intent(day, "m", "success", Decimal("1.00")) for _ in range(k + 1)]
        out.append(Intent(day, "m", "failure", Decimal("1.00"), Decimal("10")))
    return out


def test_rolling_windows_sum_the_days_of_each_window():
    rows = daily_rows(trend_intents())
    result = decisions.cost_per_success_trends(rows, DAY1, DAY1 + timedelta(days=10)).collect()
    CostPerSuccessTrend.validate(result)

    def expected(last: int, days: int) -> tuple[int, float]:
        ks = [k for k in range(last - days + 1, last + 1) if 0 <= k and k != 5]
        successes = sum(k + 1 for k in ks)
        return len(ks), (successes + len(ks) * 11) / successes  # each day: tokens k + 2, labor 10

    for days in (1, 7, 30):
        for row in result.filter(pl.col("window_days") == days).iter_rows(named=True):
            last = (row["date"] - DAY1).days
            with_data, cps = expected(last, days)
            assert row["days_with_data"] == with_data
            assert row["cost_per_success"] == pytest.approx(cps)
    assert DAY1 + timedelta(days=5) not in result["date"].to_list()  # only days with intents
    assert result.filter(pl.col("window_days") == 7).height == 9


def test_trends_read_days_before_the_window_for_full_windows():
    rows = daily_rows(trend_intents())
    result = decisions.cost_per_success_trends(rows, DAY1 + timedelta(days=9), DAY1 + timedelta(days=10), windows=(7,)).collect()
    assert result.height == 1 and result["days_with_data"][0] == 6  # days 3..9 but 5


def version_intents(feature: str, after_token: str, n_before: int = 280, n_after: int = 280) -> list[Intent]:
    """v1 for 14 days, then v2 from day 14: 80 % success; token costs alternate around 1.00 before and `after_token` after."""
    out = []
    for k in range(n_before):
        out.append(Intent(DAY1 + timedelta(days=k % 14), "m", "success" if k % 5 else "failure",
                          Decimal("0.90") if k % 2 else Decimal("1.10"), Decimal("5"), feature=feature, prompt="v1"))
    after = Decimal(after_token)
    for k in range(n_after):
        out.append(Intent(DAY1 + timedelta(days=14 + k % 14), "m", "success" if k % 5 else "failure",
                          after - Decimal("0.10") if k % 2 else after + Decimal("0.10"), Decimal("5"), feature=feature, prompt="v2"))
    return out


def test_a_version_change_is_flagged_when_cost_per_success_rose_significantly():
    dearer = version_intents("dearer", "3.00")
    same = version_intents("same", "1.00")
    few = version_intents("few", "3.00", n_after=50)
    rows = daily_rows(dearer + same + few)
    result = decisions.version_regressions(rows, DAY1, DAY1 + timedelta(days=28), window_days=14).collect()
    VersionRegressions.validate(result)
    by_feature = {r["feature_tag"]: r for r in result.iter_rows(named=True)}
    assert set(by_feature) == {"dearer", "same", "few"}  # v1's first day is not a change: nothing before it
    row = by_feature["dearer"]
    assert row["change_date"] == DAY1 + timedelta(days=14) and row["change"] == "prompt"
    assert (row["prompt_version_before"], row["prompt_version_after"]) == ("v1", "v2")
    before, se_before = cps_and_se([i for i in dearer if i.prompt == "v1"])
    after, se_after = cps_and_se([i for i in dearer if i.prompt == "v2"])
    assert row["cost_per_success_before"] == pytest.approx(before) and row["cost_per_success_after"] == pytest.approx(after)
    assert row["difference_ci95_low"] == pytest.approx(after - before - Z * math.hypot(se_before, se_after))
    assert row["difference_ci95_low"] > 0
    assert row["status"] == "regressed" and row["regressed"] is True
    assert by_feature["same"]["status"] == "no significant change" and by_feature["same"]["regressed"] is False
    assert by_feature["few"]["status"] == "not enough data" and by_feature["few"]["regressed"] is False


def test_a_model_change_is_compared_with_the_version_it_replaced():
    out = [Intent(DAY1 + timedelta(days=k % 7), "old", "success", Decimal("1"), feature="f", prompt="p") for k in range(140)]
    out += [Intent(DAY1 + timedelta(days=7 + k % 7), "new", "success", Decimal("0.5"), feature="f", prompt="p") for k in range(140)]
    out += [Intent(DAY1 + timedelta(days=7 + k % 7), "new", "failure", Decimal("0.5"), feature="f", prompt="p") for k in range(2)]
    rows = daily_rows(out)
    row = decisions.version_regressions(rows, DAY1, DAY1 + timedelta(days=14), window_days=7).collect().row(0, named=True)
    assert row["change"] == "model" and (row["model_version_before"], row["model_version_after"]) == ("old", "new")
    assert row["cost_per_success_before"] == pytest.approx(1.0)
    assert row["cost_per_success_after"] == pytest.approx(71 / 140)
    assert row["status"] == "improved"


def test_label_coverage_per_week():
    monday = date(2026, 3, 2)
    out = [Intent(monday, "m", "success", Decimal("1")), Intent(monday, "m", "unlabeled", Decimal("1")),
           Intent(monday + timedelta(days=6), "m", "unlabeled", Decimal("1"), currency=None),
           Intent(monday + timedelta(days=7), "m", "failure", Decimal("1"))]
    result = decisions.label_coverage(daily_rows(out), monday, monday + timedelta(days=14)).collect()
    LabelCoverage.validate(result)
    assert result.rows() == [(monday, 7, "support_chat", 3, 1, 1 / 3), (monday + timedelta(days=7), 7, "support_chat", 1, 1, 1.0)]
    # A window starting on a Wednesday and ending on a Monday: partial first and last weeks.
    partial = decisions.label_coverage(daily_rows(out), monday + timedelta(days=2), monday + timedelta(days=8)).collect()
    assert partial.rows() == [(monday, 5, "support_chat", 1, 0, 0.0), (monday + timedelta(days=7), 1, "support_chat", 1, 1, 1.0)]


# ---------------------------------------------------------------------------------------------
# [decisions] in unitledger.toml
# ---------------------------------------------------------------------------------------------


def test_bundled_config_has_documented_decisions_defaults():
    settings = load_settings(Path(__file__).resolve().parents[1] / "unitledger.toml")
    assert settings.decisions.window_days == 30 and settings.decisions.traffic_weights == "config"
    table = settings.decisions.classes_table().collect()
    assert table.filter(pl.col("feature_tag") == "support_chat")["workflow_class"].item() == "customer_support"


@pytest.mark.parametrize(
    "text, key",
    [
        ("[decisions]\nwindow_days = 0\n", "decisions.window_days"),
        ("[decisions]\ncolour = 1\n", "[decisions]: unknown key(s) colour"),
        ('[decisions]\ntraffic_weights = "mine"\n', "decisions.traffic_weights"),
        ('[decisions]\ntraffic_weights = "config"\n[decisions.classes.a]\nfeatures = ["x"]\n', "decisions.classes.a.weight"),
        ('[decisions.classes.a]\nfeatures = ["x"]\nweight = -1\n', "decisions.classes.a.weight"),
        ('[decisions.classes.a]\nfeatures = ["x"]\n[decisions.classes.b]\nfeatures = ["x"]\n', "decisions.classes.b.features"),
        ('[decisions.what_if.price_multipliers]\n"m" = "cheap"\n', "decisions.what_if.price_multipliers.m"),
        ('[decisions.what_if.labor.USD]\nfeatures = {}\n', "[decisions.what_if.labor.USD] needs a `default`"),
    ],
)
def test_bad_decisions_config_names_file_and_key(tmp_path: Path, text: str, key: str):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert str(config) in str(caught.value) and key in str(caught.value)


def test_breakdown_keeps_the_intents_of_one_session_apart():
    # s1 calls on DAY1 and again three days later, past pipeline.session_days: two intents, each
    # one first turn (intent_date from model.intents.intent_calls). Keyed by session alone, the
    # second call would be a later turn of both intents and counted twice.
    later = DAY1 + timedelta(days=3)
    calls = requests_frame(
        [{"id": "r1", "session": "s1", "minute": 0, "cost": "0.10"}, {"id": "r2", "session": "s1", "minute": 1, "cost": "0.04"}],
        typed=False, tool=False,
    ).with_columns(intent_date=pl.when(pl.col("request_id") == "r1").then(pl.lit(DAY1)).otherwise(pl.lit(later)))
    one = intents_frame().filter(pl.col("session_id") == "s1").with_columns(
        requests=pl.lit(1, pl.Int64), turns=pl.lit(1, pl.Int64), labor_cost=pl.lit(0, MONEY)
    )
    intents = pl.concat([
        one.with_columns(token_cost=pl.lit(Decimal("0.10"), MONEY), total_cost=pl.lit(Decimal("0.10"), MONEY)),
        one.with_columns(date=pl.lit(later), token_cost=pl.lit(Decimal("0.04"), MONEY), total_cost=pl.lit(Decimal("0.04"), MONEY)),
    ])
    frame = decisions.cost_breakdown(calls, intents).collect()
    by_date = {r["date"]: r for r in frame.iter_rows(named=True)}
    assert set(by_date) == {DAY1, later}
    assert (by_date[DAY1]["first_attempt_cost"], by_date[DAY1]["multi_turn_cost"]) == (Decimal("0.10"), 0)
    assert (by_date[later]["first_attempt_cost"], by_date[later]["multi_turn_cost"]) == (Decimal("0.04"), 0)
