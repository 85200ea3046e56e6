"""Recognizing AI token rows in FOCUS exports (unitledger.sources.ai_usage), on the shapes of the
real samples in shared/data/real-inputs/."""

from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from schemas.allocation import ClassifiedUsage, UnrecognizedUsage
from schemas.types import MONEY, TIMESTAMP
from tests.alloc_frames import bill_row, focus
from tests.conftest import REPO
from unitledger.config import Allocation, MeterRule
from unitledger.sources.ai_usage import classify_usage, exact_token_coverage, unrecognized_usage

REAL_INPUTS = REPO.parent / "shared" / "data" / "real-inputs"
if not REAL_INPUTS.exists():
    REAL_INPUTS = Path("/work/shared/data/real-inputs")


def _classified(frame: pl.LazyFrame, settings: Allocation = Allocation()) -> pl.DataFrame:
    out = classify_usage(frame, settings).collect()
    ClassifiedUsage.validate(out, lazy=True)
    return out.sort("source_line")


def _recognized(out: pl.DataFrame) -> list[tuple]:
    return list(zip(out["usage_class"], out["billed_model"], out["token_type"]))


def test_azure_openai_meter_names_from_the_finops_hub_sample():
    sample = pl.read_csv(REAL_INPUTS / "azure-aoai-finops-hub" / "daily_meter_costs.csv", schema_overrides={"DailyCost": pl.String})
    rows = [
        bill_row(
            cost, day_row=True, quantity=None, ConsumedUnit=None, SkuMeter=None, x_ModelVersion=None, x_SkuMeterName=meter,
            ServiceProviderName="Microsoft", BillingCurrency=currency,
        )
        for currency, cost, meter in zip(sample["BillingCurrency"], sample["DailyCost"], sample["x_SkuMeterName"])
    ]
    out = _classified(focus(*rows))
    expected = {  # by hand, from the meter names
        "gpt 4o 0513 Input global Tokens": ("token", "gpt 4o 0513", "input"),
        "gpt 4o 0513 Output global Tokens": ("token", "gpt 4o 0513", "output"),
        "gpt-4o-mini-0718-Inp-glbl Tokens": ("token", "gpt 4o mini 0718", "input"),
        "gpt-4o-mini-0718-Outp-glbl Tokens": ("token", "gpt 4o mini 0718", "output"),
        "R1 Inp glbl Tokens": ("token", "r1", "input"),
        "R1 Outp glbl Tokens": ("token", "r1", "output"),
        "Standard Text Records": ("shared", None, None),
    }
    assert _recognized(out) == [expected[m] for m in sample["x_SkuMeterName"]]
    assert set(out.filter(pl.col("usage_class") == "token")["recognized_by"]) == {"x_SkuMeterName:azure+x_SkuMeterName:azure"}
    # Every cent of the sample is in exactly one class.
    total = sum(Decimal(c) for c in sample["DailyCost"])
    assert out["BilledCost"].sum() == total
    assert sum(out.filter(pl.col("usage_class") == c)["BilledCost"].sum() for c in ("token", "shared")) == total


@pytest.mark.parametrize("column", ["SkuMeter", "x_UsageType"])
def test_aws_bedrock_usage_types(column):
    usage_types = {
        "USE1-Claude4.6Sonnet-input-tokens": ("token", "Claude4.6Sonnet", "input"),
        "USE1-Claude4.6Sonnet-output-tokens": ("token", "Claude4.6Sonnet", "output"),
        "USE1-Claude4.5Haiku-cache-read-input-token-count": ("token", "Claude4.5Haiku", "cache_read"),
        "USW2-Claude4.5Haiku-cache-write-input-token-count": ("token", "Claude4.5Haiku", "cache_write"),
        "USE1-NovaPro-mantle-input-tokens-flex": ("token", "NovaPro", "input"),
        # Marketplace models: the type is in the usage type, the model in the product name.
        "USE1-MP:USE1_InputTokenCount-Units": ("token", "claude 3.5 sonnet", "input"),
        "USE1-MP:USE1_OutputTokenCount-Units": ("token", "claude 3.5 sonnet", "output"),
        "USE1-MP:USE1_CacheReadInputTokenCount-Units": ("token", "claude 3.5 sonnet", "cache_read"),
        "USE1-MP:USE1_CacheWriteInputTokenCount-Units": ("token", "claude 3.5 sonnet", "cache_write"),
        "USE1-MP:USE1_output_tokens_standard-Units": ("token", "claude 3.5 sonnet", "output"),
        "USE1-TimedStorage-ByteHrs": ("shared", None, None),
    }
    rows = [
        bill_row(
            "1.25", ConsumedUnit="Units" if "MP:" in usage_type else "Tokens" if "token" in usage_type.lower() else "GB-Hours",
            x_ModelVersion=None, ServiceProviderName="AWS",
            ServiceName="Claude 3.5 Sonnet (Amazon Bedrock Edition)" if "MP:" in usage_type else "Amazon Bedrock",
            **{"SkuMeter": None, column: usage_type},
        )
        for usage_type in usage_types
    ]  # fmt: skip
    out = _classified(focus(*rows))
    assert _recognized(out) == list(usage_types.values())
    assert out.filter(pl.col("usage_class") == "token")["billed_tokens"].to_list() == [Decimal(1000)] * 10


def test_litellm_focus_export_rows_bill_requests_not_tokens():
    raw = pl.read_csv(REAL_INPUTS / "litellm-focus-export" / "litellm_focus_export_INVENTED_INPUT.csv", infer_schema=False)
    staged = raw.select(
        pl.lit("litellm.csv").alias("source_file"),
        (pl.int_range(pl.len()) + 2).cast(pl.Int64).alias("source_line"),
        *[pl.col(c).str.to_decimal(scale=18).cast(MONEY) for c in ("BilledCost", "EffectiveCost", "ListCost", "ConsumedQuantity")],
        *[pl.col(c).str.to_datetime("%Y-%m-%dT%H:%M:%SZ", time_zone="UTC").cast(TIMESTAMP) for c in ("ChargePeriodStart", "ChargePeriodEnd")],
        pl.col("ProviderName").alias("ServiceProviderName"),
        *[pl.col(c) for c in ("BillingAccountId", "BillingCurrency", "ChargeCategory", "ConsumedUnit", "ServiceName", "SubAccountId")],
        *[pl.lit(None, pl.String).alias(c) for c in ("x_RequestId", "SkuId", "SkuMeter", "x_ModelVersion", "ChargeDescription")],
    )
    out = _classified(staged.lazy())
    assert out["usage_class"].to_list() == ["shared"] * 3
    assert out["reason"].to_list() == ["not token usage (meter null, unit 'Requests')"] * 3
    assert out["BilledCost"].sum() == Decimal("0.051475") + Decimal("0.613215") + Decimal("0.054143")


def test_focus_sku_meters_and_sku_price_details():
    rows = [
        # FOCUS spec AI example shape: model identity and cache action in SkuPriceDetails.
        bill_row("10.00", x_ModelVersion=None, SkuMeter="Cache Read Input Tokens",
                 SkuPriceDetails='{"ModelDeveloper":"Solora AI","ModelId":"solora-neptune-5.0","ModelVersion":"5.0",'
                                 '"TokenCacheAction":"Read","TokenDirection":"Input"}'),
        bill_row("37.50", x_ModelVersion=None, SkuMeter="Cache Write Input Tokens",
                 SkuPriceDetails='{"ModelId":"solora-neptune-5.0","TokenCacheAction":"Write","TokenDirection":"Input"}'),
        # Keys read case-insensitively; x_-prefixed model keys; no SkuMeter at all.
        bill_row("1", x_ModelVersion=None, SkuMeter=None, SkuPriceDetails='{"tokendirection":"Output","MODELID":"m-1"}'),
        bill_row("1", x_ModelVersion=None, SkuMeter=None, SkuPriceDetails='{"TokenType":"Cached Input","x_ModelId":"m-2"}'),
        bill_row("1", x_ModelVersion=None, SkuMeter=None, SkuPriceDetails='{"CacheAction":"Write","TokenDirection":"Input","x_Model":"m-3"}'),
        bill_row("1", x_ModelVersion=None, SkuMeter=None, SkuPriceDetails='{"CacheAction":"Uncached","TokenDirection":"Input","x_Model":"m-4"}'),
        # x_ModelVersion comes first; SkuPriceDetails' type beats the meter's.
        bill_row("1", x_ModelVersion="m-5", SkuMeter="Input Tokens", SkuPriceDetails='{"ModelId":"other","TokenDirection":"Output"}'),
        # The FOCUS SkuMeter convention, older spellings, and cost-report line items as meters.
        *[bill_row("1", SkuMeter=m) for m in ("Output Tokens", "Cached Input Tokens", "Input Cache", "Output Cache",
                                             "input_tokens", "uncached_input_tokens", "cache_read_input_tokens",
                                             "cache_creation.ephemeral_1h_input_tokens", "Reasoning Tokens")],
        # "Other" cache action: the type is not known.
        bill_row("2", x_ModelVersion="m-6", SkuMeter=None, SkuPriceDetails='{"CacheAction":"Other","TokenDirection":"Input"}'),
        bill_row("3", x_ModelVersion="m-7", SkuMeter=None, SkuPriceDetails="not json"),
    ]  # fmt: skip
    out = _classified(focus(*rows))
    model = "gpt-4o-mini-0718"
    assert _recognized(out) == [
        ("token", "solora-neptune-5.0", "cache_read"),
        ("token", "solora-neptune-5.0", "cache_write"),
        ("token", "m-1", "output"),
        ("token", "m-2", "cache_read"),
        ("token", "m-3", "cache_write"),
        ("token", "m-4", "input"),
        ("token", "m-5", "output"),
        ("token", model, "output"),
        ("token", model, "cache_read"),
        ("token", model, "cache_read"),
        ("token", model, "cache_write"),
        ("token", model, "input"),
        ("token", model, "input"),
        ("token", model, "cache_read"),
        ("token", model, "cache_write"),
        ("token", model, "output"),
        ("unrecognized_token", "m-6", None),
        ("unrecognized_token", "m-7", None),  # unreadable details, but the unit says Tokens: reported
    ]
    assert out["recognized_by"][6] == "x_ModelVersion+SkuPriceDetails"
    assert out["reason"][16] == "no token type"


def test_units_scale_quantities_exactly_and_unknown_units_are_reported():
    rows = [
        bill_row("1", quantity="0.5", ConsumedUnit="1000 Tokens"),
        bill_row("1", quantity="0.000123", ConsumedUnit="1M Tokens"),
        bill_row("1", quantity="2.5", ConsumedUnit="1K"),
        bill_row("1", quantity="7", ConsumedUnit="tokens"),
        bill_row("1", quantity="0.123456789", ConsumedUnit="1000000  Tokens"),
        bill_row("1", quantity="3", ConsumedUnit="10K Tokens"),  # from the config below
        bill_row("1", quantity="3", ConsumedUnit="Gigatokens"),
        bill_row("1", quantity="-5", ConsumedUnit="Tokens"),
        bill_row("1", quantity="4", ConsumedUnit=None),
        bill_row("1", quantity=None, ConsumedUnit=None),
    ]
    settings = Allocation(units=(("10K Tokens", 10_000),))
    out = _classified(focus(*rows), settings)
    assert out["billed_tokens"].to_list() == [
        Decimal(500), Decimal(123), Decimal(2500), Decimal(7), Decimal("123456.789"), Decimal(30000), None, None, None, None
    ]
    assert out["usage_class"].to_list() == ["token"] * 6 + ["unrecognized_token"] * 3 + ["token"]
    assert out["reason"].to_list()[6:9] == [
        "unknown unit 'Gigatokens' (add it to [allocation.units])",
        "negative quantity",
        "quantity without ConsumedUnit",
    ]


def test_unrecognized_token_rows_are_reported_with_file_line_and_cost_never_dropped():
    rows = [
        bill_row("0.40", SkuMeter="Mystery Tokens"),  # a token meter of no known type
        bill_row("0.30", SkuMeter="Input Tokens", x_ModelVersion=None),  # no model anywhere
        bill_row("0.20", SkuMeter="Input Tokens", ChargeCategory="Tax"),  # tax: shared, whatever the meter
        bill_row("0.10"),  # recognized
        bill_row("0.05", SkuMeter="Standard Text Records", ConsumedUnit="Units"),  # not tokens: shared
    ]
    out = _classified(focus(*rows))
    assert out["usage_class"].to_list() == ["unrecognized_token", "unrecognized_token", "shared", "token", "shared"]
    report = unrecognized_usage(classify_usage(focus(*rows))).collect().sort("source_line")
    UnrecognizedUsage.validate(report)
    assert report.select("source_file", "source_line", "SkuMeter", "BilledCost", "reason").rows() == [
        ("bill.csv", 2, "Mystery Tokens", Decimal("0.40"), "no token type"),
        ("bill.csv", 3, "Input Tokens", Decimal("0.30"), "no model"),
    ]
    assert out["reason"][2] == "ChargeCategory Tax"
    assert out["BilledCost"].sum() == Decimal("1.05")


def test_meter_rules_from_the_config_recognize_what_nothing_built_in_does():
    settings = Allocation(
        meter_rules=(
            MeterRule(pattern=r"^Acme (?P<model>[a-z0-9-]+) prompt$", token_type="input"),
            MeterRule(pattern=r"^summarizer out", token_type="output", model="acme-sum-2", columns=("ChargeDescription",)),
        )
    )
    rows = [
        bill_row("1", x_ModelVersion=None, SkuMeter="Acme nova-7 prompt"),
        bill_row("1", x_ModelVersion=None, SkuMeter="Premium", ChargeDescription="summarizer out, batch"),
        bill_row("1", x_ModelVersion=None, SkuMeter="Acme nova-7 prompt "),  # trailing blank: no rule matches
    ]
    out = _classified(focus(*rows), settings)
    assert _recognized(out) == [
        ("token", "nova-7", "input"),
        ("token", "acme-sum-2", "output"),
        ("unrecognized_token", None, None),  # its unit is Tokens: reported, not dropped
    ]
    assert out["recognized_by"].to_list()[:2] == ["meter rule+meter rule", "meter rule+meter rule"]


def test_exact_rows_cover_their_token_types_or_all_of_them():
    rows = [
        bill_row("1", x_RequestId="r1", SkuMeter="Output Tokens"),
        bill_row("1", x_RequestId="r1", SkuMeter="Output Tokens", hour=11),
        bill_row("1", x_RequestId="r2", SkuMeter=None),  # a per-request total: covers every type
        bill_row("1", x_RequestId=None, SkuMeter="Input Tokens"),
    ]
    flags = exact_token_coverage(focus(*rows)).collect().sort("request_id")
    assert flags.columns == ["request_id", "covers_input", "covers_output", "covers_cache_read", "covers_cache_write"]
    assert flags.rows() == [("r1", False, True, False, False), ("r2", True, True, True, True)]
