"""Numbers as an analyst reads them in a terminal (`unitledger query`, `demo`, `compare`): money
rounded (cents from 1 up, 4 places below 1, half up), unbilled rows named, small samples flagged,
and a short legend saying so. Display only: the warehouse and `--format csv|json|parquet` keep
every digit."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

import polars as pl

from unitledger.model.features import SAMPLE_OK_MIN_LABELED

UNBILLED = "(unbilled)"
SMALL_SAMPLE = f"n<{SAMPLE_OK_MIN_LABELED}"
# Float columns holding money (ratios of money: cost per success, TCO, intervals of them); shares,
# rates and coverage are not money.
_MONEY_FLOAT = re.compile(r"cost|tco|savings|premium|contribution|ci95")
_NOT_MONEY = re.compile(r"(_share|_rate|rate_|coverage|_sq)($|_)")


def money(value: Decimal | float | None) -> str:
    """An amount rounded for reading: 1,234.57 from 1 up, 0.0123 below (exact decimals round half
    up; a float is rounded from its shortest repr, as it prints)."""
    if value is None:
        return ""
    exact = value if isinstance(value, Decimal) else Decimal(repr(float(value)))
    if not exact.is_finite():
        return str(exact)
    places = Decimal("0.01") if abs(exact) >= 1 else Decimal("0.0001")
    return f"{exact.quantize(places, rounding=ROUND_HALF_UP):,}"


def is_money(name: str, dtype: pl.DataType) -> bool:
    if isinstance(dtype, pl.Decimal):
        return True
    return dtype.is_float() and bool(_MONEY_FLOAT.search(name)) and not _NOT_MONEY.search(name)


def readable(frame: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    """`frame` for printing, and the legend lines that explain it: money columns as rounded text,
    other floats to 4 places, a null billing_currency shown as "(unbilled)" (its money blank),
    and a `sample` column flagging rows with fewer than 100 labeled intents."""
    legend = []
    shown = frame
    money_columns = [name for name, dtype in frame.schema.items() if is_money(name, dtype)]
    if money_columns:
        texts = shown.select(pl.col(c).map_elements(money, return_dtype=pl.String, skip_nulls=False) for c in money_columns)
        # Right-aligned like numbers: the decimal points line up.
        shown = shown.with_columns(texts[c].str.pad_start(max(texts[c].str.len_chars().max() or 0, 1)) for c in money_columns)
        legend.append("Money is rounded for reading (cents; 4 places under 1): `--format csv|json|parquet` writes every digit.")
    floats = [name for name, dtype in frame.schema.items() if dtype.is_float() and name not in money_columns]
    if floats:
        shown = shown.with_columns(pl.col(c).round(4) for c in floats)
    if "billing_currency" in frame.columns and frame["billing_currency"].is_null().any():
        shown = shown.with_columns(pl.col("billing_currency").fill_null(UNBILLED))
        legend.append(
            f"billing_currency {UNBILLED}: intents none of whose calls were billed (billing missing or not arrived "
            "yet) nor estimated (no gateway cost, no list price for their model): their money is unknown, shown "
            "blank, not zero. They still count in intents and rates, never in a currency's cost."
        )
    estimated = [c for c in ("gateway_reported_token_cost", "list_estimate_token_cost") if c in frame.columns]
    if any(frame[c].fill_null(0).ne(0).any() for c in estimated):
        legend.append(
            "token_cost includes estimates for calls no invoice billed: gateway_reported_token_cost (what a gateway "
            "reported) and list_estimate_token_cost (list prices from [telemetry]) say how much; the rest is invoiced."
        )
    small = None
    if "labeled_intents" in frame.columns:
        small = pl.col("labeled_intents") < SAMPLE_OK_MIN_LABELED
    elif "sample_ok" in frame.columns:
        small = ~pl.col("sample_ok")
    if small is not None and frame.height:
        flags = frame.select(small.fill_null(True)).to_series()
        if flags.any():
            shown = shown.with_columns(sample=pl.when(flags).then(pl.lit(SMALL_SAMPLE)).otherwise(pl.lit("")))
            legend.append(
                f"sample {SMALL_SAMPLE}: fewer than {SAMPLE_OK_MIN_LABELED} labeled intents: read its ratios as a hint, "
                "not a finding (the 95% interval is wide)."
            )
    return shown, legend


def print_readable(frame: pl.DataFrame, footer: str | None = None) -> None:
    """`frame` as a table for reading, then `footer` and the legend."""
    shown, legend = readable(frame)
    with pl.Config(
        tbl_rows=-1, tbl_cols=-1, tbl_width_chars=250, fmt_str_lengths=60, tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True, tbl_cell_numeric_alignment="RIGHT",
    ):
        print(shown)
    if footer:
        print(footer)
    for line in legend:
        print(f"  {line}")


def _percent(value: float | None, places: int = 1) -> str:
    return "" if value is None else f"{100 * value:.{places}f} %"


def _interval(low: float | None, high: float | None, scale: float = 1.0, places: int = 1) -> str:
    if low is None or high is None:
        return ""
    return f"[{scale * low:.{places}f}, {scale * high:.{places}f}]"


def format_break_even(row: dict, label: str) -> list[str]:
    """One break-even row (schemas.BreakEven) as lines an analyst reads: each model's figures side
    by side, then the pair's; money rounded in the row's currency."""
    a, b = row["model_a"] or "(no version)", row["model_b"] or "(no version)"
    currency = row["billing_currency"]

    def flagged(n: int) -> str:
        return f"{n:,}" + (f" ({SMALL_SAMPLE})" if n < SAMPLE_OK_MIN_LABELED else "")

    def cps(side: str) -> str:
        value = row[f"cost_per_success_{side}"]
        if value is None:
            return "no success"
        low, high = row[f"cost_per_success_{side}_ci95_low"], row[f"cost_per_success_{side}_ci95_high"]
        return f"{money(value)} [{money(low)}, {money(high)}]" if low is not None else money(value)

    pairs = [
        ("labeled intents", flagged(row["labeled_intents_a"]), flagged(row["labeled_intents_b"])),
        ("token cost per intent C", money(row["token_cost_per_intent_a"]), money(row["token_cost_per_intent_b"])),
        ("failure rate p [95% CI, %]",
         f"{_percent(row['failure_rate_a'])} {_interval(row['failure_rate_a_ci95_low'], row['failure_rate_a_ci95_high'], 100)}",
         f"{_percent(row['failure_rate_b'])} {_interval(row['failure_rate_b_ci95_low'], row['failure_rate_b_ci95_high'], 100)}"),
        ("TCO per intent = C + p·L", money(row["tco_a"]), money(row["tco_b"])),
        ("cost per success [95% CI]", cps("a"), cps("b")),
    ]
    delta_c, delta_p = row["delta_token_cost"], row["delta_failure_rate"]
    gap, labor_star = row["break_even_failure_gap"], row["break_even_labor_cost"]
    if delta_c is not None and delta_c <= 0:  # a what-if repricing can make b's tokens the cheaper ones
        gap_text = "none: b's tokens cost no more than a's, so b pays off whenever it fails less often (Δp > 0)"
        labor_text = gap_text if delta_p is not None and delta_p > 0 else "b fails as often or more: compare C alone"
    else:
        gap_text = "" if gap is None else f"{100 * gap:.2f} pp (b pays off when Δp is larger)"
        labor_text = "never: b fails as often or more" if labor_star is None else f"{money(labor_star)} (b pays off when L is larger)"
    single = [
        ("L: labor cost per failure", money(row["labor_cost_per_failure"]) or "unknown"),
        ("ΔC = C_b − C_a", money(delta_c)),
        ("Δp = p_a − p_b [95% CI, pp]",
         "" if delta_p is None else f"{100 * delta_p:.2f} pp {_interval(row['delta_failure_rate_ci95_low'], row['delta_failure_rate_ci95_high'], 100, 2)}"),
        ("break-even Δp* = ΔC / L", gap_text),
        ("break-even L* = ΔC / Δp", labor_text),
        ("TCO b − a [95% CI]",
         "" if row["tco_difference"] is None else f"{money(row['tco_difference'])} [{money(row['tco_difference_ci95_low'])}, {money(row['tco_difference_ci95_high'])}]"),
        ("verdict", row["verdict"]),
    ]
    width = max(len(name) for name, *_ in pairs + single)
    column = max(len(f"a: {a}"), *(len(x) for _, x, _ in pairs))
    lines = [label, f"  {row['feature_tag']} · {currency} · {b} (b) vs {a} (a)"]
    lines.append(f"  {'':<{width}}  {'a: ' + a:<{column}}  b: {b}")
    lines += [f"  {name:<{width}}  {x:<{column}}  {y}" for name, x, y in pairs]
    lines += [f"  {name:<{width}}  {value}" for name, value in single]
    return lines
