"""CSV records on real FOCUS headers (69 columns of FOCUS 1.3, 48 of the real 1.0 sample, each with
the AI extensions last): every record has as many fields as the header whatever columns the pipeline
reads, a name given twice in the header refuses the file, and quarantine lines are physical lines."""

import csv
import io
from decimal import Decimal

import polars as pl
import pytest

from tests.builders import focus_13_header, focus_row, focus_sample_header
from tests.conftest import leftovers
from unitledger.layout import Layout
from unitledger.sources.files import InputFileError, scan_quarantine
from unitledger.sources.focus import scan_staged_focus, stage_focus
from unitledger.sources.invoices import read_invoices

HEADERS = {"FOCUS 1.3": focus_13_header, "FOCUS 1.0 sample": focus_sample_header}
TAGS = "{env:prod,team:ml}"  # a comma, no quote: an exporter that forgets to quote it shifts the columns


def _row(request_id: str, cost: str = "0.010000000000", **overrides) -> dict:
    # Values for the columns the pipeline does not read as well: a real export fills them.
    return focus_row(
        request_id, cost, ProviderName="Anthropic", PublisherName="Anthropic", HostProviderName="Anthropic",
        ServiceCategory="AI and Machine Learning", ChargeFrequency="Usage-Based", PricingUnit="Tokens",
        RegionId="us-east-1", RegionName="US East (N. Virginia)", Tags=TAGS, **overrides,
    )


def _record(header: list[str], row: dict) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(["" if row.get(c) is None else row[c] for c in header])
    return out.getvalue()


def _write(layout: Layout, text: str, name: str = "export.csv"):
    path = layout.landing_focus / "acct" / "d1" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _refused(layout: Layout, message: str) -> None:
    with pytest.raises(InputFileError) as raised:
        stage_focus(layout)
    assert str(raised.value) == f"acct/d1/export.csv: {message}"
    assert scan_staged_focus(layout).collect().is_empty()
    assert not leftovers(layout)


@pytest.mark.parametrize("which", HEADERS)
def test_an_unquoted_comma_in_tags_refuses_the_file(layout, which):
    header = HEADERS[which]()
    good = _record(header, _row("r1"))
    # The exporter forgot to quote Tags: its comma splits it in two, and x_RequestId's value would
    # be read as x_ModelVersion's (Polars ignores the extra field when it reads some columns only).
    unquoted = good.replace(f'"{TAGS}"', TAGS).replace("r1", "r2")
    assert len(next(csv.reader([unquoted]))) == len(header) + 1
    _write(layout, ",".join(header) + "\n" + good + unquoted + good.replace("r1", "r3"))
    _refused(layout, f"line 3: {len(header) + 1} fields, the header has {len(header)}")


@pytest.mark.parametrize("which", HEADERS)
def test_a_truncated_last_record_refuses_the_file(layout, which):
    header = HEADERS[which]()
    records = [_record(header, _row(f"r{i}")) for i in (1, 2, 3)]
    last = records[2]
    cut = last[: last.index(",acct-us,") + len(",acct-us")]  # the export stopped mid-row, mid-line
    fields = next(csv.reader([cut]))
    _write(layout, ",".join(header) + "\n" + records[0] + records[1] + cut)
    _refused(layout, f"line 4: {len(fields)} fields, the header has {len(header)}: the file ends inside this record (truncated?)")


def test_a_record_cut_inside_a_quoted_field_refuses_the_file(layout):
    header = focus_13_header()
    records = [_record(header, _row(f"r{i}", ChargeDescription="Input tokens, batch")) for i in (1, 2)]
    cut = records[1][: records[1].index("Input tokens, ba") + len("Input tokens, ba")]
    _write(layout, ",".join(header) + "\n" + records[0] + cut)
    fields = next(csv.reader([cut]))
    _refused(layout, f"line 3: {len(fields)} fields, the header has {len(header)}: the file ends inside this record (truncated?)")


def test_a_short_record_amid_the_file_refuses_it(layout):
    header = focus_13_header()
    short = _record(header, _row("r2")).replace(",Tokens,", ",", 1)  # one field lost: later ones shift left
    _write(layout, ",".join(header) + "\n" + _record(header, _row("r1")) + short + _record(header, _row("r3")))
    _refused(layout, f"line 3: {len(header) - 1} fields, the header has {len(header)}")


@pytest.mark.parametrize("which", HEADERS)
def test_a_column_named_twice_refuses_the_file(layout, which):
    header = HEADERS[which]()
    doubled = [("BilledCost" if c == "ContractedUnitPrice" else c) for c in header]
    rows = [_row("r1", ContractedUnitPrice="99"), _row("r2", ContractedUnitPrice="98")]
    _write(layout, ",".join(doubled) + "\n" + "".join(_record(header, r) for r in rows))
    _refused(layout, "line 1: the header names a column more than once: BilledCost appears 2 times")


def test_quarantine_and_staging_name_physical_lines(layout):
    header = focus_13_header()
    text = (
        ",".join(header) + "\n"
        + _record(header, _row("r1", ChargeDescription="Input tokens\nbilled per 1,000\nsee the contract"))  # lines 2-4
        + _record(header, _row("r2", "0.070000000000", ChargeCategory="Refund"))  # line 5: quarantined
        + "\n"  # line 6: blank, not a record
        + _record(header, _row("r3", ChargeDescription='a "quoted"\r\nword'))  # lines 7-8
        + _record(header, _row("r4", BillingCurrency="USX"))  # line 9: quarantined
        + _record(header, _row("r5"))  # line 10
    )
    _write(layout, text)
    report = stage_focus(layout)
    assert (report.rows["focus"], report.quarantined_rows) == (3, 2)
    staged = scan_staged_focus(layout).sort("source_line").collect()
    assert staged.select("x_RequestId", "source_line").rows() == [("r1", 2), ("r3", 7), ("r5", 10)]
    assert staged["ChargeDescription"].to_list()[:2] == ["Input tokens\nbilled per 1,000\nsee the contract", 'a "quoted"\r\nword']
    held = scan_quarantine(layout).sort("source_line").collect()
    assert held.select("source_line", "column").rows() == [(5, "ChargeCategory"), (9, "BillingCurrency")]
    assert held["billed_cost"].to_list() == [Decimal("0.07"), Decimal("0.01")]


def test_crlf_lines_and_a_final_record_without_newline_are_numbered_as_read(layout):
    header = focus_13_header()
    rows = [_row("r1"), _row("r2", ChargeCategory="Refund")]
    text = ",".join(header) + "\r\n" + "".join(_record(header, r).replace("\n", "\r\n") for r in rows)
    _write(layout, text.removesuffix("\r\n"))
    stage_focus(layout)
    assert scan_quarantine(layout).collect()["source_line"].to_list() == [3]
    assert scan_staged_focus(layout).collect()["x_RequestId"].to_list() == ["r1"]


def test_an_invoice_record_short_of_a_field_refuses_the_file(layout):
    path = layout.landing_invoices / "ap.csv"
    path.parent.mkdir(parents=True)
    path.write_text(
        "invoice_id,billing_account_id,billing_period,invoice_total,currency\n"
        "INV-1,acct-us,2026-03,10.00,USD\n"
        "INV-2,acct-us,2026-03,USD\n"
        "INV-3,acct-us,2026-03,1.00,USD\n"
    )
    with pytest.raises(InputFileError) as raised:
        read_invoices(layout)
    assert str(raised.value) == "ap.csv: line 3: 4 fields, the header has 5"


def test_physical_lines_of_a_gzipped_file(layout):
    import gzip

    header = focus_13_header()
    text = (
        ",".join(header) + "\n"
        + _record(header, _row("r1", ChargeDescription="two\nlines"))
        + _record(header, _row("r2", ChargeCategory="Refund"))
    )
    path = layout.landing_focus / "acct" / "d1" / "export.csv.gz"
    path.parent.mkdir(parents=True)
    path.write_bytes(gzip.compress(text.encode()))
    stage_focus(layout)
    assert scan_quarantine(layout).collect()["source_line"].to_list() == [4]
    assert scan_staged_focus(layout).select(pl.col("source_line")).collect().item() == 2


def test_the_columns_allocation_reads_are_staged_as_text(layout):
    header = focus_13_header() + ["x_SkuMeterName", "x_UsageType"]
    values = {
        "ResourceId": "arn:aws:bedrock:us-east-1::foundation-model/claude", "ResourceName": "claude",
        "SubAccountId": "proj-1", "SubAccountName": "Support", "SkuPriceDetails": '{"x_TokenType": "input"}',
        "x_SkuMeterName": "gpt 4o 0513 Input global Tokens", "x_UsageType": "USE1-MP:USE1_InputTokenCount-Units",
    }
    _write(layout, ",".join(header) + "\n" + _record(header, _row("r1", **values)) + _record(header, _row("r2")))
    stage_focus(layout)
    staged = scan_staged_focus(layout).sort("x_RequestId").collect()
    assert staged.select(*values, "Tags").row(0, named=True) == {**values, "Tags": TAGS}
    assert staged.select("x_SkuMeterName", "x_UsageType").row(1) == (None, None)  # absent: null
