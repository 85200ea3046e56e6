"""`unitledger` command line. `materialize` runs the Dagster assets in-process: the same code path
as the nightly schedule and the UI, not a second implementation."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path

import polars as pl

from unitledger.config import ConfigError, load_settings
from unitledger.layout import DATA_DIR_ENV, DataRootError, Layout, default_data_dir


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a YYYY-MM-DD date") from exc


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help=f"data root (default: ${DATA_DIR_ENV} or ./data)")
    parser.add_argument("--config", type=Path, help="settings file (default: $UNITLEDGER_CONFIG or ./unitledger.toml)")


def _layout(args: argparse.Namespace, require_landing: bool = True) -> Layout:
    """The data root of --data-dir (or the default); it must have a landing folder, unless the
    command creates it (generate)."""
    layout = Layout(args.data_dir.resolve() if args.data_dir else default_data_dir())
    return layout.require_landing() if require_landing else layout


def cmd_generate(args: argparse.Namespace) -> int:
    from unitledger.progress import Progress
    from unitledger.tools.generate import generate

    layout = _layout(args, require_landing=False)
    with Progress(args.days, "generate") as progress:
        progress.doing(f"day 1 of {args.days}")
        summary = generate(
            layout.data_dir,
            start=args.start,
            days=args.days,
            requests_per_day=args.requests_per_day,
            seed=args.seed,
            focus_format=args.focus_format,
            events_format=args.events_format,
            telemetry_format=args.telemetry_format,
            billing=args.billing,
            list_prices=load_settings(args.config).telemetry.list_price_table() if args.telemetry_format == "litellm" else None,
            on_day=lambda day, requests: progress.step(f"generated {day} ({requests:,} requests)"),
        )
    print(
        f"Generated {summary.requests:,} requests in {summary.sessions:,} sessions: "
        f"{summary.focus_rows:,} FOCUS rows in {len(summary.focus_files)} file(s), "
        f"{summary.events:,} events in {len(summary.event_files)} file(s) under {layout.data_dir / 'landing'}"
    )
    return 0


def materialize(layout: Layout, config: Path | None, start: date, end: date) -> bool:
    """Backfill the days [start, end] in month-sized runs, then their monthly rollups and the
    DuckDB views (unitledger/steps/backfill.py); True on success."""
    from unitledger.steps import backfill

    return backfill.run(layout, load_settings(config), start, end)


def cmd_materialize(args: argparse.Namespace) -> int:
    ok = materialize(_layout(args), args.config, args.start, args.end)
    return 0 if ok else 1


def feature_cost_per_success(layout: Layout, start: date, end: date) -> pl.DataFrame:
    """cost_per_success over [start, end] per feature, model version and currency, re-aggregated
    from the daily rows' sums (never by averaging ratios)."""
    from unitledger.model.features import reaggregate_cost_per_success
    from unitledger.warehouse.manifest import scan_table

    days = [date.fromordinal(d).isoformat() for d in range(start.toordinal(), end.toordinal() + 1)]
    daily = scan_table(layout, "cost_per_success", days)
    return (
        reaggregate_cost_per_success(daily, ["feature_tag", "model_version", "billing_currency"])
        .sort("feature_tag", "model_version", "billing_currency", nulls_last=True)
        .collect()
    )


def print_feature_table(frame: pl.DataFrame) -> None:
    """Cost per success by feature and model for reading: money rounded, unbilled rows named, small
    samples flagged, a legend (unitledger.warehouse.display)."""
    from unitledger.warehouse.display import print_readable

    print_readable(
        frame.select(
            "feature_tag",
            "model_version",
            "billing_currency",
            "intents",
            "labeled_intents",
            "success_rate",
            "token_cost_per_success",
            "cost_per_success",
            "ci95_low",
            "ci95_high",
            "label_coverage",
        )
    )


def cmd_demo(args: argparse.Namespace) -> int:
    args.days = args.days or 31
    cmd_generate(args)
    layout = _layout(args)
    end = date.fromordinal(args.start.toordinal() + args.days - 1)
    if not materialize(layout, args.config, args.start, end):
        return 1
    print(f"\nCost per success by feature and model, {args.start}..{end}: token cost plus the labor cost L of each failure,")
    print("divided by successes, over labeled intents; ci95 is its 95% interval; currencies are never added together.")
    print_feature_table(feature_cost_per_success(layout, args.start, end))
    data = [] if args.data_dir is None else ["--data-dir", str(args.data_dir)]
    unitledger = sys.argv[0] if Path(sys.argv[0]).name == "unitledger" else "unitledger"
    print(f"\nThe report (charts, break-even, where the money goes): {layout.report_path}")
    print("Next: " + "\n      ".join([
        " ".join([unitledger, "compare", "--feature", "support_chat", *data]) + "   # should support_chat pay for the frontier model?",
        " ".join([unitledger, "query", *data, '"select * from money_breakdown"']) + "   # SQL on the warehouse, read-only",
        " ".join([unitledger, "tables"]) + "   # every table and column, with its meaning",
    ]))
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from unitledger.warehouse import query

    if args.format == "parquet" and not args.output:
        raise SystemExit("--format parquet needs --output FILE")
    try:
        frame = query.run_query(_layout(args), args.sql)
    except query.QueryError as exc:
        print(f"query error: {exc}", file=sys.stderr)
        return 1
    if args.format == "table":
        query.print_table(frame)
    else:
        query.write_result(frame, args.format, args.output or sys.stdout)
    return 0


def _window_days(text: str) -> int:
    """--window: a number of days, `30d` or `30`."""
    found = re.fullmatch(r"(\d+)d?", text.strip())
    if not found or not 1 <= int(found.group(1)) <= 3660:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days such as 30d (1 to 3660)")
    return int(found.group(1))


def cmd_report(args: argparse.Namespace) -> int:
    from unitledger.steps.decisions import NothingBuiltError
    from unitledger.steps.report import build_report

    try:
        written = build_report(_layout(args), load_settings(args.config), args.window, args.output)
    except NothingBuiltError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 1
    timings = ", ".join(f"{stage.replace('_', ' ')} {seconds:.2f} s" for stage, seconds in written.timings.items())
    print(f"Wrote {written.path} ({written.size / 2**20:.1f} MiB, self-contained: open it in a browser, offline too)")
    print(f"Window {written.window}; {timings}")
    return 0


def _labor_arg(text: str) -> tuple[str | None, Decimal]:
    """--labor: `100` (every currency) or `USD=100`."""
    currency, _, amount = text.rpartition("=")
    try:
        value = Decimal(amount)
    except InvalidOperation as exc:
        raise argparse.ArgumentTypeError(f"--labor {text!r}: give an amount such as 75 or USD=75") from exc
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"--labor {text!r}: the amount must be 0 or more")
    return (currency.upper() or None), value


def _price_arg(text: str) -> tuple[str, Decimal]:
    """--price: `model_version=factor`."""
    model, _, factor = text.rpartition("=")
    try:
        value = Decimal(factor)
    except InvalidOperation as exc:
        raise argparse.ArgumentTypeError(f"--price {text!r}: give model_version=factor, such as claude-opus-2026-02=0.8") from exc
    if not model or not value.is_finite() or value <= 0:
        raise argparse.ArgumentTypeError(f"--price {text!r}: give model_version=factor with a factor above 0")
    return model, value


def command_line_scenario(feature: str, labor: list[tuple[str | None, Decimal]], prices: list[tuple[str, Decimal]], currencies: list[str]):
    """The what-if of `compare --labor/--price`, or None without either. A --labor without a
    currency applies to each currency the feature is billed in."""
    from schemas.types import MONEY
    from unitledger.model.decisions import Scenario

    if not labor and not prices:
        return None
    amounts = {currency: amount for currency, amount in labor if currency is None}
    rows = [(feature, c, amounts[None]) for c in currencies] if None in amounts else []
    rows += [(feature, currency, amount) for currency, amount in labor if currency is not None]
    table = None
    if rows:
        last = {(f, c): a for f, c, a in rows}  # a later --labor for a currency wins
        table = pl.DataFrame(
            [(f, c, a) for (f, c), a in last.items()],
            schema={"feature_tag": pl.String, "billing_currency": pl.String, "labor_cost_per_failure": MONEY},
            orient="row",
        ).lazy()
    return Scenario("what-if (command line)", table, dict(prices))


def cmd_compare(args: argparse.Namespace) -> int:
    from unitledger.model.decisions import ACTUAL, Scenario
    from unitledger.steps.decisions import NothingBuiltError, UnknownFeatureError, compare_models, latest_window
    from unitledger.warehouse.display import format_break_even
    from unitledger.warehouse.manifest import read_manifest

    layout = _layout(args)
    settings = load_settings(args.config)
    try:
        window = latest_window(read_manifest(layout), args.window or settings.decisions.window_days)
        currencies = []
        if args.labor:
            _, actual = compare_models(layout, settings, args.feature, args.window)
            currencies = sorted(set(actual["billing_currency"]))
        scenario = command_line_scenario(args.feature, args.labor, args.price, currencies)
        if scenario is None and not settings.decisions.what_if.is_empty:
            scenario = Scenario.from_config(settings.decisions.what_if, "what-if (unitledger.toml)")
        window, rows = compare_models(layout, settings, args.feature, args.window, scenario)
    except (NothingBuiltError, UnknownFeatureError) as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 1
    print(f"Break-even for {args.feature}, {window}: C is token cost per labeled intent, p the failure rate, L the labor")
    print("cost of one failure (from the settings), TCO = C + p·L. Model a has the cheaper tokens; b pays off when it fails")
    print("less often than a by more than Δp* = ΔC / L, i.e. when L exceeds L* = ΔC / Δp. Money in the row's currency.")
    if rows.is_empty():
        print(f"\nNo pair to compare: {args.feature} has one model version per currency in {window} (with labeled intents).")
        return 0
    for row in rows.iter_rows(named=True):
        actual = row["scenario"] == ACTUAL
        label = "ACTUAL (billed data, L from the settings)" if actual else (
            f"SCENARIO {row['scenario']}: {row['scenario_description']} (a what-if: the billed data is unchanged)"
        )
        print()
        print("\n".join(format_break_even(row, label)))
    return 0


def cmd_tables(args: argparse.Namespace) -> int:
    from unitledger.warehouse import dictionary, query

    if args.markdown:
        print(dictionary.render_markdown(), end="")
        return 0
    try:
        print(query.describe_tables(args.names), end="")
    except query.QueryError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


def _month(text: str) -> str:
    from schemas.monthly import BILLING_PERIOD_PATTERN

    if not re.match(BILLING_PERIOD_PATTERN, text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a YYYY-MM month")
    return text


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Print the published reconciliation of a billing period; exit 1 when a row's status is fail."""
    from unitledger.model.reconciliation import BILLED_PARTS, money_text
    from unitledger.warehouse.manifest import scan_table

    frame = scan_table(_layout(args), "reconciliation", [args.month]).collect()
    if frame.is_empty():
        print(f"{args.month} is not reconciled yet: run `unitledger materialize` for its days", file=sys.stderr)
        return 1
    # The parts that hold money this month (all of them would not fit a terminal): with delta 0
    # they add up to billed_total.
    parts = [c for c in BILLED_PARTS if (frame[c] != 0).any()]
    shown = frame.sort("billing_account_id", "invoice_id", "service_provider_name", nulls_last=True).select(
        pl.col("billing_account_id").alias("account"),
        pl.col("invoice_id").alias("invoice"),
        pl.col("service_provider_name").alias("provider"),
        pl.col("billing_currency").alias("cur"),
        *[money_text(pl.col(c)).alias(c.removesuffix("_cost").removesuffix("_billing")) for c in
          ("billed_total", *parts, "delta", "invoice_delta")],
        pl.col("telemetry_only_requests").alias("telemetry_only"),
        pl.col("coverage").round(3),
        "status",
        pl.col("status_reason").alias("reason"),
    )
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=330, fmt_str_lengths=200, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        print(shown)
    return 1 if (frame["status"] == "fail").any() else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unitledger", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def generator_args(p: argparse.ArgumentParser, days_default: int | None) -> None:
        p.add_argument("--start", type=_date, default=date(2026, 3, 1), help="first day (default 2026-03-01)")
        p.add_argument("--days", type=int, default=days_default, help="number of days (default 31)")
        p.add_argument("--requests-per-day", type=int, default=2000)
        p.add_argument("--seed", type=int, default=7)
        p.add_argument("--focus-format", choices=["csv", "csv.gz", "parquet"], default="csv")
        p.add_argument("--events-format", choices=["jsonl", "jsonl.gz", "parquet"], default="jsonl.gz")
        p.add_argument(
            "--billing", choices=["request", "aggregated"], default="request",
            help="request: a usage row per request (x_RequestId); aggregated: acct-us-001 billed as providers do "
            "(per hour, model and token type, no request id: allocated by token share), acct-eu-002 per request",
        )
        p.add_argument(
            "--telemetry-format", choices=["events", "otlp", "litellm"], default="events",
            help="calls and outcomes as flat events, as OTLP JSON (landing/otlp/) or as LiteLLM SpendLogs (landing/gateways/litellm/, outcomes as flat events)",
        )

    p = sub.add_parser("generate", help="write a realistic synthetic month into the landing folders")
    _common(p)
    generator_args(p, 31)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("materialize", help="build every table for an inclusive date range, then the DuckDB views")
    _common(p)
    p.add_argument("--start", type=_date, required=True)
    p.add_argument("--end", type=_date, required=True)
    p.set_defaults(func=cmd_materialize)

    p = sub.add_parser("demo", help="generate, materialize, print the per-feature cost-per-success table")
    _common(p)
    generator_args(p, None)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("query", help="run SQL against the warehouse (read-only) and print a table or write a file")
    p.add_argument("--data-dir", type=Path, help=f"data root (default: ${DATA_DIR_ENV} or ./data)")
    p.add_argument("sql", help='e.g. "select * from cost_per_success_monthly"')
    p.add_argument("--format", choices=["table", "csv", "parquet", "json"], default="table")
    p.add_argument("--output", type=Path, help="file to write (default: standard output; parquet needs a file)")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("report", help="write the HTML report (charts and their numbers) for the latest window")
    _common(p)
    p.add_argument("--window", type=_window_days, help="days ending at the latest built day, e.g. 30d (default: [decisions] window_days)")
    p.add_argument("--output", type=Path, help="the HTML file to write (default: <data root>/warehouse/report.html)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="break-even of a feature's model versions, actual and what-if (L, prices)")
    _common(p)
    p.add_argument("--feature", required=True, help="feature_tag, e.g. support_chat")
    p.add_argument("--window", type=_window_days, help="days ending at the latest built day, e.g. 30d (default: [decisions] window_days)")
    p.add_argument("--labor", type=_labor_arg, action="append", default=[], metavar="[CUR=]AMOUNT",
                   help="what-if: L, the labor cost of one failure (every currency of the feature, or CUR=AMOUNT); repeatable")
    p.add_argument("--price", type=_price_arg, action="append", default=[], metavar="MODEL=FACTOR",
                   help="what-if: multiply a model version's token cost by FACTOR (0.8: 20 %% cheaper); repeatable")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("reconcile", help="print the reconciliation of a billing period (exit 1 when a row fails)")
    p.add_argument("--data-dir", type=Path, help=f"data root (default: ${DATA_DIR_ENV} or ./data)")
    p.add_argument("--month", type=_month, required=True, help="billing period, YYYY-MM")
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser("tables", help="list the tables and their columns with what they mean")
    p.add_argument("names", nargs="*", help="only these tables")
    p.add_argument("--markdown", action="store_true", help="print the data dictionary (docs/data-dictionary.md) instead")
    p.set_defaults(func=cmd_tables)

    from unitledger.tools.bench import add_command as add_bench_command

    add_bench_command(sub)  # `unitledger bench`: see docs/performance.md
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except DataRootError as exc:
        print(f"data root error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
