"""`unitledger` command line. `materialize` runs the Dagster assets in-process: the same code path
as the nightly schedule and the UI, not a second implementation."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import date
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
    from unitledger.tools.generate import generate

    layout = _layout(args, require_landing=False)
    summary = generate(
        layout.data_dir,
        start=args.start,
        days=args.days,
        requests_per_day=args.requests_per_day,
        seed=args.seed,
        focus_format=args.focus_format,
        events_format=args.events_format,
        telemetry_format=args.telemetry_format,
        list_prices=load_settings(args.config).telemetry.list_price_table() if args.telemetry_format == "litellm" else None,
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
    shown = frame.select(
        "feature_tag",
        "model_version",
        pl.col("billing_currency").alias("cur"),
        pl.col("labeled_intents").alias("labeled"),
        pl.col("success_rate").round(3),
        pl.col("token_cost_per_success").round(4).alias("token/success"),
        pl.col("cost_per_success").round(4).alias("cost/success"),
        pl.format("[{}, {}]", pl.col("ci95_low").round(3), pl.col("ci95_high").round(3)).alias("95% CI"),
        pl.col("label_coverage").round(3).alias("coverage"),
    )
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        print(shown)


def cmd_demo(args: argparse.Namespace) -> int:
    args.days = args.days or 31
    cmd_generate(args)
    layout = _layout(args)
    end = date.fromordinal(args.start.toordinal() + args.days - 1)
    if not materialize(layout, args.config, args.start, end):
        return 1
    print(f"\nCost per success by feature and model, {args.start}..{end} (labor cost included; currency never mixed):")
    print_feature_table(feature_cost_per_success(layout, args.start, end))
    print(f"\nQuery it yourself: duckdb {layout.duckdb_path} \"select * from cost_per_success\"")
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
    from unitledger.model.reconciliation import money_text
    from unitledger.warehouse.manifest import scan_table

    frame = scan_table(_layout(args), "reconciliation", [args.month]).collect()
    if frame.is_empty():
        print(f"{args.month} is not reconciled yet: run `unitledger materialize` for its days", file=sys.stderr)
        return 1
    shown = frame.sort("billing_account_id", "invoice_id", "service_provider_name", nulls_last=True).select(
        pl.col("billing_account_id").alias("account"),
        pl.col("invoice_id").alias("invoice"),
        pl.col("service_provider_name").alias("provider"),
        pl.col("billing_currency").alias("cur"),
        *[money_text(pl.col(c)).alias(c.removesuffix("_cost").removesuffix("_billing")) for c in
          ("billed_total", "attributed_cost", "unmatched_billing_cost", "conflicting_cost", "unattributable_cost", "quarantined_cost", "delta", "invoice_delta")],
        pl.col("telemetry_only_requests").alias("telemetry_only"),
        pl.col("coverage").round(3),
        "status",
        pl.col("status_reason").alias("reason"),
    )
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=250, fmt_str_lengths=200, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
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
