"""Month-end reconciliation at scale: time and peak memory of one billing period's reconciliation
(steps.reconciliation.build_reconciliation, the parts one after the other in this process) on a
staged data root.

    unitledger generate --data-dir D --days 30 --requests-per-day 1000000 --focus-format parquet --events-format parquet
    python -m unitledger.tools.reconciliation_bench --data-dir D --stage      # staging, in its own process
    python -m unitledger.tools.reconciliation_bench --data-dir D --month 2026-03 [--bucket-rows N]

Prints the seconds per stage, the buckets, the month's FOCUS rows and the peak resident memory of
this process (getrusage: the largest it ever was), with the CPU model and the commit. Numbers for
docs/performance.md; never asserted in tests.
"""

from __future__ import annotations

import argparse
import platform
import resource
import subprocess
import time
from datetime import date
from pathlib import Path

import polars as pl

from unitledger.config import load_settings
from unitledger.layout import Layout
from unitledger.sources.focus import scan_staged_focus
from unitledger.steps import reconciliation
from unitledger.steps.staging import stage_billing, stage_events


def _cpu_model() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown CPU"


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
    return done.stdout.strip() or "unknown"


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # kilobytes on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--stage", action="store_true", help="stage the landing files and stop (run it in its own process)")
    parser.add_argument("--month", help="billing period YYYY-MM to reconcile")
    parser.add_argument("--bucket-rows", type=int, default=None, help=f"FOCUS rows with a request id per bucket (default {reconciliation.BUCKET_ROWS:,})")
    parser.add_argument("--today", default="2026-12-31", help="staging's today (billing periods up to it are staged)")
    args = parser.parse_args(argv)
    layout = Layout(args.data_dir.resolve()).require_landing()
    settings = load_settings(args.config)
    print(f"CPU: {_cpu_model()}; commit {_commit()}")
    if args.stage:
        began = time.perf_counter()
        assert stage_billing(layout, settings, date.fromisoformat(args.today)).passed
        assert stage_events(layout).passed
        print(f"staged in {time.perf_counter() - began:.1f} s, peak {_peak_gib():.2f} GiB")
        return 0
    if args.bucket_rows:
        reconciliation.BUCKET_ROWS = args.bucket_rows
    month = date.fromisoformat(f"{args.month}-01")
    rows = scan_staged_focus(layout).filter(pl.col("BillingPeriodStart").dt.strftime("%Y-%m") == args.month)
    total, with_id, days = rows.select(pl.len(), pl.col("x_RequestId").is_not_null().sum(), pl.col("charge_date").n_unique()).collect().row(0)
    print(f"{args.month}: {total:,} FOCUS rows ({with_id:,} with a request id), {days} charge dates; "
          f"{reconciliation.bucket_count(with_id)} bucket(s) of {reconciliation.BUCKET_ROWS:,} rows")
    began = time.perf_counter()
    result = reconciliation.build_reconciliation(layout, settings, month, month)
    seconds = time.perf_counter() - began
    stages = ", ".join(f"{stage} {s:.1f} s" for stage, s in result.timings.items())
    print(f"reconciled in {seconds:.1f} s ({stages}); passed {result.passed}; peak {_peak_gib():.2f} GiB")
    return 0 if result.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
