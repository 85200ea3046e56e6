"""Which files are each published table, now: `warehouse/manifest.json`, and the one way to read a
published table (`scan_table`).

A published file is never overwritten: a run writes its files under new names and then makes them
current by replacing the manifest with one rename (unitledger.warehouse.publish.Publication), for
every table of the run at once. A reader reads the manifest once and then only the files it lists,
so it sees all of a run or none of it, never a mix, and never a file changing under it.

Files a run replaced are listed under `retired` with the time they were replaced and deleted by the
first publish at least RETENTION later: a reader that read the previous manifest, or a DuckDB
session opened before the run, keeps reading them until then.
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import polars as pl

from unitledger.layout import Layout
from unitledger.warehouse.dictionary import TABLES

MANIFEST_NAME = "manifest.json"
RETENTION = timedelta(hours=24)
KEY_DTYPES: dict[str, pl.DataType] = {"date": pl.Date, "billing_period": pl.String}


class LegacyWarehouseError(Exception):
    """A warehouse written before publishing went through the manifest."""


def partition_key(table: str) -> str | None:
    """The hive partition key of a published table (None for the quarantine)."""
    key = TABLES[table][1]
    return None if key == "none" else key


def polars_schema(model) -> dict[str, pl.DataType]:
    """Column → Polars type of a Pandera model: the schema of a table's empty frame or scan."""
    return {name: col.dtype.type for name, col in model.to_schema().columns.items()}


def table_schema(table: str) -> dict[str, pl.DataType]:
    """A published table's columns as readers get them: the file's columns, then the partition key
    (hive style, taken from the folder name)."""
    schema = polars_schema(TABLES[table][0])
    key = partition_key(table)
    return schema if key is None else {**{c: t for c, t in schema.items() if c != key}, key: schema[key]}


@dataclass(frozen=True)
class Manifest:
    """One version of the warehouse: table → partition → files (relative to warehouse/), and the
    replaced files still kept for readers (relative path → when it was replaced, ISO 8601 UTC)."""

    version: int = 0
    tables: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    retired: dict[str, str] = field(default_factory=dict)

    def partitions(self, table: str) -> list[str]:
        """The published partitions of `table` (an empty one included: built, without rows)."""
        return sorted(self.tables.get(table, {}))

    def files(self, table: str, partitions: Iterable[str] | None = None) -> list[str]:
        published = self.tables.get(table, {})
        wanted = sorted(published) if partitions is None else [str(p) for p in partitions]
        return [f for p in wanted for f in published.get(p, [])]

    def all_files(self) -> set[str]:
        return {f for partitions in self.tables.values() for files in partitions.values() for f in files}

    def scan(self, layout: Layout, table: str, partitions: Iterable[str] | None = None) -> pl.LazyFrame:
        """The rows of `table` (of the given partitions only, when given), partition key restored."""
        files = [layout.warehouse / f for f in self.files(table, partitions)]
        if not files:
            return pl.DataFrame(schema=table_schema(table)).lazy()
        key = partition_key(table)
        if key is None:
            return pl.scan_parquet(files, glob=False)
        return pl.scan_parquet(files, glob=False, hive_partitioning=True, hive_schema={key: KEY_DTYPES[key]})

    def to_json(self) -> str:
        return json.dumps({"version": self.version, "tables": self.tables, "retired": self.retired}, indent=1, sort_keys=True)


def manifest_path(layout: Layout) -> Path:
    return layout.warehouse / MANIFEST_NAME


def read_manifest(layout: Layout) -> Manifest:
    """The current manifest (empty before the first publish)."""
    path = manifest_path(layout)
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        _refuse_legacy(layout)
        return Manifest()
    return Manifest(saved["version"], saved["tables"], saved["retired"])


def scan_table(layout: Layout, table: str, partitions: Iterable[str] | None = None) -> pl.LazyFrame:
    """The current rows of a published table: every reader of the warehouse's Parquet goes through
    here (or through the DuckDB views), never through a glob of the table's folder, which holds
    replaced files kept for readers too. To read several tables of one run consistently, read the
    manifest once and scan each from it."""
    return read_manifest(layout).scan(layout, table, partitions)


def write_manifest(layout: Layout, manifest: Manifest) -> None:
    """Replace the manifest with one rename (atomic on POSIX): readers see the old or the new one."""
    path = manifest_path(layout)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w") as out:
            out.write(manifest.to_json())
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def manifest_lock(layout: Layout) -> Iterator[None]:
    """Held by whoever changes the manifest or the DuckDB catalog, for as long as that takes
    (renames and a rebuilt catalog): two publishes never interleave. Readers never take it. The
    operating system releases it when its process dies, even by SIGKILL."""
    layout.warehouse.mkdir(parents=True, exist_ok=True)
    with open(layout.warehouse / "manifest.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _refuse_legacy(layout: Layout) -> None:
    """Before the manifest, partitions were `<table>/<key>=<value>/data.parquet`, replaced in place,
    and the staged quarantine lived in `quarantine/<source>/`: a reader of such a warehouse would
    see none of it and a run would lose the quarantined rows of files already staged."""
    staged_quarantine = [layout.table("quarantine") / source for source in ("focus", "events")]
    if any(layout.warehouse.glob("*/*=*/data.parquet")) or any(p.is_dir() for p in staged_quarantine):
        raise LegacyWarehouseError(
            f"{layout.warehouse} was built by an earlier unitledger (no {MANIFEST_NAME}): remove it and "
            f"{layout.duckdb_path.name}, then run `unitledger materialize` for your range again (landing files are not touched)"
        )
