"""OTLP JSON ingest speed: unitledger's reader against DuckDB's read_json + unnest of the same file.

    python -m unitledger.tools.otlp_bench --requests 1000000 --dir /tmp/otlp-bench --repeats 3

Writes a generated day as OTLP JSON traces (every call a chat span under an invoke_agent span, as
the round-trip tests use it), then times, alternating so that load from elsewhere hits both alike:
- unitledger: sources.otlp.read_otlp sunk to Parquet (what staging does with a landing file);
- DuckDB unnest: read_json with the same explicit nested type, unnested to one row per span, to
  Parquet (the issue's baseline);
- DuckDB extract: the same plus the attribute lookups the reader does (list_filter per key), a
  like-for-like comparison.
Wall and CPU seconds (this process: both run in it) are reported with the CPU model. Numbers for
docs/performance.md; never asserted in tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import time
from datetime import date
from pathlib import Path

import duckdb
import polars as pl

from unitledger.sources import events as flat_events
from unitledger.config import Telemetry
from unitledger.sources import otlp
from unitledger.tools.telemetry_formats import otlp_trace_lines, write_lines
from unitledger.warehouse.views import duckdb_literal_path

_VALUE = "STRUCT(stringValue VARCHAR, intValue VARCHAR, doubleValue VARCHAR, boolValue VARCHAR)"
_ATTRIBUTES = f"STRUCT(key VARCHAR, value {_VALUE})[]"
_SPAN = (
    f"STRUCT(traceId VARCHAR, spanId VARCHAR, parentSpanId VARCHAR, startTimeUnixNano VARCHAR, attributes {_ATTRIBUTES}, "
    "status STRUCT(code VARCHAR))"
)
_RESOURCE_SPANS = f"STRUCT(resource STRUCT(attributes {_ATTRIBUTES}), scopeSpans STRUCT(spans {_SPAN}[])[])[]"


def write_otlp_day(directory: Path, requests: int, seed: int = 7, shard_requests: int = 1_000_000) -> Path:
    """A generated day (unitledger.tools.generate) written as OTLP JSON traces; returns the file.

    The generator holds a day in memory (more than 12 GB for 5M requests), so a larger day is
    generated in shards of at most `shard_requests` (seeds seed, seed + 1, ...: distinct ids), each
    written as OTLP lines and appended to the one file: every line is a batch of its own."""
    from unitledger.tools.generate import generate

    fields = pl.Struct({n: pl.String for n in flat_events.EVENT_FIELDS})
    path = directory / "traces.jsonl"
    part = directory / "shard.jsonl"
    shards = -(-requests // shard_requests)
    directory.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        for k in range(shards):
            shard = requests // shards + (k < requests % shards)
            flat = generate(directory / "flat", start=date(2026, 3, 2), days=1, requests_per_day=shard, seed=seed + k, events_format="jsonl")
            events = pl.scan_lines(flat.event_files[0], glob=False).select(pl.col("line").str.json_decode(fields)).unnest("line")
            write_lines(otlp_trace_lines(events), part)
            with open(part, "rb") as lines:
                shutil.copyfileobj(lines, out, 16 << 20)
            part.unlink()
            shutil.rmtree(directory / "flat")
    return path


def _duckdb_query(path: Path, extract: bool) -> str:
    source = f"read_json(?, format='newline_delimited', columns={{resourceSpans: '{_RESOURCE_SPANS}'}})"
    spans = f"SELECT unnest(s.spans) AS span FROM (SELECT unnest(r.scopeSpans) AS s FROM (SELECT unnest(resourceSpans) AS r FROM {source}))"
    if not extract:
        return f"SELECT span.* FROM ({spans})"
    keys = tuple(dict.fromkeys(otlp._FIXED_KEYS + otlp._context_keys(Telemetry())))
    lookups = ",\n".join(
        f"list_filter(span.attributes, lambda a: a.key = '{k}')[1].value AS \"{k}\"" for k in keys
    )
    return f"SELECT span.traceId, span.spanId, span.parentSpanId, span.startTimeUnixNano, span.status.code AS status, {lookups} FROM ({spans})"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed(run) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), _cpu()
    run()
    return time.perf_counter() - wall, _cpu() - cpu


def bench(path: Path, out: Path, repeats: int = 3) -> dict[str, list[tuple[float, float]]]:
    """(wall s, CPU s) per run of each contender on `path`."""
    con = duckdb.connect()
    contenders = {
        "unitledger read_otlp": lambda: otlp.read_otlp(path, path.name, Telemetry()).sink_parquet(out / "polars.parquet", compression="uncompressed", statistics=False),
        "duckdb read_json+unnest": lambda: con.execute(f"COPY ({_duckdb_query(path, False)}) TO '{out / 'duck.parquet'}' (FORMAT parquet, COMPRESSION uncompressed)", [duckdb_literal_path(path)]),
        "duckdb +attribute lookups": lambda: con.execute(f"COPY ({_duckdb_query(path, True)}) TO '{out / 'duck2.parquet'}' (FORMAT parquet, COMPRESSION uncompressed)", [duckdb_literal_path(path)]),
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            times[name].append(_timed(run))
            print(f"{name}: {times[name][-1][0]:.1f} s wall, {times[name][-1][1]:.1f} s CPU", flush=True)
    return times


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--file", type=Path, help="an existing OTLP JSON traces file instead of a generated day")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    path = args.file or write_otlp_day(args.dir, args.requests)
    times = bench(path, args.dir, args.repeats)
    rows = pl.scan_parquet(args.dir / "polars.parquet", glob=False).group_by("event_type").len().collect()
    print(f"\n{path} ({path.stat().st_size / 1e9:.2f} GB), rows: {dict(rows.iter_rows())}; CPU: {cpu_model()}, {len(os.sched_getaffinity(0))} cores")
    base = statistics.median(w for w, _ in times["duckdb read_json+unnest"])
    for name, runs in times.items():
        wall, cpu = statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)
        print(f"{name:28s} median wall {wall:7.1f} s  CPU {cpu:7.1f} s  = {wall / base:.2f} x duckdb read_json+unnest (wall)")


if __name__ == "__main__":
    main()
