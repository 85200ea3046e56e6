"""`unitledger` command line. `materialize` runs the Dagster assets in-process: the same code path
as the nightly schedule and the UI, not a second implementation."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date
from pathlib import Path

import polars as pl

from unitledger.config import ConfigError, load_settings
from unitledger.layout import DATA_DIR_ENV, Layout, default_data_dir


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a YYYY-MM-DD date") from exc


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help=f"data root (default: ${DATA_DIR_ENV} or ./data)")
    parser.add_argument("--config", type=Path, help="settings file (default: $UNITLEDGER_CONFIG or ./unitledger.toml)")


def _layout(args: argparse.Namespace) -> Layout:
    return Layout(args.data_dir.resolve() if args.data_dir else default_data_dir())


def cmd_generate(args: argparse.Namespace) -> int:
    from unitledger.generate import generate

    layout = _layout(args)
    summary = generate(
        layout.data_dir,
        start=args.start,
        days=args.days,
        requests_per_day=args.requests_per_day,
        seed=args.seed,
        focus_format=args.focus_format,
        events_format=args.events_format,
    )
    print(
        f"Generated {summary.requests:,} requests in {summary.sessions:,} sessions: "
        f"{summary.focus_rows:,} FOCUS rows in {len(summary.focus_files)} file(s), "
        f"{summary.events:,} events in {len(summary.event_files)} file(s) under {layout.data_dir / 'landing'}"
    )
    return 0


def materialize(layout: Layout, config: Path | None, start: date, end: date) -> bool:
    """Run every asset for the days [start, end] in one in-process Dagster run; True on success."""
    import dagster as dg

    from pipelines.definitions import ALL_ASSETS
    from pipelines.resources import Warehouse

    settings = load_settings(config)
    if start > end:
        raise SystemExit(f"--start {start} is after --end {end}")
    if start < settings.start_date:
        raise SystemExit(f"--start {start} is before the first partition {settings.start_date} (pipeline.start_date in {settings.path})")
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        ALL_ASSETS,
        instance=instance,
        resources={"warehouse": Warehouse(data_dir=str(layout.data_dir), config_path=str(settings.path))},
        tags={"dagster/asset_partition_range_start": start.isoformat(), "dagster/asset_partition_range_end": end.isoformat()},
        raise_on_error=False,
    )
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
                error = event.step_failure_data.error
                while error.cause is not None and not error.message.strip():
                    error = error.cause
                user = event.step_failure_data.user_failure_data
                print(f"FAILED {event.step_key}: {user.description if user and user.description else error.message.strip()}", file=sys.stderr)
    return result.success


def cmd_materialize(args: argparse.Namespace) -> int:
    ok = materialize(_layout(args), args.config, args.start, args.end)
    return 0 if ok else 1


def feature_cost_per_success(layout: Layout, start: date, end: date) -> pl.DataFrame:
    """cost_per_success over [start, end] per feature, model version and currency, re-aggregated
    from the daily rows' sums (never by averaging ratios)."""
    from unitledger import transforms
    from unitledger.storage import scan_partitions

    days = [date.fromordinal(d).isoformat() for d in range(start.toordinal(), end.toordinal() + 1)]
    daily = scan_partitions(layout.table("cost_per_success"), "date", days)
    if daily is None:
        return pl.DataFrame()
    return (
        transforms.reaggregate_cost_per_success(daily, ["feature_tag", "model_version", "billing_currency"])
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
    layout = _layout(args)
    args.days = args.days or 31
    cmd_generate(args)
    end = date.fromordinal(args.start.toordinal() + args.days - 1)
    if not materialize(layout, args.config, args.start, end):
        return 1
    print(f"\nCost per success by feature and model, {args.start}..{end} (labor cost included; currency never mixed):")
    print_feature_table(feature_cost_per_success(layout, args.start, end))
    print(f"\nQuery it yourself: duckdb {layout.duckdb_path} \"select * from cost_per_success\"")
    return 0


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
