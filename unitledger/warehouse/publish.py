"""Atomic Parquet writes. Readers see a partition's old file or its new one, never a mix or a
half-written file: every file is written beside its target under a name no reader globs (no
`.parquet` suffix), then renamed over it (rename is atomic on POSIX filesystems).

A table is `<table>/<key>=<value>/data.parquet`, hive style; the key is not stored in the file.
Outputs are first spilled to a scratch folder, validated there, and only then published.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

PARTITION_FILE = "data.parquet"
# zstd at level 1 instead of the default 3: files of about the same size, written in about half
# the time (writing is a large part of staging and of every spill).
WRITE_OPTIONS = {"compression": "zstd", "compression_level": 1}


def polars_schema(model) -> dict[str, pl.DataType]:
    """Column → Polars type of a Pandera model: the schema of a table's empty frame or scan."""
    return {name: col.dtype.type for name, col in model.to_schema().columns.items()}


def _tmp_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")


def write_parquet_atomic(frame: pl.DataFrame | pl.LazyFrame, target: Path) -> None:
    """Write `frame` to `target` atomically (streaming when it is lazy)."""
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


def partition_file(table_dir: Path, key: str, value: str) -> Path:
    return table_dir / f"{key}={value}" / PARTITION_FILE


def scan_partitions(table_dir: Path, key: str, values: Iterable[str], key_dtype: pl.DataType = pl.Date) -> pl.LazyFrame | None:
    """The given partitions of a table (those that exist) with the key column restored, or None."""
    files = [f for f in (partition_file(table_dir, key, str(v)) for v in values) if f.exists()]
    if not files:
        return None
    return pl.scan_parquet(files, hive_partitioning=True, hive_schema={key: key_dtype}, glob=False)


def _scratch_path(scratch: Path, name: str) -> Path:
    """A new path `scratch/<name>-<pid>-<uuid>`: the pid is how clear_scratch tells a killed run's
    leftovers from a live one's."""
    return scratch / f"{name}-{os.getpid()}-{uuid.uuid4().hex}"


class Spill:
    """A table's new partitions, written to scratch before they replace the published ones."""

    def __init__(self, scratch: Path, name: str, key: str, key_dtype: pl.DataType = pl.Date):
        self.dir = _scratch_path(scratch, name)
        self.key = key
        self.key_dtype = key_dtype

    def sink(self, frame: pl.LazyFrame, *, lazy: bool = False, part: int | None = None) -> pl.LazyFrame | None:
        """Write `frame` hive-partitioned by the key (lazily, to run several sinks in one pass).
        Sinks given distinct `part` numbers add files to the same partitions (publish merges them)."""
        frame = frame.with_columns(pl.col(self.key).cast(pl.String))
        key = self.key

        def named(file: pl.io.partition.FileProviderArgs) -> str:
            return f"{key}={file.partition_keys.item(0, 0)}/part-{part:04}-{file.index_in_partition:08}.parquet"

        target = pl.PartitionBy(self.dir, key=key, include_key=False, file_path_provider=None if part is None else named)
        return frame.sink_parquet(target, mkdir=True, lazy=lazy, **WRITE_OPTIONS)

    def scan(self, schema: dict[str, pl.DataType], part: int | None = None) -> pl.LazyFrame:
        """Every partition's rows, or only those sunk with `part`."""
        files = sorted(self.dir.glob("*/*.parquet" if part is None else f"*/part-{part:04}-*.parquet"))
        if not files:
            return pl.DataFrame(schema=schema).lazy()
        return pl.scan_parquet(files, hive_partitioning=True, hive_schema={self.key: self.key_dtype}, glob=False)

    def publish(self, table_dir: Path, keys: Iterable[str], schema: dict[str, pl.DataType]) -> dict[str, int]:
        """Replace partition `key=k` of `table_dir` for every k in `keys` (one rename each).

        A key without rows gets an empty file, so rows a re-run no longer produces disappear.
        Returns the row count of each published partition."""
        counts: dict[str, int] = {}
        empty = pl.DataFrame(schema={n: t for n, t in schema.items() if n != self.key})
        for k in map(str, keys):
            produced = sorted((self.dir / f"{self.key}={k}").glob("*.parquet"))
            target = partition_file(table_dir, self.key, k)
            target.parent.mkdir(parents=True, exist_ok=True)
            if len(produced) == 1:
                os.replace(produced[0], target)
            else:
                write_parquet_atomic(pl.scan_parquet(produced, glob=False) if produced else empty, target)
            counts[k] = pl.scan_parquet(target, glob=False).select(pl.len()).collect().item()
        return counts

    def cleanup(self) -> None:
        remove_folder(self.dir)


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
    scratch, and their half-written `_tmp_name` files beside the tables of the warehouse."""
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
