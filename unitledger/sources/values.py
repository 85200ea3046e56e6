"""Text → exact values: decimals, money and UTC timestamps parsed from the landing files' text,
and the machinery that says what is wrong with a row (`Problem`s, described in its quarantine record).

Every function here takes and returns Polars expressions or LazyFrames: no I/O, no Dagster.
A row that fails any check is not dropped: each format's quarantine transform (sources.focus,
sources.events) turns it into a quarantine record naming the columns and the reasons.
"""

from __future__ import annotations

from typing import NamedTuple

import polars as pl

from schemas.types import MONEY, TIMESTAMP


_EXTRA_SCALE = 24  # parse again at a finer scale to detect digits that MONEY would cut off

# Timestamp shapes Polars parses on its fixed-width fast path, by byte length: FOCUS exports
# ("...T10:00:00Z"), event timestamps with microseconds, and naive "YYYY-MM-DD HH:MM:SS".
_FIXED_WIDTH_TIMESTAMPS = {20: "%Y-%m-%dT%H:%M:%SZ", 27: "%Y-%m-%dT%H:%M:%S.%6fZ", 19: "%Y-%m-%d %H:%M:%S"}


class Problem(NamedTuple):
    """One way a row can be wrong. `condition` (a Boolean, never null) is evaluated on every row;
    `message` only on the rows that failed, when their quarantine record is written."""

    condition: pl.Expr
    message: pl.Expr


def parse_decimal(text: pl.Expr) -> pl.Expr:
    """Exact decimal from text (plain or E-notation), never through float; null if it is not a number."""
    return text.str.strip_chars().str.to_decimal(scale=MONEY.scale)


# Amounts must stay below this magnitude. MONEY keeps 20 integer digits (< 10^20): below 10^15 a
# row's amount leaves 5 digits of headroom, so any 100,000 rows of the largest allowed amounts
# still sum exactly, and real sums are far below that (10^15 is a quadrillion in any currency,
# dong and rupiah included: no line of a bill comes near it). A larger amount is an error in the
# export; summed, it would overflow the day's or the month's totals.
MONEY_LIMIT = 10**15

_MONEY_PARTS = pl.Struct({"value": MONEY, "too_precise": pl.Boolean, "out_of_range": pl.Boolean})


def parse_money(text: pl.Expr) -> pl.Expr:
    """Struct of `value` (= parse_decimal; null when out of range), `too_precise` (digits MONEY's
    scale would cut off) and `out_of_range` (|amount| >= MONEY_LIMIT, however many digits)."""
    return text.map_batches(_money_batch, return_dtype=_MONEY_PARTS, is_elementwise=True)


def _money_batch(texts: pl.Series) -> pl.Series:
    # One parse at the finer scale gives both parts when every value fits it exactly, unpadded
    # (the common case); any other batch takes the general route: two parses of the stripped text.
    finer_type = pl.Decimal(38, _EXTRA_SCALE)
    frame = texts.cast(pl.String).to_frame("text").with_columns(finer=pl.col("text").str.to_decimal(scale=_EXTRA_SCALE))
    frame = frame.with_columns(value=pl.col("finer").cast(MONEY, strict=False))
    exact = frame["finer"].null_count() == frame["text"].null_count() and not (frame["value"].cast(finer_type, strict=False) != frame["finer"]).any()
    if not exact:
        stripped = pl.col("text").str.strip_chars()
        frame = frame.with_columns(finer=stripped.str.to_decimal(scale=_EXTRA_SCALE), value=stripped.str.to_decimal(scale=MONEY.scale))
    out_of_range = (pl.col("value").abs() >= pl.lit(MONEY_LIMIT, MONEY)).fill_null(False)
    if frame["value"].null_count() > frame["text"].null_count():
        # Text that is no MONEY may be a number too large for it (>= 10^20): its magnitude, read as
        # a float (never its value), says so.
        magnitude = pl.col("text").str.strip_chars().cast(pl.Float64, strict=False).abs()
        out_of_range = out_of_range | (pl.col("value").is_null() & (magnitude >= MONEY_LIMIT)).fill_null(False)
    # strict=False: a value with more than 14 integer digits does not fit the finer type (nor `finer`).
    too_precise = pl.col("text").is_not_null() & pl.col("finer").is_not_null() & (pl.col("finer") != pl.col("value").cast(finer_type, strict=False))
    if exact:  # every value fit MONEY's scale: none too precise (without comparing them again)
        too_precise = pl.lit(False)
    frame = frame.with_columns(out_of_range=out_of_range, too_precise=too_precise)
    value = pl.when(~pl.col("out_of_range")).then(pl.col("value"))
    return frame.select(pl.struct(value.alias("value"), "too_precise", "out_of_range").alias(texts.name)).to_series()


def decimal_problems(text: pl.Expr, money: pl.Expr) -> list[Problem]:
    """Problems of a money cell `text` whose `parse_money` is `money` (passed in: parsed once)."""
    out_of_range = money.struct.field("out_of_range")
    unparsed = text.is_not_null() & money.struct.field("value").is_null() & ~out_of_range
    return [
        problem(unparsed, pl.lit("is not a decimal number: ") + text.str.slice(0, 40)),
        problem(
            out_of_range,
            pl.lit("is out of range: an amount must be below 10^15 in magnitude for sums to stay exact: ") + text.str.slice(0, 40),
        ),
        problem(~unparsed & money.struct.field("too_precise"), pl.lit(f"has more than {MONEY.scale} decimal places: ") + text.str.slice(0, 40)),
    ]


def decimal_problem(text: pl.Expr) -> pl.Expr:
    """Message for a non-null cell that is not an exact decimal at MONEY's scale, else null."""
    first, *rest = decimal_problems(text, parse_money(text))
    message = pl.when(first.condition).then(first.message)
    for p in rest:
        message = message.when(p.condition).then(p.message)
    return message


def parse_timestamp(text: pl.Expr) -> pl.Expr:
    """UTC timestamp from ISO 8601 / RFC 3339 text, also `YYYY-MM-DD HH:MM:SS` and bare dates.

    Naive values are taken as UTC (FOCUS says date/times are UTC); offsets are converted.
    """
    return text.map_batches(_parse_timestamps, return_dtype=TIMESTAMP, is_elementwise=True)


def _parse_timestamps(texts: pl.Series) -> pl.Series:
    # The general route (three formats and a regex) costs several times the fixed-width one, and
    # Polars evaluates every branch of an expression on every row: so a batch takes it only when
    # some value did not parse on the fast route.
    frame = texts.cast(pl.String).to_frame("text").with_columns(fast=_fixed_width_timestamp(pl.col("text")))
    if frame["fast"].null_count() > frame["text"].null_count():
        frame = frame.with_columns(fast=pl.coalesce("fast", _general_timestamp(pl.col("text"))))
    return frame["fast"].alias(texts.name)


def _fixed_width_timestamp(text: pl.Expr) -> pl.Expr:
    width = text.str.len_bytes()
    shapes = [
        pl.when(width == length).then(text).str.to_datetime(shape, strict=False, time_unit="us")
        for length, shape in _FIXED_WIDTH_TIMESTAMPS.items()
    ]
    return pl.coalesce(shapes).dt.replace_time_zone("UTC")


def _general_timestamp(text: pl.Expr) -> pl.Expr:
    norm = text.str.strip_chars().str.replace("T", " ", literal=True)
    aware = norm.str.replace(r"[Zz]$", "+00:00").str.to_datetime(
        "%Y-%m-%d %H:%M:%S%.f%:z", strict=False, time_unit="us", time_zone="UTC"
    )
    naive = norm.str.to_datetime("%Y-%m-%d %H:%M:%S%.f", strict=False, time_unit="us").dt.replace_time_zone("UTC")
    date_only = norm.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    return pl.coalesce(aware, naive, date_only)


def parsed_column(name: str) -> str:
    """Hidden column holding `name` parsed: each cell is parsed once, for the checks and the output."""
    return f"_parsed_{name}"


def problem(condition: pl.Expr, message: pl.Expr | str) -> Problem:
    return Problem(condition.fill_null(False), message if isinstance(message, pl.Expr) else pl.lit(message))


def only_for(rows: pl.Expr, problems: list[Problem]) -> list[Problem]:
    """`problems` that apply only to `rows` (e.g. llm_call events)."""
    return [Problem((rows & p.condition).fill_null(False), p.message) for p in problems]


def required(name: str) -> Problem:
    return problem(pl.col(name).is_null(), "is required but empty")


def one_of(name: str, allowed: tuple[str, ...] | frozenset[str], what: str) -> Problem:
    return problem(
        pl.col(name).is_not_null() & ~pl.col(name).is_in(sorted(allowed)),
        pl.lit(f"is not {what}: ") + pl.col(name).str.slice(0, 40),
    )


def ts_problem(name: str) -> Problem:
    return problem(
        pl.col(name).is_not_null() & pl.col(parsed_column(name)).is_null(),
        pl.lit("is not a timestamp: ") + pl.col(name).str.slice(0, 40),
    )


def with_problems(parsed: pl.LazyFrame, problems: dict[str, list[Problem]]) -> pl.LazyFrame:
    """Add `_bad`: whether the row has any problem (conditions only: see `describe_problems`)."""
    return parsed.with_columns(_bad=pl.any_horizontal([p.condition for ps in problems.values() for p in ps]))


def describe_problems(bad: pl.LazyFrame, problems: dict[str, list[Problem]]) -> pl.LazyFrame:
    """Add `_columns` and `_reason` describing every problem of the (bad) rows."""
    flat = [(col, p) for col, ps in problems.items() for p in ps]
    messages = [pl.when(p.condition).then(pl.lit(f"{col} ") + p.message) for col, p in flat]
    columns = [pl.when(p.condition).then(pl.lit(col)) for col, p in flat]
    return bad.with_columns(
        _reason=pl.concat_list(messages).list.drop_nulls().list.join("; "),
        _columns=pl.concat_list(columns).list.drop_nulls().list.unique(maintain_order=True).list.join(","),
    )
