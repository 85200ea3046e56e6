"""Publishing: a reader sees all of a run or none of it and never fails, while runs republish; the
files a run replaced are kept for readers for manifest.RETENTION, then deleted; what a killed
publish left is removed; a warehouse of the earlier layout is refused, not misread."""

import subprocess
import sys
import textwrap
from datetime import date, datetime, timedelta, timezone

import polars as pl
import pytest

from tests.conftest import REPO
from unitledger.layout import Layout
from unitledger.warehouse.manifest import RETENTION, LegacyWarehouseError, read_manifest, scan_table, table_schema
from unitledger.warehouse.publish import Publication, Spill
from unitledger.warehouse.query import run_query

DAYS = ["2026-03-01", "2026-03-02", "2026-03-03"]
# The column of each table that carries the number of the run that wrote it.
MARKERS = {"request_costs": "billing_rows", "intent_costs": "requests"}


def marked_rows(table: str, run: int, rows_per_day: int = 2000) -> pl.LazyFrame:
    """`rows_per_day` rows per day of DAYS, every column null but the date and the run's marker."""
    schema = table_schema(table)
    days = [date.fromisoformat(d) for d in DAYS for _ in range(rows_per_day)]
    frame = pl.DataFrame({c: pl.Series(c, [None] * len(days), dtype=t) for c, t in schema.items()})
    return frame.with_columns(date=pl.Series(days), **{MARKERS[table]: pl.lit(run, dtype=pl.Int64)}).lazy()


def publish_run(layout: Layout, run: int, now: datetime | None = None) -> None:
    """Both tables of run `run`, for every day of DAYS, in one publication (as a step does)."""
    publication, spills = Publication(layout), []
    for table in MARKERS:
        spills.append(Spill(layout.tmp, table, "date"))
        spills[-1].sink(marked_rows(table, run))
        publication.add(table, spills[-1], DAYS)
    publication.commit(now)
    for spill in spills:
        spill.cleanup()


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tests.test_publish import publish_run
    from unitledger.layout import Layout

    layout, runs = Layout(Path(sys.argv[1])), int(sys.argv[2])
    print("ready", flush=True)
    for run in range(2, runs + 2):
        publish_run(layout, run)
    """
)

# Per table and day: the lowest and highest run marker, and the row count. One query: one catalog.
DUCKDB_READ = " UNION ALL ".join(
    f"SELECT '{t}' AS t, date, min({m}) AS lo, max({m}) AS hi, count(*) AS n FROM {t} GROUP BY ALL" for t, m in MARKERS.items()
)


def polars_read(layout: Layout) -> pl.DataFrame:
    published = read_manifest(layout)  # one manifest for both tables: one run
    return pl.concat(
        [
            published.scan(layout, t)
            .group_by("date")
            .agg(lo=pl.col(m).min(), hi=pl.col(m).max(), n=pl.len().cast(pl.Int64))
            .select(t=pl.lit(t), date="date", lo="lo", hi="hi", n="n")
            .collect()
            for t, m in MARKERS.items()
        ]
    )


def run_seen(read: pl.DataFrame) -> int | None:
    """The one run a read saw whole (every day of both tables, every row of it), else None."""
    whole = read.height == len(MARKERS) * len(DAYS) and (read["n"] == 2000).all() and read["lo"].n_unique() == 1
    return read["lo"][0] if whole and (read["lo"] == read["hi"]).all() else None


def test_readers_see_all_of_a_run_or_none_of_it_while_runs_republish(layout):
    """One process republishes both tables of three days 20 times, each run's rows marked with its
    number; this one reads them meanwhile, through DuckDB's views (a new connection each time, as
    `unitledger query` does, which no longer retries) and through the Polars reader. Every read
    must succeed and see exactly one run, whole."""
    publish_run(layout, 1)
    runs, failures, mixed, seen = 20, [], [], []
    command = [sys.executable, "-c", WRITER, str(layout.data_dir), str(runs)]
    writer = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert writer.stdout.readline().strip() == "ready"
        while True:  # bounded: the writer stops after `runs` publications
            writing = writer.poll() is None
            for name, read in (("duckdb", lambda: run_query(layout, DUCKDB_READ)), ("polars", lambda: polars_read(layout))):
                try:
                    frame = read()
                except Exception as exc:  # noqa: BLE001 (any failure of a reader is what is counted)
                    failures.append(f"{name}: {exc}")
                    continue
                run = run_seen(frame)
                (seen if run is not None else mixed).append(run if run is not None else (name, frame.sort("t", "date").rows()))
            if not writing:
                break
    finally:
        writer.communicate(timeout=600)
    assert writer.returncode == 0
    assert failures == [] and mixed == []
    assert len(set(seen)) > 1, "the reads must overlap the publications for the test to mean anything"
    assert seen[-1] == runs + 1  # after the writer ended: its last run


def test_replaced_files_are_kept_for_the_retention_then_deleted(layout):
    start = datetime(2026, 3, 10, 2, 0, tzinfo=timezone.utc)
    publish_run(layout, 1, start)
    first = {layout.warehouse / f for f in read_manifest(layout).all_files()}
    publish_run(layout, 2, start)  # replaces every file of run 1
    assert all(f.exists() for f in first)  # a reader of run 1's manifest can still read them
    assert set(read_manifest(layout).retired) == {f.relative_to(layout.warehouse).as_posix() for f in first}
    publish_run(layout, 3, start + RETENTION - timedelta(seconds=1))
    assert all(f.exists() for f in first)
    second = {layout.warehouse / f for f in read_manifest(layout).retired} - first  # run 2's, retired by run 3
    publish_run(layout, 4, start + RETENTION)
    assert not any(f.exists() for f in first) and all(f.exists() for f in second)
    assert not set(read_manifest(layout).retired) & {f.relative_to(layout.warehouse).as_posix() for f in first}
    assert scan_table(layout, "request_costs").collect()["billing_rows"].unique().to_list() == [4]


def test_a_file_renamed_in_by_a_publish_killed_before_its_manifest_is_removed_unseen(layout):
    publish_run(layout, 1)
    orphan = layout.table("request_costs") / "date=2026-03-02" / "000002-0badc0de-0.parquet"
    marked_rows("request_costs", 99).collect().write_parquet(orphan)
    assert set(scan_table(layout, "request_costs").collect()["billing_rows"].unique()) == {1}  # never listed: never read
    publish_run(layout, 2)
    assert not orphan.exists()
    assert set(scan_table(layout, "request_costs").collect()["billing_rows"].unique()) == {2}


def test_a_partition_a_run_leaves_without_rows_is_published_empty(layout):
    publish_run(layout, 1)
    publication, spill = Publication(layout), Spill(layout.tmp, "request_costs", "date")
    spill.sink(marked_rows("request_costs", 2).filter(pl.col("date") != date(2026, 3, 2)))
    publication.add("request_costs", spill, DAYS)
    publication.commit()
    spill.cleanup()
    published = read_manifest(layout)
    assert published.partitions("request_costs") == DAYS  # the day is built, with no rows
    assert published.files("request_costs", ["2026-03-02"]) == []
    rows = scan_table(layout, "request_costs").group_by("date").len().sort("date").collect()
    assert rows["date"].cast(pl.String).to_list() == ["2026-03-01", "2026-03-03"]


def test_a_warehouse_of_the_earlier_layout_is_refused_with_what_to_do(layout):
    legacy = layout.table("request_costs") / "date=2026-03-02" / "data.parquet"
    legacy.parent.mkdir(parents=True)
    marked_rows("request_costs", 1).collect().write_parquet(legacy)
    with pytest.raises(LegacyWarehouseError, match="remove it and warehouse.duckdb, then run `unitledger materialize`"):
        scan_table(layout, "request_costs")
    with pytest.raises(LegacyWarehouseError):
        publish_run(layout, 2)
    assert legacy.exists()
