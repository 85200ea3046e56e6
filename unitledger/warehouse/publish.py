"""Publishing: a run's tables become current together, and a reader never sees a mix of runs.

A step spills its outputs to scratch (`Spill`), validates them there, and only then publishes them
in one `Publication`: under the manifest lock, the spilled files are renamed into the table folders
under names no file had before (`<table>/<key>=<value>/<version>-<token>-<n>.parquet`, hive style,
the key not stored in the file), the manifest is replaced with one rename (manifest.py), and the
DuckDB catalog is rebuilt and swapped in the same way (views.py). Nothing is written into a file a
reader may be reading. Replaced files are kept for manifest.RETENTION, then deleted.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from unitledger.layout import Layout
from unitledger.warehouse import views
from unitledger.warehouse.manifest import (  # noqa: F401 (polars_schema: imported from here by the steps)
    RETENTION,
    Manifest,
    manifest_lock,
    partition_key,
    polars_schema,
    read_manifest,
    write_manifest,
)

# The one "partition" of an unpartitioned table published with Publication.replace.
WHOLE_TABLE = "all"
# zstd at level 1 instead of the default 3: files of about the same size, written in about half
# the time (writing is a large part of staging and of every spill).
WRITE_OPTIONS = {"compression": "zstd", "compression_level": 1}


def _tmp_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")


def write_parquet_atomic(frame: pl.DataFrame | pl.LazyFrame, target: Path) -> None:
    """Write `frame` to `target` atomically (streaming when it is lazy): for staging's own files,
    which only the pipeline reads. Published tables go through Publication."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(target)
    try:
        if isinstance(frame, pl.LazyFrame):
            frame.sink_parquet(tmp, **WRITE_OPTIONS)
        else:
            frame.write_parquet(tmp, **WRITE_OPTIONS)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(text: str, target: Path) -> None:
    """Replace `target` with `text` (UTF-8) in one rename: a reader opens the old file or the new
    one, never a half-written one (the report)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(target)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _row_count(path: Path) -> int:
    return pl.scan_parquet(path, glob=False).select(pl.len()).collect().item()


def _scratch_path(scratch: Path, name: str) -> Path:
    """A new path `scratch/<name>-<pid>-<uuid>`: the pid is how clear_scratch tells a killed run's
    leftovers from a live one's."""
    return scratch / f"{name}-{os.getpid()}-{uuid.uuid4().hex}"


class Spill:
    """A table's new partitions, written to scratch before they replace the published ones."""

    def __init__(self, scratch: Path, name: str, key: str, key_dtype: pl.DataType = pl.Date, *, shared: bool = False):
        # shared: at `scratch/name`, for the steps of one run in several processes (a parts folder)
        self.dir = scratch / name if shared else _scratch_path(scratch, name)
        self.key = key
        self.key_dtype = key_dtype

    def sink(self, frame: pl.LazyFrame, *, lazy: bool = False, part: int | None = None, prefix: str = "") -> pl.LazyFrame | None:
        """Write `frame` hive-partitioned by the key (lazily, to run several sinks in one pass).
        Sinks given distinct `part` numbers add files to the same partitions (all are published);
        sinks of one part given distinct `prefix`es too (the part's scan reads them all)."""
        frame = frame.with_columns(pl.col(self.key).cast(pl.String))
        key = self.key

        def named(file: pl.io.partition.FileProviderArgs) -> str:
            return f"{key}={file.partition_keys.item(0, 0)}/part-{part:04}-{prefix}{file.index_in_partition:08}.parquet"

        target = pl.PartitionBy(self.dir, key=key, include_key=False, file_path_provider=None if part is None else named)
        return frame.sink_parquet(target, mkdir=True, lazy=lazy, **WRITE_OPTIONS)

    def scan(self, schema: dict[str, pl.DataType], part: int | None = None) -> pl.LazyFrame:
        """Every partition's rows, or only those sunk with `part`."""
        files = sorted(self.dir.glob("*/*.parquet" if part is None else f"*/part-{part:04}-*.parquet"))
        if not files:
            return pl.DataFrame(schema=schema).lazy()
        return pl.scan_parquet(files, hive_partitioning=True, hive_schema={self.key: self.key_dtype}, glob=False)

    def stash(self, frame: pl.LazyFrame, name: str) -> pl.LazyFrame:
        """Write `frame` now to a file `name` of its own (beside the partitions, never published)
        and return its scan: an intermediate result a step reads back instead of holding it."""
        file = self.dir / f"{name}.parquet"
        file.parent.mkdir(parents=True, exist_ok=True)
        frame.sink_parquet(file, **WRITE_OPTIONS)
        return pl.scan_parquet(file, glob=False)

    def cleanup(self) -> None:
        remove_folder(self.dir)


class Publication:
    """The tables of one run, made current together by `commit` (one manifest swap): a reader sees
    all of them or none. `add` what the run publishes, then `commit` once."""

    def __init__(self, layout: Layout):
        self.layout = layout
        # table → partition → (file, name in the table's folder): None to move the file in under
        # a new name, a name to hard-link it as
        self._partitions: dict[str, dict[str, list[tuple[Path, str | None]]]] = {}

    def add(self, table: str, spill: Spill, keys: Iterable[str]) -> dict[str, int]:
        """Partitions `keys` of `table` become what `spill` holds for them; a key without rows
        becomes an empty partition (built, no rows), so rows a re-run no longer produces disappear.
        Returns the row count of each partition."""
        counts = {}
        for key in map(str, keys):
            rows = {f: _row_count(f) for f in sorted((spill.dir / f"{spill.key}={key}").glob("*.parquet"))}
            self._partitions.setdefault(table, {})[key] = [(f, None) for f, n in rows.items() if n > 0]
            counts[key] = sum(rows.values())
        return counts

    def replace(self, table: str, files: Iterable[Path]) -> dict[str, int]:
        """An unpartitioned table (dictionary key "none") becomes `files` as a whole (moved in under
        new names, files without rows left out). Returns the row count."""
        rows = {f: _row_count(f) for f in files}
        self._partitions[table] = {WHOLE_TABLE: [(f, None) for f, n in rows.items() if n > 0]}
        return {WHOLE_TABLE: sum(rows.values())}

    def link(self, table: str, partition: str, files: dict[Path, str]) -> None:
        """Partition `partition` of `table` becomes `files` (file → table-relative name): files the
        pipeline keeps changing itself (the staged quarantine), hard-linked under their name, which
        says what they hold (a landing file's id), so an unchanged file keeps its published copy."""
        self._partitions.setdefault(table, {})[partition] = list(files.items())

    def commit(self, now: datetime | None = None) -> Manifest:
        """Make everything added current at once; returns the new manifest."""
        now = now or datetime.now(timezone.utc)
        warehouse = self.layout.warehouse
        with manifest_lock(self.layout):
            current = read_manifest(self.layout)
            version, token = current.version + 1, secrets.token_hex(4)
            tables = {table: dict(partitions) for table, partitions in current.tables.items()}
            for table, partitions in self._partitions.items():
                for partition, files in partitions.items():
                    names = []
                    for n, (source, name) in enumerate(files):
                        new = name is None
                        key = partition_key(table)
                        folder = table if key is None else f"{table}/{key}={partition}"
                        name = f"{folder}/{version:06}-{token}-{n}.parquet" if new else f"{table}/{name}"
                        _place(source, warehouse / name, link=not new)
                        names.append(name)
                    tables.setdefault(table, {})[partition] = names
            if tables == current.tables:  # e.g. the same quarantine again: no new version
                return current
            manifest = _next_manifest(current, version, tables, now, warehouse)
            write_manifest(self.layout, manifest)
            views.build_catalog(self.layout, manifest)
            _remove_orphans(self.layout, manifest)
        return manifest


def _place(source: Path, target: Path, link: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if not link:
        os.replace(source, target)
    elif not target.exists():  # a published copy of the same content is kept as it is
        try:
            os.link(source, target)
        except OSError:  # a filesystem without hard links
            shutil.copyfile(source, target)


def _next_manifest(current: Manifest, version: int, tables: dict, now: datetime, warehouse: Path) -> Manifest:
    """The manifest after `current` with `tables`: the files it no longer lists are retired (kept
    for readers), and retired files older than RETENTION are deleted now."""
    listed = {f for partitions in tables.values() for files in partitions.values() for f in files}
    retired = {f: when for f, when in current.retired.items() if f not in listed}
    retired |= {f: now.isoformat() for f in current.all_files() - listed}
    for name, when in list(retired.items()):
        if now - datetime.fromisoformat(when) >= RETENTION:
            (warehouse / name).unlink(missing_ok=True)
            del retired[name]
    return Manifest(version, tables, retired)


def _remove_orphans(layout: Layout, manifest: Manifest) -> None:
    """Files in the table folders that no manifest lists: renamed into place by a publish killed
    before it replaced the manifest (publishes hold the lock, so none is in progress)."""
    known = manifest.all_files() | set(manifest.retired)
    for table in manifest.tables:
        for path in (layout.warehouse / table).rglob("*.parquet"):
            if path.relative_to(layout.warehouse).as_posix() not in known:
                path.unlink(missing_ok=True)


def remove_folder(folder: Path) -> None:
    """Remove `folder` and everything in it, until it is gone: Polars reports a failed sink before
    its writer has stopped, and the writer may create its file after the error reached us, while
    the folder is being removed; in a folder that no longer exists it cannot (seen: a stray file
    after about 1 % of failed sinks under load)."""
    for _ in range(100):
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            return
        time.sleep(0.01)


@contextmanager
def scratch_folder(scratch: Path, name: str) -> Iterator[Path]:
    """A new folder under `scratch` (_scratch_path), removed with everything in it on exit
    (remove_folder)."""
    folder = _scratch_path(scratch, name)
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        remove_folder(folder)


def clear_scratch(scratch: Path, warehouse: Path) -> None:
    """Remove what killed runs left (only that of processes no longer alive): their folders in
    scratch, and their half-written `_tmp_name` files in the warehouse."""
    for entry in scratch.iterdir() if scratch.is_dir() else []:
        parts = entry.name.rsplit("-", 2)
        pid = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None
        if pid is None or not _alive(pid):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
    for tmp in warehouse.rglob(".*.tmp"):
        parts = tmp.name.rsplit(".", 3)  # .<target>.<pid>.<uuid>.tmp
        if len(parts) == 4 and parts[1].isdigit() and not _alive(int(parts[1])):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
