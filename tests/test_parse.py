"""Parsing landing text: exact decimals, UTC timestamps, per-row problems, the real FOCUS sample."""

import csv
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from schemas import StagedFocus
from tests.builders import focus_row, write_focus_csv
from unitledger.checks.validation import validate
from unitledger.sources.files import InputFileError, scan_quarantine
from unitledger.sources.focus import scan_staged_focus, stage_focus
from unitledger.sources.values import decimal_problem, parse_decimal, parse_timestamp

from tests.conftest import FOCUS_SAMPLE as SAMPLE


def _utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-09-01 00:00:00", _utc(2024, 9, 1)),  # real exports: no T, no Z
        ("2024-09-01T00:00:00Z", _utc(2024, 9, 1)),
        ("2024-09-01T02:30:00+02:00", _utc(2024, 9, 1, 0, 30)),  # offsets converted to UTC
        ("2024-08-31T23:00:00-05:00", _utc(2024, 9, 1, 4)),
        ("2026-03-01T13:45:12.345678Z", _utc(2026, 3, 1, 13, 45, 12, 345678)),
        ("2024-09-01", _utc(2024, 9, 1)),
        (" 2024-09-01T00:00:00Z ", _utc(2024, 9, 1)),
        ("2024-02-30 00:00:00", None),
        ("yesterday", None),
    ],
)
def test_parse_timestamp(text, expected):
    got = pl.select(parse_timestamp(pl.lit(text))).item()
    assert got == expected


@pytest.mark.parametrize(
    ("text", "expected", "problem"),
    [
        ("0.00000080000", Decimal("0.0000008"), None),
        ("35.2E-7", Decimal("0.00000352"), None),
        ("-1.50", Decimal("-1.5"), None),  # credits are negative: valid
        ("123456789.123456789012345678", Decimal("123456789.123456789012345678"), None),
        ("abc", None, "is not a decimal number"),
        ("1,000", None, "is not a decimal number"),
        ("0.1234567890123456789", None, "more than 18 decimal places"),
        # Up to the bound amounts are exact; from 10^15 in magnitude they could overflow a sum.
        ("999999999999999.999999999999999999", Decimal("999999999999999.999999999999999999"), None),
        ("-999999999999999", Decimal("-999999999999999"), None),
        ("1e15", None, "is out of range: an amount must be below 10^15"),
        ("-1000000000000000", None, "is out of range"),
        ("6e19", None, "is out of range"),
        ("6e25", None, "is out of range"),  # too large for Decimal(38,18) itself
        ("-123456789012345678901234", None, "is out of range"),
    ],
)
def test_decimals_are_exact_or_flagged(text, expected, problem):
    frame = pl.select(value=parse_decimal(pl.lit(text)), problem=decimal_problem(pl.lit(text)))
    if problem is None:
        assert frame["problem"][0] is None
        assert frame["value"][0] == expected
    else:
        assert problem in frame["problem"][0]


def _stage(layout, rows, **kwargs):
    write_focus_csv(layout.landing_focus / "acct" / "d1" / "export.csv", rows, **kwargs)
    return stage_focus(layout)


def test_bad_rows_are_quarantined_with_line_column_and_reason(layout):
    rows = [
        focus_row("r1"),
        focus_row("r2", BilledCost="abc"),
        focus_row("r3", ChargeCategory="Refund"),
        focus_row("r4", BillingCurrency="USDX"),
        focus_row("r5", ChargePeriodStart="2026-03-02T11:00:00Z", ChargePeriodEnd="2026-03-02T10:00:00Z"),
        focus_row(None, "-5.00", ChargeCategory="Credit"),  # a credit: valid
    ]
    report = _stage(layout, rows)
    assert report.rows["focus"] == 2
    quarantine = scan_quarantine(layout).sort("source_line").collect()
    assert quarantine["source_line"].to_list() == [3, 4, 5, 6]  # header is line 1
    assert quarantine["column"].to_list() == ["BilledCost", "ChargeCategory", "BillingCurrency", "ChargePeriodStart"]
    assert "not a decimal number: abc" in quarantine["reason"][0]
    assert "not a FOCUS ChargeCategory: Refund" in quarantine["reason"][1]
    assert "ISO 4217" in quarantine["reason"][2]
    assert "not before ChargePeriodEnd" in quarantine["reason"][3]
    assert set(quarantine["source_file"]) == {"acct/d1/export.csv"}
    # Nothing lost: staged + quarantined EffectiveCost equals the file's total.
    staged = scan_staged_focus(layout).select(pl.col("EffectiveCost").sum()).collect().item()
    held = quarantine["effective_cost"].sum()
    assert staged + held == sum(Decimal(r["EffectiveCost"]) for r in rows)


def test_missing_mandatory_column_fails_the_file(layout):
    header = [c for c in focus_row() if c != "EffectiveCost"]
    with pytest.raises(InputFileError, match=r"acct/d1/export.csv: line 1: missing mandatory FOCUS column\(s\) EffectiveCost"):
        _stage(layout, [focus_row()], header=header)
    assert not list(layout.staged("focus").glob("*.parquet"))


def test_real_focus_1_0_sample_ingests_with_its_cost_intact(layout):
    target = layout.landing_focus / "sample" / SAMPLE.name
    target.parent.mkdir(parents=True)
    target.write_bytes(SAMPLE.read_bytes())
    report = stage_focus(layout)
    with open(SAMPLE, newline="") as fh:
        source = list(csv.DictReader(fh))
    assert report.rows["focus"] == len(source) == 1000
    assert report.quarantined_rows == 0
    staged = scan_staged_focus(layout).collect()
    for column in ("BilledCost", "EffectiveCost", "ListCost"):
        assert staged[column].sum() == sum(Decimal(r[column]) for r in source), column
    # FOCUS 1.0 ProviderName became ServiceProviderName; NULL cells became nulls.
    assert staged["ServiceProviderName"].null_count() == 0
    assert set(staged["ServiceProviderName"]) == {r["ProviderName"] for r in source}
    assert staged["ChargeClass"].null_count() == sum(r["ChargeClass"] == "NULL" for r in source)
    assert staged["x_RequestId"].null_count() == 1000
    assert validate(StagedFocus, staged.lazy()).passed
