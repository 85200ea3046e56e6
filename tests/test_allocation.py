"""Allocating aggregated AI billing rows to requests by token share (unitledger.model.allocation).

Expected amounts are written out by hand (the arithmetic in the comments) or, in the property test,
computed with Python fractions: never read back from the output."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

import polars as pl
import pytest

from schemas.allocation import AllocatedByRequest, AllocatedCosts, AllocationPools, CallTokens, RequestAllocations, UnmatchedModels
from schemas.types import MONEY
from tests.alloc_frames import at, bill_row, call, calls, focus
from unitledger.config import AccountRule, Allocation
from unitledger.model.allocation import allocate, allocated_by_request, allocated_costs, call_tokens
from unitledger.sources.ai_usage import classify_usage, exact_token_coverage

D = Decimal
UNIT = Fraction(1, 10**18)


@dataclass
class Result:
    requests: pl.DataFrame
    pools: pl.DataFrame
    unmatched: pl.DataFrame
    by_request: pl.DataFrame
    export: pl.DataFrame

    def shares(self, column: str = "billed_cost", **where) -> dict[str, Decimal]:
        rows = self.requests.filter(*[pl.col(k) == v for k, v in where.items()]) if where else self.requests
        return dict(rows.group_by("request_id").agg(pl.col(column).sum()).iter_rows())

    def pool(self, line: int) -> dict:
        return self.pools.filter(pl.col("source_line") == line).row(0, named=True)


def run(bill: pl.LazyFrame, events: pl.LazyFrame, settings: Allocation = Allocation(), exact: pl.LazyFrame | None = None) -> Result:
    usage = classify_usage(bill, settings)
    tables = allocate(usage, call_tokens(events, settings, exact), settings)
    frames = pl.collect_all(
        [tables.requests, tables.pools, tables.unmatched_models, allocated_by_request(tables.requests),
         allocated_costs(bill, tables.requests, tables.pools)]  # fmt: skip
    )
    for model, frame in zip((RequestAllocations, AllocationPools, UnmatchedModels, AllocatedByRequest, AllocatedCosts), frames):
        model.validate(frame, lazy=True)  # a collected frame: data checks run too
    return Result(*frames)


def test_three_calls_share_one_cent_exactly_by_largest_remainder():
    # 0.01 / 3 = 0.003333333333333333|33...: three floors leave 1e-18, which goes to one of the
    # equal remainders (a call, not the residual, whose remainder is 0 here anyway).
    events = calls(*[call(r, at(10, 5 * i)) for i, r in enumerate(("r1", "r2", "r3"))])
    result = run(focus(bill_row("0.01", quantity="300")), events)
    assert sorted(result.shares().values()) == [D("0.003333333333333333"), D("0.003333333333333333"), D("0.003333333333333334")]
    assert run(focus(bill_row("0.01", quantity="300")), events).shares() == result.shares()  # the same one every time
    pool = result.pool(2)
    assert (pool["status"], pool["unlogged_billed_cost"], pool["allocated_billed_cost"]) == ("allocated", 0, D("0.01"))
    assert (pool["pool_billed_tokens"], pool["pool_logged_tokens"], pool["pool_calls"]) == (300, 300, 3)


def test_every_cost_column_is_split_and_sums_exactly():
    # Effective 0.007 / 3 = 0.002333333333333333|33 (1 unit left); List 0.02 / 3 =
    # 0.006666666666666666|67 (2 units left).
    bill = focus(bill_row("0.01", quantity="300", EffectiveCost="0.007", ListCost="0.02"))
    result = run(bill, calls(*[call(r, at(10, 5 * i)) for i, r in enumerate(("r1", "r2", "r3"))]))
    assert sorted(result.shares("effective_cost").values()) == [D("0.002333333333333333")] * 2 + [D("0.002333333333333334")]
    assert sorted(result.shares("list_cost").values()) == [D("0.006666666666666666")] + [D("0.006666666666666667")] * 2


def test_unlogged_usage_is_the_cost_of_tokens_billed_and_not_logged():
    # 1000 billed, 600 logged: rate 1.00 / 1000; the 400 unlogged tokens keep 0.40.
    result = run(focus(bill_row("1.00", quantity="1000")), calls(call("r1", at(10, 1), input_tokens=300), call("r2", at(10, 2), input_tokens=300)))
    assert result.shares() == {"r1": D("0.3"), "r2": D("0.3")}
    pool = result.pool(2)
    assert (pool["status"], pool["unlogged_billed_cost"], pool["allocation_base_tokens"]) == ("allocated", D("0.4"), 1000)
    assert result.requests["effective_rate"].to_list() == [0.001, 0.001]


def test_an_over_logged_pool_has_no_unlogged_usage():
    # 500 billed, 600 logged: rate 1.00 / 600, nothing left over.
    result = run(focus(bill_row("1.00", quantity="500")), calls(call("r1", at(10, 1), input_tokens=300), call("r2", at(10, 2), input_tokens=300)))
    assert result.shares() == {"r1": D("0.5"), "r2": D("0.5")}
    pool = result.pool(2)
    assert (pool["status"], pool["unlogged_billed_cost"], pool["allocation_base_tokens"]) == ("over_logged", 0, 600)


def test_a_bill_without_quantity_is_split_by_share_of_logged_tokens():
    bill = focus(bill_row("1.00", quantity=None, ConsumedUnit=None))
    result = run(bill, calls(call("r1", at(10, 1), input_tokens=100), call("r2", at(10, 2), input_tokens=300)))
    assert result.shares() == {"r1": D("0.25"), "r2": D("0.75")}
    assert (result.pool(2)["status"], result.pool(2)["pool_billed_tokens"]) == ("logged_share", 0)


def test_a_negative_cost_row_is_split_with_its_sign():
    # |-0.01| x 100 / 300 = 0.003333333333333333|33 for r1, r2 and the 100 unlogged tokens: the
    # one unit left goes to a call (calls before the residual); every part keeps the minus sign.
    bill = focus(bill_row("-0.01", quantity="300", ChargeClass="Correction"))
    result = run(bill, calls(call("r1", at(10, 1)), call("r2", at(10, 2))))
    assert sorted(result.shares().values()) == [D("-0.003333333333333334"), D("-0.003333333333333333")]
    assert result.pool(2)["unlogged_billed_cost"] == D("-0.003333333333333333")


def test_exact_rows_win_for_the_token_types_they_cover():
    bill = focus(
        bill_row("0.05", x_RequestId="r1", SkuMeter="Output Tokens", quantity="50"),  # r1's own output row
        bill_row("0.02", SkuMeter="Output Tokens", quantity="200"),
        bill_row("0.03", SkuMeter="Input Tokens", quantity="300"),
    )
    events = calls(call("r1", at(10, 1), input_tokens=100, output_tokens=50), call("r2", at(10, 2), input_tokens=200, output_tokens=200))
    result = run(bill, events, exact=exact_token_coverage(bill))
    # Output: r1's tokens are billed exactly, so r2 alone takes the output row. Input: 100 : 200.
    assert result.shares(token_type="output") == {"r2": D("0.02")}
    assert result.shares(token_type="input") == {"r1": D("0.01"), "r2": D("0.02")}
    assert sorted(result.by_request.select("request_id", "effective_cost", "cost_source").rows()) == [
        ("r1", D("0.01"), "invoice_allocated"),
        ("r2", D("0.04"), "invoice_allocated"),
    ]
    assert result.unmatched.is_empty()  # left out on purpose, not lost


def test_calls_without_an_account_are_allocated_jointly_over_the_accounts_that_could_bill_them():
    # Accounts A (600 tokens, 0.06) and B (300, 0.03) bill the same model, type and hour. r1 says
    # it is A's; r2 and r3 say nothing, so both pools are one: 900 billed, 600 logged, and each
    # row is split over all three calls and the 300 unlogged tokens:
    #   A: 0.06 x (100, 200, 300, 300) / 900 = 0.0066..6|67, 0.0133..3|33, 0.02, 0.02 (+1 unit: r1)
    #   B: 0.03 x (100, 200, 300, 300) / 900 = 0.0033..3|33, 0.0066..6|67, 0.01, 0.01 (+1 unit: r2)
    bill = focus(
        bill_row("0.06", quantity="600", BillingAccountId="acct-A"),
        bill_row("0.03", quantity="300", BillingAccountId="acct-B"),
    )
    events = calls(
        call("r1", at(10, 1), input_tokens=100, billing_account_hint="acct-A", sub_account_hint=None),
        call("r2", at(10, 2), input_tokens=200, billing_account_hint=None, sub_account_hint=None),
        call("r3", at(10, 3), input_tokens=300, billing_account_hint=None, sub_account_hint=None),
        hints=True,
    )
    result = run(bill, events)
    assert result.shares(billing_account_id="acct-A") == {"r1": D("0.006666666666666667"), "r2": D("0.013333333333333333"), "r3": D("0.02")}
    assert result.shares(billing_account_id="acct-B") == {"r1": D("0.003333333333333333"), "r2": D("0.006666666666666667"), "r3": D("0.01")}
    assert set(result.pools["allocation_scope"]) == {"accounts"}
    assert (result.pool(2)["pool_billed_tokens"], result.pool(2)["unlogged_billed_cost"], result.pool(3)["unlogged_billed_cost"]) == (900, D("0.02"), D("0.01"))
    assert sorted(result.by_request.select("request_id", "billed_cost", "billing_account_id", "billing_rows").rows()) == [
        ("r1", D("0.01"), None, 2), ("r2", D("0.02"), None, 2), ("r3", D("0.03"), None, 2)
    ]  # fmt: skip


def test_calls_naming_their_account_or_matched_by_an_account_rule_stay_in_its_pool():
    bill = focus(
        bill_row("0.06", quantity="600", BillingAccountId="acct-A"),
        bill_row("0.03", quantity="300", BillingAccountId="acct-B"),
    )
    events = calls(
        call("r1", at(10, 1), input_tokens=100, billing_account_hint="acct-A", sub_account_hint=None),
        call("r2", at(10, 2), input_tokens=300, billing_account_hint=None, sub_account_hint=None, feature_tag="search"),
        call("r3", at(10, 3), input_tokens=50, billing_account_hint="acct-Z", sub_account_hint=None),  # bills nothing here
        hints=True,
    )
    settings = Allocation(account_rules=(AccountRule(billing_account_id="acct-B", feature_tag="search"),))
    result = run(bill, events, settings)
    assert result.shares() == {"r1": D("0.01"), "r2": D("0.03")}  # 0.06 x 100/600; 0.03 x 300/300
    assert set(result.pools["allocation_scope"]) == {"pool"}
    assert result.unmatched.select("call_model", "reason", "calls", "tokens").rows() == [("gpt-4o-mini-2024-07-18", "no_pool", 1, 50)]


def test_calls_mapped_by_gateway_key_or_team_take_part_in_their_accounts_pools_only():
    # Accounts A (600 tokens, 0.06) and B (300, 0.03) bill the same model, type and hour. Rules map
    # the gateway key key-a to A and the team team-b to B (the first rule matching wins: r3's key
    # is no rule's). A: 0.0001 a token, r1 0.01, r2 0.02, 300 tokens unlogged 0.03; B: r3 0.03.
    bill = focus(
        bill_row("0.06", quantity="600", BillingAccountId="acct-A"),
        bill_row("0.03", quantity="300", BillingAccountId="acct-B", SubAccountId="proj-b"),
    )
    mapped = [
        call("r1", at(10, 1), input_tokens=100, api_key_id="key-a", team_id=None, project_id=None),
        call("r2", at(10, 2), input_tokens=200, api_key_id="key-a", team_id="team-b", project_id=None),
        call("r3", at(10, 3), input_tokens=300, api_key_id="key-x", team_id="team-b", project_id="p-1"),
    ]
    settings = Allocation(account_rules=(
        AccountRule(billing_account_id="acct-A", api_key_id="key-a"),
        AccountRule(billing_account_id="acct-B", sub_account_id="proj-b", team_id="team-b"),
    ))  # fmt: skip
    result = run(bill, calls(*mapped, gateway=True), settings)
    assert result.shares(billing_account_id="acct-A") == {"r1": D("0.01"), "r2": D("0.02")}
    assert result.shares(billing_account_id="acct-B") == {"r3": D("0.03")}
    assert set(result.pools["allocation_scope"]) == {"pool"}
    assert (result.pool(2)["unlogged_billed_cost"], result.pool(3)["unlogged_billed_cost"]) == (D("0.03"), D(0))

    # A call no rule maps (r4) could be either account's: both pools are allocated jointly over
    # all four calls (900 billed, 900 logged), as for calls naming no account.
    unmapped = call("r4", at(10, 4), input_tokens=300, api_key_id="key-z", team_id=None, project_id=None)
    result = run(bill, calls(*mapped, unmapped, gateway=True), settings)
    assert set(result.pools["allocation_scope"]) == {"accounts"}
    assert result.shares(billing_account_id="acct-B") == {"r1": D("0.003333333333333333"), "r2": D("0.006666666666666667"), "r3": D("0.01"), "r4": D("0.01")}
    assert result.shares() == {"r1": D("0.01"), "r2": D("0.02"), "r3": D("0.03"), "r4": D("0.03")}


def test_calls_naming_the_account_but_not_the_sub_account_share_its_sub_accounts():
    bill = focus(
        bill_row("0.02", quantity="200", SubAccountId="proj-1"),
        bill_row("0.02", quantity="200", SubAccountId="proj-2"),
    )
    events = calls(
        call("r1", at(10, 1), input_tokens=200, billing_account_hint="acct-1", sub_account_hint="proj-1"),
        call("r2", at(10, 2), input_tokens=200, billing_account_hint="acct-1", sub_account_hint=None),
        hints=True,
    )
    result = run(bill, events)
    # One pool of 400 billed and 400 logged tokens: each row goes half to r1, half to r2.
    assert result.shares() == {"r1": D("0.02"), "r2": D("0.02")}
    assert set(result.pools["allocation_scope"]) == {"sub_accounts"}


def test_hour_and_day_rows_take_the_calls_of_their_charge_period():
    bill = focus(
        bill_row("0.10", hour=10, quantity="100"),
        bill_row("0.20", hour=11, quantity="200"),
        bill_row("0.50", day_row=True, quantity="50", SkuMeter="Output Tokens"),
    )
    events = calls(
        call("r1", at(10, 30), input_tokens=100, output_tokens=10),
        call("r2", at(11, 0), input_tokens=200, output_tokens=30),  # 11:00 is hour 11's (periods end exclusive)
        call("r3", at(12, 0), input_tokens=50, output_tokens=10),  # no input row for hour 12
        call("r4", at(0, 0, day=1), input_tokens=0, output_tokens=99),  # the next day
    )
    result = run(bill, events)
    assert result.shares(token_type="input") == {"r1": D("0.10"), "r2": D("0.20")}
    assert result.shares(token_type="output") == {"r1": D("0.1"), "r2": D("0.3"), "r3": D("0.1")}  # 0.50 x (10, 30, 10) / 50
    lost = result.unmatched.sort("token_type").select("date", "token_type", "reason", "calls", "tokens").rows()
    assert lost == [(at(12).date(), "input", "no_pool", 1, 50), (at(0, day=1).date(), "output", "no_pool", 1, 99)]


def test_units_scale_billed_quantities():
    # 0.5 x 1000 Tokens = 500 tokens billed; 250 logged: rate 1.00 / 500.
    bill = focus(bill_row("1.00", quantity="0.5", ConsumedUnit="1000 Tokens"))
    result = run(bill, calls(call("r1", at(10, 1), input_tokens=100), call("r2", at(10, 2), input_tokens=150)))
    assert result.shares() == {"r1": D("0.2"), "r2": D("0.3")}
    assert (result.pool(2)["billed_tokens"], result.pool(2)["unlogged_billed_cost"]) == (500, D("0.5"))


def test_pools_nobody_called_keep_their_cost_and_unknown_models_are_reported():
    bill = focus(
        bill_row("0.70", x_ModelVersion="gpt-4.1-2025-04-14"),  # billed, never called
        bill_row("0.20", x_ModelVersion="gpt-4.1-nano", quantity=None, ConsumedUnit=None),  # nothing on either side
        bill_row("0.10", quantity="100"),
    )
    events = calls(call("r1", at(10, 1)), call("r2", at(10, 2), model="o3", model_version="o3-2025-04-16", output_tokens=7))
    result = run(bill, events)
    assert result.shares() == {"r1": D("0.10")}
    assert [(result.pool(n)["status"], result.pool(n)["unmatched_billed_cost"]) for n in (2, 3)] == [
        ("unmatched_pool", D("0.70")),
        ("zero_quantity", D("0.20")),
    ]
    assert sorted(result.unmatched.select("call_model", "token_type", "reason", "tokens").rows()) == [
        ("o3-2025-04-16", "input", "unknown_model", 100),
        ("o3-2025-04-16", "output", "unknown_model", 7),
    ]


def test_cache_tokens_and_failed_calls():
    bill = focus(
        bill_row("0.30", quantity="300", SkuMeter="Input Tokens"),
        bill_row("0.60", quantity="600", SkuMeter="Cached Input Tokens"),
        bill_row("0.10", quantity="100", SkuMeter="Cache Write Input Tokens"),
        bill_row("0.40", quantity="40", SkuMeter="Output Tokens"),
    )
    # Telemetry's input includes cache reads and writes: uncached input = 1000 - 600 - 100 = 300.
    # The failed call reports no tokens: it gets nothing.
    events = calls(
        call("r1", at(10, 1), input_tokens=1000, cache_read=600, cache_write=100, output_tokens=40),
        call("r2", at(10, 2), input_tokens=0, status="error"),
    )
    tokens = call_tokens(events).collect()
    CallTokens.validate(tokens)
    assert sorted(tokens.select("request_id", "token_type", "tokens").rows()) == [
        ("r1", "cache_read", 600), ("r1", "cache_write", 100), ("r1", "input", 300), ("r1", "output", 40)
    ]  # fmt: skip
    assert run(bill, events).shares() == {"r1": D("1.40")}


def test_azure_daily_meter_rows_allocate_to_dated_telemetry_models():
    # 2025-04-01 rows of the FinOps hub sample: no quantity, so split by logged tokens.
    day = dict(day_row=True, quantity=None, ConsumedUnit=None, SkuMeter=None, x_ModelVersion=None, ServiceProviderName="Microsoft")
    bill = focus(
        bill_row("0.00207345", x_SkuMeterName="gpt-4o-mini-0718-Inp-glbl Tokens", **day),
        bill_row("0.0013644", x_SkuMeterName="gpt-4o-mini-0718-Outp-glbl Tokens", **day),
        bill_row("0.0005076", x_SkuMeterName="R1 Inp glbl Tokens", **day),
    )
    events = calls(
        call("r1", at(9), provider="azure_openai", input_tokens=3000, output_tokens=100),
        call("r2", at(15), provider="azure.ai.openai", input_tokens=1000, output_tokens=300),
    )
    result = run(bill, events)
    assert result.shares(token_type="input") == {"r1": D("0.0015550875"), "r2": D("0.0005183625")}  # 3/4 and 1/4
    assert result.shares(token_type="output") == {"r1": D("0.0003411"), "r2": D("0.0010233")}  # 1/4 and 3/4
    assert result.pool(4)["status"] == "zero_quantity"  # R1: no quantity, no telemetry


def test_bedrock_usage_types_allocate_to_bedrock_model_ids():
    aws = dict(x_ModelVersion=None, SkuMeter=None, ServiceProviderName="Amazon Web Services")
    bill = focus(
        bill_row("0.0003", quantity="300", x_UsageType="USE1-Claude4.5Haiku-input-tokens", **aws),
        bill_row("0.00003", quantity="300", x_UsageType="USE1-Claude4.5Haiku-cache-read-input-token-count", **aws),
    )
    model = dict(provider="aws.bedrock", model="claude-haiku-4-5")
    events = calls(
        call("r1", at(10, 1), input_tokens=400, cache_read=200, model_version="us.anthropic.claude-haiku-4-5-20251001-v1:0", **model),
        call("r2", at(10, 2), input_tokens=200, cache_read=100, model_version="anthropic.claude-haiku-4-5-20251001-v1:0", **model),
    )
    result = run(bill, events)
    assert result.shares(token_type="input") == {"r1": D("0.0002"), "r2": D("0.0001")}
    assert result.shares(token_type="cache_read") == {"r1": D("0.00002"), "r2": D("0.00001")}


def test_the_focus_export_splits_each_origin_row_by_feature_and_sums_back():
    bill = focus(
        bill_row("1.00", quantity="1000", ContractedCost="0.90", EffectiveCost="0.80", ListCost="1.20"),
        bill_row("0.07", quantity="7", SkuMeter="Output Tokens"),
    )
    events = calls(
        call("r1", at(10, 1), input_tokens=100, output_tokens=3, feature_tag="chat", prompt_version="v1"),
        call("r2", at(10, 2), input_tokens=200, output_tokens=4, feature_tag="chat", prompt_version="v2"),
        call("r3", at(10, 3), input_tokens=300, feature_tag="search", prompt_version="v1"),
    )
    result = run(bill, events)
    export = result.export
    origin = focus(
        bill_row("1.00", quantity="1000", ContractedCost="0.90", EffectiveCost="0.80", ListCost="1.20"),
        bill_row("0.07", quantity="7", SkuMeter="Output Tokens"),
    ).collect()
    for row in origin.iter_rows(named=True):
        parts = export.filter(pl.col("source_line") == row["source_line"])
        for column in ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "ConsumedQuantity"):
            assert parts[column].sum() == row[column], column
        ratios = [Decimal(str(json.loads(d, parse_float=Decimal)["Elements"][0]["AllocatedRatio"])) for d in parts["AllocatedMethodDetails"]]
        assert sum(ratios) == 1
    line2 = export.filter(pl.col("source_line") == 2).sort("AllocatedResourceId", "AllocatedTags", nulls_last=True)
    # chat/v1 100, chat/v2 200, search/v1 300 of 1000 tokens; the 400 unlogged are unallocated.
    assert line2.select("AllocatedResourceId", "BilledCost", "EffectiveCost").rows() == [
        ("chat", D("0.1"), D("0.08")), ("chat", D("0.2"), D("0.16")), ("search", D("0.3"), D("0.24")), (None, D("0.4"), D("0.32"))
    ]  # fmt: skip
    details = [json.loads(d, parse_float=Decimal)["Elements"][0] for d in line2["AllocatedMethodDetails"]]
    assert [(e["AllocatedRatio"], e["UsageUnit"], e["UsageQuantity"]) for e in details] == [
        (D("0.1"), "Tokens", 100), (D("0.2"), "Tokens", 200), (D("0.3"), "Tokens", 300), (D("0.4"), "Tokens", 400)
    ]  # fmt: skip
    assert json.loads(line2["AllocatedTags"][0]) == {
        "unitledger/feature_tag": "chat", "unitledger/model_version": "gpt-4o-mini-2024-07-18", "unitledger/prompt_version": "v1"
    }  # fmt: skip
    assert line2["AllocatedTags"][3] is None and set(line2["AllocatedMethodId"]) == {"unitledger-token-share"}
    # Output: 7 billed = 7 logged, no unlogged row.
    assert export.filter(pl.col("source_line") == 3)["AllocatedResourceId"].to_list().count(None) == 0
    # The origin's other columns are kept.
    assert set(export["SkuMeter"]) == {"Input Tokens", "Output Tokens"} and set(export["InvoiceId"]) == {"INV-1"}


def _exact(value: Decimal) -> Fraction:
    return Fraction(value)


@pytest.mark.parametrize("seed", range(12))
def test_random_pools_conserve_every_row_exactly_and_each_share_is_within_1e_18(seed):
    rng = random.Random(seed)
    rows, origin = [], []
    for hour in (10, 11):
        for meter in ("Input Tokens", "Output Tokens"):
            for _ in range(rng.randint(1, 3)):  # rows of one pool (several SKUs, regions, a correction)
                cost = D(rng.randint(-10**9, 10**12)) / D(10) ** rng.randint(0, 14)
                choice = rng.random()
                quantity, unit = (
                    (None, None) if choice < 0.2
                    else (str(D(rng.randint(0, 10**7)) / 1000), "1000 Tokens") if choice < 0.5
                    else (str(rng.randint(0, 5000)), "Tokens")
                )  # fmt: skip
                rows.append(bill_row(str(cost), hour=hour, SkuMeter=meter, quantity=quantity, ConsumedUnit=unit))
    events = []
    for i in range(rng.randint(1, 12)):
        hour = rng.choice((10, 11, 12))
        events.append(call(f"r{i:02d}", at(hour, rng.randint(0, 59)), input_tokens=rng.choice((0, rng.randint(1, 10**6))),
                           output_tokens=rng.choice((0, rng.randint(1, 10**5)))))  # fmt: skip
    bill = focus(*rows)
    result = run(bill, calls(*events))

    # The pools by hand: billed = the sum of the rows' quantities (x 1000 for "1000 Tokens").
    staged = bill.collect()
    billed: dict[tuple, Fraction] = {}
    for r in staged.iter_rows(named=True):
        key = (r["ChargePeriodStart"], r["SkuMeter"])
        scale = 1000 if r["ConsumedUnit"] == "1000 Tokens" else 1
        billed[key] = billed.get(key, Fraction(0)) + (_exact(r["ConsumedQuantity"]) * scale if r["ConsumedQuantity"] is not None else 0)
    logged: dict[tuple, dict[str, int]] = {}
    for e in events:
        start = e["timestamp"].replace(minute=0)
        for meter, tokens in (("Input Tokens", e["input_tokens"]), ("Output Tokens", e["output_tokens"])):
            if tokens and (start, meter) in billed:
                logged.setdefault((start, meter), {})[e["request_id"]] = tokens
    for r in staged.iter_rows(named=True):
        key = (r["ChargePeriodStart"], r["SkuMeter"])
        pool = result.pool(r["source_line"])
        shares = result.requests.filter(pl.col("source_line") == r["source_line"])
        calls_here = logged.get(key, {})
        total_logged = sum(calls_here.values())
        base = max(billed[key], Fraction(total_logged))
        if total_logged == 0:
            assert shares.is_empty() and pool["unmatched_billed_cost"] == r["BilledCost"]
            continue
        for column, cost in (("billed_cost", r["BilledCost"]), ("effective_cost", r["EffectiveCost"])):
            got = dict(shares.select("request_id", column).iter_rows())
            assert set(got) == set(calls_here)
            for request, tokens in calls_here.items():
                assert abs(_exact(got[request]) - _exact(cost) * tokens / base) <= UNIT
            unlogged = pool[f"unlogged_{column}"]
            assert abs(_exact(unlogged) - _exact(cost) * (base - total_logged) / base) <= UNIT
            assert sum(got.values()) + unlogged == cost  # exactly, per origin row and column
            assert unlogged == 0 or (unlogged > 0) == (cost > 0)


def test_a_request_billed_exactly_in_one_currency_takes_no_share_of_another_currencys_pool():
    """r1's own x_RequestId row bills its output in EUR; its input falls in a USD pool, which
    would put two currencies on one request: it takes no share (reported, currencies named); r2
    takes its tokens' share and the rest of the pool is unlogged: 0.03 x 100 / 300."""
    from unitledger.model.allocation import with_own_currency

    bill = focus(
        bill_row("0.03", quantity="300"),
        bill_row("0.05", x_RequestId="r1", SkuMeter="Output Tokens", BillingCurrency="EUR", BillingAccountId="acct-2"),
    )
    events = calls(call("r1", at(10, 5), output_tokens=10), call("r2", at(10, 10)))
    result = run(bill, with_own_currency(events, bill), exact=exact_token_coverage(bill))
    assert result.shares() == {"r2": D("0.01")}
    assert result.pool(2)["unlogged_billed_cost"] == D("0.02")
    lost = result.unmatched.row(0, named=True)
    assert (lost["reason"], lost["candidates"], lost["tokens"]) == ("two_currencies", "EUR, USD", 100)


def test_fully_loaded_spreads_each_accounts_shared_cost_over_its_features_exactly():
    from schemas.allocation import FullyLoadedCosts
    from unitledger.model.allocation import fully_loaded_costs

    key = {"billing_period": "2026-03", "billing_currency": "USD"}
    shared = pl.DataFrame(
        [
            {**key, "billing_account_id": "acct-1", "shared_cost": D("1.00")},  # tax
            {**key, "billing_account_id": "acct-1", "shared_cost": D("-0.10")},  # a credit
            {**key, "billing_account_id": "acct-2", "shared_cost": D("0.50")},  # no feature cost to spread over
            {**key, "billing_account_id": "acct-4", "shared_cost": D("1.00")},
        ],
        schema_overrides={"shared_cost": MONEY},
    ).lazy()
    features = [("acct-1", "a", "0.02"), ("acct-1", "b", "0.01"), ("acct-3", "c", "0.07"),
                ("acct-4", "x", "0.01"), ("acct-4", "y", "0.01"), ("acct-4", "z", "0.01")]  # fmt: skip
    driver = pl.DataFrame(
        [{**key, "billing_account_id": a, "feature_tag": f, "model_version": "m", "prompt_version": "v1", "token_cost": D(c)} for a, f, c in features],
        schema_overrides={"token_cost": MONEY},
    ).lazy()
    out = fully_loaded_costs(shared, driver).collect()
    FullyLoadedCosts.validate(out, lazy=True)
    share = {(r["billing_account_id"], r["feature_tag"]): r["shared_cost_share"] for r in out.iter_rows(named=True)}
    # 0.90 by 0.02 : 0.01; acct-2's 0.50 stays whole; acct-3 has no shared cost; acct-4's 1.00 in
    # three equal parts, the 1e-18 the floors leave to one of them.
    assert (share[("acct-1", "a")], share[("acct-1", "b")]) == (D("0.6"), D("0.3"))
    assert share[("acct-2", None)] == D("0.5") and share[("acct-3", "c")] == 0
    assert sorted(share[("acct-4", f)] for f in "xyz") == [D("0.333333333333333333")] * 2 + [D("0.333333333333333334")]
    assert out.filter(pl.col("billing_account_id") == "acct-1")["fully_loaded_cost"].sum() == D("0.93")
    assert out.height == 7
