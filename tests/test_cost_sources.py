"""Where a request's cost comes from (cost_source): the invoice, else the gateway's reported cost,
else the list-price estimate; the gateway's figure beside the invoice's when both exist, and the
gap between them per provider and model. Every expectation computed by hand in the test."""

from __future__ import annotations

import dataclasses
from datetime import date
from decimal import Decimal

import polars as pl
import pytest

from unitledger.config import ListPrice
from unitledger.layout import Layout
from unitledger.steps import daily, staging

from tests.builders import focus_row, llm_call, write_events, write_focus_csv
from tests.compare import read_table
from tests.conftest import TODAY
from tests.test_gateways import LITELLM_HEADER, _litellm_row, _write_csv

D1, D2 = date(2026, 3, 1), date(2026, 3, 2)
PER_TOKEN = Decimal("0.000001")  # 1.00 per million


def _prices() -> tuple[ListPrice, ...]:
    """claude-haiku: input 1.00 / M until 2026-03-02, 2.00 / M from then; output 5.00 / M."""
    return (
        ListPrice("anthropic", "claude-haiku", "input", "USD", date(2026, 1, 1), 1 * PER_TOKEN),
        ListPrice("anthropic", "claude-haiku", "input", "USD", D2, 2 * PER_TOKEN),
        ListPrice("anthropic", "claude-haiku", "output", "USD", date(2026, 1, 1), 5 * PER_TOKEN),
    )


def _build(layout: Layout, settings, gap_warn: float = 0.05) -> daily.StepResult:
    # three gateway-logged calls of one session: g1, g2 billed by the invoice, g3 not
    layout.landing_gateway("litellm").mkdir(parents=True)
    _write_csv(layout.landing_gateway("litellm") / "spend.csv", LITELLM_HEADER, [
                   _litellm_row("g1", spend="0.012", startTime="2026-03-02 10:15:00.000", model_group="claude-haiku"),
                   _litellm_row("g2", spend="0.019", startTime="2026-03-02 10:16:00.000", model_group="claude-haiku"),
                   _litellm_row("g3", spend="0.00123456789", startTime="2026-03-02 10:17:00.000", model_group="claude-haiku"),
               ])
    write_focus_csv(layout.landing_focus / "d1" / "focus.csv", [
        focus_row("g1", "0.010", hour="2026-03-02T10:00:00Z"),
        focus_row("g2", "0.020", hour="2026-03-02T10:00:00Z"),
        focus_row("eur1", "0.50", hour="2026-03-02T12:00:00Z", BillingCurrency="EUR", BillingAccountId="acct-eu"),
    ])
    # flat calls nothing billed: priced at the list price valid on their date, or not at all
    calls = dict(provider="anthropic", model="claude-haiku", model_version="claude-haiku-2026-01", input_tokens=1000, output_tokens=100)
    write_events(layout.landing_events / "events.jsonl", [
        llm_call("old", "s-old", "2026-03-01T12:00:00Z", **calls),
        llm_call("new", "s-new", "2026-03-02T12:00:00Z", **calls),
        llm_call("unpriced", "s-unpriced", "2026-03-02T12:00:00Z", **(calls | {"model": "gpt-unknown", "provider": "openai"})),
        # an intent billed in EUR with one call not billed yet, which the USD list prices estimate
        llm_call("eur1", "s-eur", "2026-03-02T12:00:00Z", **calls),
        llm_call("eur2", "s-eur", "2026-03-02T12:05:00Z", **calls),
    ])
    settings = dataclasses.replace(
        settings,
        telemetry=dataclasses.replace(settings.telemetry, list_prices=_prices()),
        reconciliation=dataclasses.replace(settings.reconciliation, gateway_gap_warn=gap_warn),
    )
    assert staging.stage_billing(layout, settings, TODAY).passed
    assert staging.stage_events(layout, settings.telemetry).passed
    result = daily.build_daily_tables(layout, settings, D1, D2)
    assert result.passed, result.failures()
    return result


@pytest.fixture
def built(layout, settings):
    return layout, _build(layout, settings)


def test_cost_source_per_request_and_both_figures_when_billed_and_reported(built):
    layout, _ = built
    rows = {r["request_id"]: r for r in read_table(layout, "request_costs").iter_rows(named=True)}
    # billed and reported: the invoice's cost, the gateway's beside it
    assert (rows["g1"]["cost_source"], rows["g1"]["effective_cost"], rows["g1"]["gateway_reported_cost"]) == ("invoice_request", Decimal("0.010"), Decimal("0.012"))
    assert (rows["g2"]["effective_cost"], rows["g2"]["gateway_reported_cost"]) == (Decimal("0.020"), Decimal("0.019"))
    # reported only: the gateway's cost, exactly, in its currency; still no invoice row
    g3 = rows["g3"]
    assert (g3["cost_source"], g3["effective_cost"], g3["billed_cost"], g3["billing_currency"]) == ("gateway_reported", Decimal("0.00123456789"), Decimal("0.00123456789"), "USD")
    assert (g3["billing_rows"], g3["match_status"], g3["allocated_effective_cost"]) == (0, "telemetry_only", Decimal(0))
    # list estimate: 1000 input tokens × 1.00 / M + 100 output × 5.00 / M = 0.001 + 0.0005 on 2026-03-01,
    # 1000 × 2.00 / M + 0.0005 from 2026-03-02 (the input price changed that day)
    assert (rows["old"]["cost_source"], rows["old"]["effective_cost"]) == ("list_estimate", Decimal("0.0015"))
    assert (rows["new"]["cost_source"], rows["new"]["effective_cost"]) == ("list_estimate", Decimal("0.0025"))
    assert rows["old"]["gateway_reported_cost"] is None
    # no price for its model: no estimate, no cost source, no currency
    assert (rows["unpriced"]["cost_source"], rows["unpriced"]["effective_cost"], rows["unpriced"]["billing_currency"]) == (None, None, None)


def test_the_run_metadata_keeps_invoiced_and_estimated_cost_apart(built):
    _, result = built
    meta = result.tables["request_costs"]
    # invoiced: g1 0.010 + g2 0.020 (USD), eur1 0.50 (EUR); estimates: g3 (gateway), old + new + eur2 (list)
    assert {k: Decimal(v) for k, v in meta["effective_cost"].items()} == {"USD": Decimal("0.030"), "EUR": Decimal("0.50")}
    assert {k: Decimal(v) for k, v in meta["gateway_reported_effective_cost"].items()} == {"USD": Decimal("0.00123456789")}
    assert {k: Decimal(v) for k, v in meta["list_estimate_effective_cost"].items()} == {"USD": Decimal("0.0015") + Decimal("0.0025") * 2}


def test_per_feature_tables_say_how_much_each_source_gave(built):
    layout, _ = built
    intents = {r["session_id"]: r for r in read_table(layout, "intent_costs").iter_rows(named=True)}
    ses = intents["ses-1"]  # g1 + g2 invoiced, g3 the gateway's
    assert ses["token_cost"] == Decimal("0.010") + Decimal("0.020") + Decimal("0.00123456789")
    assert (ses["gateway_reported_token_cost"], ses["list_estimate_token_cost"], ses["allocated_token_cost"]) == (Decimal("0.00123456789"), 0, 0)
    assert (intents["s-new"]["list_estimate_token_cost"], intents["s-new"]["gateway_reported_token_cost"]) == (Decimal("0.0025"), 0)
    assert intents["s-unpriced"]["token_cost"] is None and intents["s-unpriced"]["list_estimate_token_cost"] is None
    per_intent = read_table(layout, "cost_per_intent")
    day2 = per_intent.filter((pl.col("date") == D2) & (pl.col("billing_currency") == "USD"))
    assert day2["gateway_reported_token_cost"].sum() == Decimal("0.00123456789")
    assert day2["list_estimate_token_cost"].sum() == Decimal("0.0025")
    assert day2["token_cost"].sum() == Decimal("0.03123456789") + Decimal("0.0025")


def test_gateway_gap_per_provider_and_model_and_its_warning(built, tmp_path, settings):
    layout, result = built
    gap = read_table(layout, "gateway_gap")
    assert gap.height == 1  # g3 was not billed: nothing to compare
    row = gap.row(0, named=True)
    # invoice 0.010 + 0.020 = 0.030; gateway 0.012 + 0.019 = 0.031; gap +0.001 = 3.33 % of the invoice
    assert (row["provider"], row["model"], row["billing_currency"], row["requests"]) == ("anthropic", "claude-haiku", "USD", 2)
    assert (row["invoice_cost"], row["gateway_reported_cost"], row["gap"]) == (Decimal("0.030"), Decimal("0.031"), Decimal("0.001"))
    assert row["gap_share"] == pytest.approx(1 / 30)
    (outcome,) = result.warnings["gateway_gap"]
    assert outcome.passed  # 3.33 % is within the default 5 %
    stricter = _build(Layout(tmp_path / "strict"), settings, gap_warn=0.03)
    (outcome,) = stricter.warnings["gateway_gap"]
    assert not outcome.passed and "claude-haiku" in outcome.description and "0.031" in outcome.description
    assert stricter.passed  # a warning, never blocking


def test_an_estimate_in_another_currency_than_its_intents_invoice_stays_out_of_the_intent(built):
    layout, _ = built
    rows = {r["request_id"]: r for r in read_table(layout, "request_costs").iter_rows(named=True)}
    assert (rows["eur2"]["cost_source"], rows["eur2"]["effective_cost"], rows["eur2"]["billing_currency"]) == ("list_estimate", Decimal("0.0025"), "USD")
    intent = read_table(layout, "intent_costs").filter(pl.col("session_id") == "s-eur").row(0, named=True)
    # the invoice's EUR is the intent's: the USD estimate is no cost of it (no exchange rate guessed),
    # and the intent is not quarantined as billed in two currencies
    assert (intent["billing_currency"], intent["token_cost"], intent["list_estimate_token_cost"]) == ("EUR", Decimal("0.50"), 0)
    assert (intent["requests"], intent["unbilled_requests"]) == (2, 1)
    assert read_table(layout, "quarantine").filter(pl.col("reason").str.contains("s-eur")).is_empty()


def test_gateway_gap_compares_only_requests_reported_in_the_invoice_currency():
    from schemas.types import MONEY
    from unitledger.model.reconciliation import gateway_gap

    def row(request, billed, reported, currency="USD", reported_in="USD", rows=1, model="m"):
        return {"request_id": request, "date": D2, "provider": "p", "model": model, "billing_currency": currency,
                "billed_cost": None if billed is None else Decimal(billed), "billing_rows": rows,
                "gateway_reported_cost": None if reported is None else Decimal(reported), "gateway_reported_currency": reported_in}

    rows = pl.DataFrame([
        row("a", "1.00", "1.10"),
        row("b", "2.00", "1.50", reported_in="EUR"),  # billed in USD, reported in EUR: counted, not compared
        row("c", "3.00", None),  # no gateway figure: not in the table's sums
        row("d", None, "0.40", rows=0),  # unbilled: its estimate is its cost, nothing to compare
        row("e", "0", "0.05", model="free"),  # an invoice of 0: a gap with no share
    ], schema_overrides={"billed_cost": MONEY, "gateway_reported_cost": MONEY}).lazy()
    got = {r["model"]: r for r in gateway_gap(rows).collect().iter_rows(named=True)}
    assert (got["m"]["requests"], got["m"]["other_currency_requests"]) == (1, 1)
    assert (got["m"]["invoice_cost"], got["m"]["gateway_reported_cost"], got["m"]["gap"]) == (Decimal("1.00"), Decimal("1.10"), Decimal("0.10"))
    assert got["m"]["gap_share"] == pytest.approx(0.10)
    assert (got["free"]["gap"], got["free"]["gap_share"]) == (Decimal("0.05"), None)
