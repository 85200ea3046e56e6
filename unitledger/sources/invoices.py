"""Accounts-payable invoice totals (landing/invoices/*.csv), for the reconciliation to compare FOCUS with."""

from __future__ import annotations

import polars as pl

from schemas.types import MONEY
from unitledger.layout import Layout
from unitledger.sources.files import (
    InputFileError,
    check_readable,
    first_bad_csv_line,
    first_line,
    list_landing,
    scan_csv_text,
)
from unitledger.sources.values import decimal_problem, parse_decimal


INVOICE_COLUMNS = ("invoice_id", "billing_account_id", "billing_period", "invoice_total", "currency")


def read_invoices(layout: Layout) -> pl.DataFrame:
    """Accounts-payable invoice totals from landing/invoices/*.csv: columns INVOICE_COLUMNS
    (billing_period YYYY-MM, invoice_total an exact decimal, currency ISO 4217), one line per
    invoice. The files are small and read whole; a bad line fails the run naming file, line, column."""
    from schemas.monthly import BILLING_PERIOD_PATTERN
    from schemas.types import ISO_4217

    frames = []
    for f in list_landing(layout.landing_invoices, (".csv",)):
        check_readable(f)
        text = scan_csv_text(f, INVOICE_COLUMNS)
        try:
            raw = text.collect()
        except Exception as exc:
            raise (first_bad_csv_line(f) or InputFileError(f"{f.relpath}: cannot be read ({first_line(exc)})")) from exc
        missing = [c for c in INVOICE_COLUMNS if c not in raw.columns]
        if missing:
            raise InputFileError(f"{f.relpath}: line 1: missing invoice column(s) {', '.join(missing)}")
        problems = [pl.when(pl.col(c).is_null()).then(pl.lit(f"{c} is empty")) for c in INVOICE_COLUMNS] + [
            pl.when(~pl.col("billing_period").str.contains(BILLING_PERIOD_PATTERN)).then(pl.lit("billing_period is not YYYY-MM: ") + pl.col("billing_period").str.slice(0, 40)),
            pl.lit("invoice_total ") + decimal_problem(pl.col("invoice_total")),
            pl.when(~pl.col("currency").is_in(sorted(ISO_4217))).then(pl.lit("currency is not an ISO 4217 code: ") + pl.col("currency").str.slice(0, 40)),
        ]
        checked = raw.rename({"source_line": "line"}).with_columns(problem=pl.coalesce(problems))
        bad = checked.filter(pl.col("problem").is_not_null())
        if not bad.is_empty():
            raise InputFileError(f"{f.relpath}: line {bad['line'][0]}: {bad['problem'][0]}")
        frames.append(checked.with_columns(place=pl.format("{}: line {}", pl.lit(f.relpath), pl.col("line"))))
    schema = {"billing_period": pl.String, "invoice_id": pl.String, "billing_account_id": pl.String, "billing_currency": pl.String, "invoice_total": MONEY}
    if not frames:
        return pl.DataFrame(schema=schema)
    invoices = pl.concat(frames)
    repeated = invoices.filter(pl.col("invoice_id").is_duplicated()).sort("invoice_id", "place")
    if not repeated.is_empty():
        first = repeated.filter(pl.col("invoice_id") == repeated["invoice_id"][0])
        raise InputFileError(f"invoice {first['invoice_id'][0]} is listed more than once: {', '.join(first['place'])}")
    return invoices.select(
        "billing_period", "invoice_id", "billing_account_id", billing_currency=pl.col("currency"),
        invoice_total=parse_decimal(pl.col("invoice_total")),
    )
