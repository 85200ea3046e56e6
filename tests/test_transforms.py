"""Pure transforms on tiny hand-built frames; every expectation is computed by hand in the test."""

import math
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import polars as pl
import pytest

from schemas.types import MONEY, TIMESTAMP
from unitledger.config import LaborCost, Settings
from unitledger.model.features import cost_per_intent, cost_per_success, reaggregate_cost_per_success
from unitledger.model.intents import intent_calls, intent_costs, intent_days, latest_outcomes
from unitledger.model.intents import session_dates
from unitledger.model.requests import billing_by_request, dedupe_calls, join_requests, request_costs

DAY = date(2026, 3, 2)
NEXT = DAY + timedelta(days=1)


def calls_frame(rows: list[dict]) -> pl.LazyFrame:
    """StagedLlmCall-shaped frame; each row gives at least request_id, session_id, timestamp."""
    full = []
    for i, row in enumerate(rows):
        ts = row["timestamp"]
        full.append(
            {
                "source_file": row.get("source_file", "ev.jsonl"),
                "source_line": row.get("source_line", i + 1),
                "event_id": row.get("event_id", f"e-{row['request_id']}"),
                "timestamp": ts,
                "call_date": ts.date(),
                "request_id": row["request_id"],
                "session_id": row["session_id"],
                "feature_tag": row.get("feature_tag", "chat"),
                "provider": "p",
                "model": row.get("model", "m"),
                "model_version": row.get("model_version", "m-1"),
                "prompt_version": row.get("prompt_version", "v1"),
                "input_tokens": 10,
                "output_tokens": 5,
                "cache_read_input_tokens": 0,
                "cache_write_input_tokens": 0,
                "attempt": row.get("attempt", 1),
                "status": row.get("status", "ok"),
            }
        )
    return pl.DataFrame(full, schema_overrides={"timestamp": TIMESTAMP}).lazy()


def billing_frame(rows: list[tuple[str | None, str, str, date]]) -> pl.LazyFrame:
    """(request_id, effective_cost, currency, charge_date) rows, BilledCost = ListCost = EffectiveCost."""
    return pl.DataFrame(
        {
            "x_RequestId": [r[0] for r in rows],
            "BilledCost": [Decimal(r[1]) for r in rows],
            "EffectiveCost": [Decimal(r[1]) for r in rows],
            "ListCost": [Decimal(r[1]) for r in rows],
            "BillingCurrency": [r[2] for r in rows],
            "BillingAccountId": ["acct-eu" if r[2] == "EUR" else "acct-us" for r in rows],
            "charge_date": [r[3] for r in rows],
            "x_FeatureTag": ["chat"] * len(rows),
            "x_ModelVersion": ["m-1"] * len(rows),
            "x_PromptVersion": ["v1"] * len(rows),
            "ServiceProviderName": ["P"] * len(rows),
        },
        schema_overrides={"BilledCost": MONEY, "EffectiveCost": MONEY, "ListCost": MONEY},
    ).lazy()


def outcomes_frame(rows: list[tuple[str, bool, datetime]], escalated: bool | None = None) -> pl.LazyFrame:
    return pl.DataFrame(
        {
            "source_file": ["ev.jsonl"] * len(rows),
            "source_line": list(range(1, len(rows) + 1)),
            "event_id": [f"o{i}" for i in range(len(rows))],
            "timestamp": [r[2] for r in rows],
            "session_id": [r[0] for r in rows],
            "feature_tag": ["chat"] * len(rows),
            "success": [r[1] for r in rows],
            "escalated": [(not r[1]) if escalated is None else escalated for r in rows],
            "signal": ["explicit"] * len(rows),
        },
        schema={
            "source_file": pl.String, "source_line": pl.Int64, "event_id": pl.String, "timestamp": TIMESTAMP,
            "session_id": pl.String, "feature_tag": pl.String, "success": pl.Boolean, "escalated": pl.Boolean,
            "signal": pl.String,
        },
    ).lazy()


def labor(amounts: dict[tuple[str | None, str], str]) -> pl.LazyFrame:
    costs = tuple(LaborCost(currency, feature, Decimal(v)) for (feature, currency), v in amounts.items())
    return Settings(path=None, start_date=DAY, labor=costs).labor_table()


def at(hour: int, minute: int = 0, day: date = DAY) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=timezone.utc)


def build(calls, billing, outcomes, labor_table, start=DAY, end=NEXT, session_days=2):
    joined = join_requests(dedupe_calls(calls), billing_by_request(billing))
    latest = latest_outcomes(outcomes)
    days = intent_days(session_dates(calls), session_days)
    intents = intent_costs(intent_calls(joined, days), latest, labor_table, start, end)
    return joined, intents


def test_budget_vs_frontier_worked_example():
    """Cheap model: 5 turns at $0.01, 70% success; frontier: 1 turn at $0.20, 95% success;
    a failure costs $15 of labor. 20 sessions each.

    cheap:    tokens 20 × 5 × 0.01 = 1.00; 14 successes, 6 failures → labor 90.00;
              cost per success = 91.00 / 14 = 6.50 (token cost per success 1.00 / 14 ≈ 0.0714)
    frontier: tokens 20 × 0.20 = 4.00; 19 successes, 1 failure → labor 15.00;
              cost per success = 19.00 / 19 = 1.00 (token cost per success 4.00 / 19 ≈ 0.2105)
    Per token the budget model wins; per success the frontier model wins 6.5×."""
    calls, billing, outcomes = [], [], []
    for model, turns, price, successes in (("budget", 5, "0.01", 14), ("frontier", 1, "0.20", 19)):
        for s in range(20):
            session = f"{model}-{s}"
            for t in range(turns):
                request = f"{session}-{t}"
                calls.append({"request_id": request, "session_id": session, "timestamp": at(9, t), "model_version": model})
                billing.append((request, price, "USD", DAY))
            outcomes.append((session, s < successes, at(12)))
    _, intents = build(calls_frame(calls), billing_frame(billing), outcomes_frame(outcomes), labor({(None, "USD"): "15.00"}))
    table = cost_per_success(intents).collect().sort("model_version")
    budget, frontier = table.row(0, named=True), table.row(1, named=True)

    assert budget["model_version"] == "budget"
    assert (budget["successes"], budget["failures"], budget["labeled_intents"]) == (14, 6, 20)
    assert budget["token_cost"] == Decimal("1.00")
    assert budget["labor_cost"] == Decimal("90.00")
    assert budget["total_cost"] == Decimal("91.00")
    assert budget["cost_per_success"] == pytest.approx(6.5)
    assert budget["token_cost_per_success"] == pytest.approx(1 / 14)
    assert budget["success_rate"] == pytest.approx(0.7)

    assert (frontier["successes"], frontier["failures"]) == (19, 1)
    assert frontier["total_cost"] == Decimal("19.00")
    assert frontier["cost_per_success"] == pytest.approx(1.0)
    assert frontier["token_cost_per_success"] == pytest.approx(4 / 19)
    assert frontier["cost_per_success"] < budget["cost_per_success"]
    assert frontier["token_cost_per_success"] > budget["token_cost_per_success"]


def test_confidence_interval_matches_delta_method_computed_directly():
    """Unequal intent costs; the interval is recomputed here from the per-intent values."""
    costs = ["0.10", "0.30", "0.20", "0.50", "0.40", "0.15", "0.25", "0.35"]
    success = [True, True, False, True, False, True, True, False]
    calls = [{"request_id": f"r{i}", "session_id": f"s{i}", "timestamp": at(8, i)} for i in range(len(costs))]
    billing = [(f"r{i}", c, "USD", DAY) for i, c in enumerate(costs)]
    outcomes = [(f"s{i}", ok, at(20)) for i, ok in enumerate(success)]
    _, intents = build(calls_frame(calls), billing_frame(billing), outcomes_frame(outcomes), labor({(None, "USD"): "1.00"}))
    row = cost_per_success(intents).collect().row(0, named=True)

    x = [float(c) + (0.0 if ok else 1.0) for c, ok in zip(costs, success)]  # token + labor
    y = [1.0 if ok else 0.0 for ok in success]
    n = len(x)
    r = sum(x) / sum(y)
    ybar = sum(y) / n
    residual_var = sum((xi - r * yi) ** 2 for xi, yi in zip(x, y)) / (n - 1)
    se = math.sqrt(residual_var / (n * ybar**2))
    assert row["cost_per_success"] == pytest.approx(r)
    assert row["ci95_low"] == pytest.approx(r - 1.959963984540054 * se)
    assert row["ci95_high"] == pytest.approx(r + 1.959963984540054 * se)
    assert row["sample_ok"] is False


def test_duplicate_events_count_once_and_latest_label_wins():
    calls = [
        {"request_id": "r1", "session_id": "s1", "timestamp": at(9)},
        {"request_id": "r1", "session_id": "s1", "timestamp": at(9), "source_file": "again.jsonl"},  # redelivered
        {"request_id": "r2", "session_id": "s1", "timestamp": at(9, 5), "attempt": 2},
    ]
    billing = [("r1", "0.10", "USD", DAY), ("r1", "0.05", "USD", DAY), ("r2", "0.10", "USD", DAY)]
    outcomes = [("s1", True, at(12)), ("s1", False, at(12, 30, NEXT)), ("s1", True, at(11))]  # corrected later
    joined, intents = build(calls_frame(calls), billing_frame(billing), outcomes_frame(outcomes), labor({(None, "USD"): "7.00"}))
    requests = request_costs(joined, DAY, NEXT).collect().sort("request_id")
    assert requests["request_id"].to_list() == ["r1", "r2"]
    assert requests["effective_cost"].to_list() == [Decimal("0.15"), Decimal("0.10")]
    assert requests["billing_rows"].to_list() == [2, 1]
    row = intents.collect().row(0, named=True)
    assert (row["requests"], row["turns"], row["retries"]) == (2, 1, 1)
    assert row["outcome"] == "failure"
    assert row["token_cost"] == Decimal("0.25")
    assert row["labor_cost"] == Decimal("7.00")
    assert row["total_cost"] == Decimal("7.25")


def test_latest_label_ties_are_broken_by_event_id_then_file_then_line():
    # Same instant: the largest event_id wins ("o9" > "o10" as text); same event id and time in two
    # files: the larger file name; same file: the larger line. Each session's winner is unique.
    rows = [
        ("a", "o9", "ev.jsonl", 1, True), ("a", "o10", "ev.jsonl", 2, False), ("a", "o1", "ev.jsonl", 3, True),
        ("b", "o1", "z.jsonl", 1, False), ("b", "o1", "a.jsonl", 9, True),
        ("c", "o1", "ev.jsonl", 7, False), ("c", "o1", "ev.jsonl", 12, True),
        ("d", "o1", "ev.jsonl", 1, True), ("d", "o0", "ev.jsonl", 2, False),
    ]  # fmt: skip
    outcomes = pl.DataFrame(
        {
            "session_id": [r[0] for r in rows], "event_id": [r[1] for r in rows], "source_file": [r[2] for r in rows],
            "source_line": [r[3] for r in rows], "success": [r[4] for r in rows], "escalated": [False] * len(rows),
            # d: the later label wins whatever its event id
            "timestamp": [at(13) if r[0] == "d" and r[1] == "o0" else at(12) for r in rows],
        },
        schema_overrides={"timestamp": TIMESTAMP, "source_line": pl.Int64},
    ).lazy()  # fmt: skip
    latest = latest_outcomes(outcomes).collect().sort("session_id")
    assert latest.select("session_id", "success").rows() == [("a", True), ("b", False), ("c", True), ("d", False)]


def test_match_status_and_dates_of_each_side():
    calls = [
        {"request_id": "both", "session_id": "s1", "timestamp": at(23, 59)},
        {"request_id": "tel", "session_id": "s1", "timestamp": at(0, 1, NEXT)},
    ]
    billing = [("both", "0.10", "USD", NEXT), ("bill", "0.30", "USD", DAY), (None, "9.99", "USD", DAY)]
    joined, _ = build(calls_frame(calls), billing_frame(billing), outcomes_frame([]), labor({(None, "USD"): "1"}))
    day = request_costs(joined, DAY, NEXT).collect().sort("request_id")
    assert day["request_id"].to_list() == ["bill", "both"]
    assert day["match_status"].to_list() == ["billing_only", "matched"]
    # billed on the next day, but a request belongs to its call's date
    assert day["effective_cost"].to_list() == [Decimal("0.30"), Decimal("0.10")]
    nxt = request_costs(joined, NEXT, NEXT + timedelta(days=1)).collect()
    assert nxt["request_id"].to_list() == ["tel"]
    assert nxt["match_status"].to_list() == ["telemetry_only"]
    assert nxt["effective_cost"].to_list() == [None]


def test_session_crossing_midnight_belongs_to_its_first_day_once():
    calls = [
        {"request_id": "a", "session_id": "late", "timestamp": at(23, 50), "model_version": "old"},
        {"request_id": "b", "session_id": "late", "timestamp": at(0, 10, NEXT), "model_version": "new"},
        {"request_id": "c", "session_id": "next", "timestamp": at(1, 0, NEXT)},
    ]
    billing = [("a", "0.10", "USD", DAY), ("b", "0.20", "USD", NEXT), ("c", "0.40", "USD", NEXT)]
    args = (calls_frame(calls), billing_frame(billing), outcomes_frame([]), labor({(None, "USD"): "1"}))
    _, first = build(*args, start=DAY, end=NEXT)
    _, second = build(*args, start=NEXT, end=NEXT + timedelta(days=1))
    first, second = first.collect(), second.collect()
    assert first["session_id"].to_list() == ["late"]
    assert first["token_cost"].to_list() == [Decimal("0.30")]  # both calls, across midnight
    assert first["model_version"].to_list() == ["new"]  # the last call's version
    assert first["date"].to_list() == [DAY]
    assert second["session_id"].to_list() == ["next"]  # "late" is not counted again


def test_currencies_never_mix_and_unbilled_intents_have_no_money():
    calls = [
        {"request_id": "u", "session_id": "us", "timestamp": at(9)},
        {"request_id": "e", "session_id": "eu", "timestamp": at(9)},
        {"request_id": "n", "session_id": "none", "timestamp": at(9)},
    ]
    billing = [("u", "0.50", "USD", DAY), ("e", "0.40", "EUR", DAY)]
    outcomes = [("us", False, at(12)), ("eu", False, at(12)), ("none", False, at(12))]
    table = labor({(None, "USD"): "10.00", ("chat", "EUR"): "8.00", (None, "EUR"): "99.00"})
    _, intents = build(calls_frame(calls), billing_frame(billing), outcomes_frame(outcomes), table)
    by_session = {r["session_id"]: r for r in intents.collect().iter_rows(named=True)}
    assert by_session["us"]["total_cost"] == Decimal("10.50")
    assert by_session["eu"]["total_cost"] == Decimal("8.40")  # the feature's EUR amount, not the default
    assert by_session["none"]["billing_currency"] is None
    assert by_session["none"]["token_cost"] is None and by_session["none"]["labor_cost"] is None
    per_intent = cost_per_intent(intents).collect()
    assert per_intent.height == 3
    assert set(per_intent["billing_currency"].to_list()) == {"EUR", "USD", None}
    unbilled = per_intent.filter(pl.col("billing_currency").is_null()).row(0, named=True)
    assert unbilled["intents"] == 1 and unbilled["total_cost"] is None and unbilled["cost_per_intent"] is None


def test_reaggregation_sums_then_divides():
    """Two days: re-aggregated cost per success is Σcost / Σsuccesses, not the mean of the ratios."""
    calls, billing, outcomes = [], [], []
    for day, n_success, price in ((DAY, 1, "1.00"), (NEXT, 3, "1.00")):
        for s in range(4):
            sid = f"{day}-{s}"
            calls.append({"request_id": sid, "session_id": sid, "timestamp": at(9, s, day)})
            billing.append((sid, price, "USD", day))
            outcomes.append((sid, s < n_success, at(20, 0, day)))
    args = (calls_frame(calls), billing_frame(billing), outcomes_frame(outcomes), labor({(None, "USD"): "0"}))
    _, intents = build(*args, start=DAY, end=NEXT + timedelta(days=1))
    daily = cost_per_success(intents)
    both = reaggregate_cost_per_success(daily, ["feature_tag", "billing_currency"]).collect().row(0, named=True)
    assert both["successes"] == 4 and both["total_cost"] == Decimal("8.00")
    assert both["cost_per_success"] == pytest.approx(2.0)  # mean of daily ratios would be (4 + 4/3) / 2
    direct = cost_per_success(intents.with_columns(date=pl.lit(DAY))).collect().row(0, named=True)
    assert both["ci95_low"] == pytest.approx(direct["ci95_low"])
    assert both["ci95_high"] == pytest.approx(direct["ci95_high"])


@pytest.mark.parametrize(
    "call_days, intents",
    [
        ([1, 2, 3], [1, 1, 1]),  # three consecutive days: one intent (S = 2)
        ([1, 2, 3, 4], [1, 1, 1, None]),  # the fourth day is beyond the bound: in no intent
        ([1, 5], [1, 5]),  # a pause longer than S: a new intent of the same session
        ([1, 3, 5, 7], [1, 1, None, None]),  # never a pause longer than S: one intent, then beyond
        ([1, 4, 5, 6, 7], [1, 4, 4, 4, None]),
    ],
)
def test_intent_days_follow_the_session_bound(call_days, intents):
    pairs = pl.DataFrame({"session_id": ["s"] * len(call_days), "call_date": [DAY + timedelta(days=d) for d in call_days]})
    days = intent_days(pairs.lazy(), 2).collect().sort("call_date")
    assert days["intent_date"].to_list() == [None if d is None else DAY + timedelta(days=d) for d in intents]


def test_rows_without_a_near_call_are_late_or_billing_only_by_their_neighbours():
    """A row's request's call within the horizon (31 days) makes it late; else its request's first
    row within the horizon dates the billing-only request, and a row more than B days after it is
    late."""
    from unitledger.config import Bounds
    from unitledger.model.requests import classify_unassociated, late_reason

    bounds = Bounds(session_days=2, billing_delay_days=2, detection_horizon_days=31)

    def on(d: int) -> date:
        return DAY + timedelta(days=d)

    rows = pl.DataFrame(
        {
            "source_file": ["f"] * 5,
            "source_line": [1, 2, 3, 4, 5],
            "x_RequestId": ["late", "far", "bo", "bo", "bo"],
            "charge_date": [on(3), on(40), on(0), on(2), on(5)],
        }
    ).lazy()
    calls = pl.DataFrame({"request_id": ["late", "far"], "call_date": [on(0), on(0)]}).lazy()  # far: 40 days away
    earlier = rows.select("x_RequestId", "charge_date")
    out = classify_unassociated(rows, calls, earlier, bounds).with_columns(reason=late_reason(bounds)).collect().sort("source_line")
    assert out["billing_class"].to_list() == ["late", "billing_only", "billing_only", "billing_only", "late"]
    assert out["request_date"].to_list() == [None, on(40), on(0), on(0), None]
    assert out["reason"][0] == (
        "late billing: charged 3 days from its request's call on 2026-03-02 (more than pipeline.billing_delay_days = 2): not in request_costs"
    )
    assert out["reason"][4].startswith("late billing: charged 5 days after its billing-only request's first row on 2026-03-02")


@pytest.mark.parametrize(
    "pipeline, message",
    [
        ('billing_delay_days = 0', "pipeline.billing_delay_days: 0 must be a whole number from 1"),
        ('session_days = -1', "pipeline.session_days: -1 must be a whole number from 0"),
        ('billing_delay_days = 20', r"pipeline.detection_horizon_days \(31\) must be at least twice pipeline.billing_delay_days \(20\)"),
        ('session_day = 3', r"\[pipeline\]: unknown key\(s\) session_day"),
    ],
)
def test_bounds_are_validated(tmp_path, pipeline, message):
    from unitledger.config import ConfigError, load_settings

    path = tmp_path / "unitledger.toml"
    path.write_text(f"[pipeline]\n{pipeline}\n")
    with pytest.raises(ConfigError, match=message):
        load_settings(path)


def test_billing_by_request_splits_effective_cost_by_the_rows_token_types():
    """r1: input 0.01 + output 0.02 + a fee of 0 of no token type (harmless); r2: input 0.01 + a
    0.005 request fee of no token type: its cost is not known by type, all four null; r3: a
    SkuPriceDetails token type beats the meter."""
    billing = billing_frame([("r1", "0.01", "USD", DAY), ("r1", "0.02", "USD", DAY), ("r1", "0", "USD", DAY),
                             ("r2", "0.01", "USD", DAY), ("r2", "0.005", "USD", DAY), ("r3", "0.04", "USD", DAY)])  # fmt: skip
    billing = billing.with_columns(
        SkuMeter=pl.Series(["Input Tokens", "Output Tokens", "Platform Fee", "Input Tokens", "API Requests", "Input Tokens"]),
        SkuPriceDetails=pl.Series([None] * 5 + ['{"TokenType": "Cache Read"}']),
    )
    typed = ["input_cost", "output_cost", "cache_read_cost", "cache_write_cost"]
    rows = {r["request_id"]: r for r in billing_by_request(billing).collect().iter_rows(named=True)}
    assert [rows["r1"][c] for c in typed] == [Decimal("0.01"), Decimal("0.02"), 0, 0]
    assert [rows["r2"][c] for c in typed] == [None] * 4 and rows["r2"]["effective_cost"] == Decimal("0.015")
    assert [rows["r3"][c] for c in typed] == [0, 0, Decimal("0.04"), 0]
