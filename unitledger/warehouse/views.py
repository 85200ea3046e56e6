"""The analysts' DuckDB file, `warehouse.duckdb`: one view per published table, over exactly the
files the manifest lists (a table without files yet: an empty view with the table's columns).

The catalog is never changed in place: a new one is built in scratch and renamed over the old one
(views of a run are swapped in with its manifest, under the manifest lock), so a reader never
blocks a run and a session keeps the catalog, and the files, it opened. Each view's comment is a
hash of the SQL that created it: DuckDB stores view SQL re-rendered, so the hash is what tells a
current view from an outdated one (after the data root moved, say). Paths in the SQL come from the
data root and the manifest, never from input data."""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import uuid
from pathlib import Path

import duckdb
import polars as pl

from unitledger.layout import Layout
from unitledger.warehouse.dictionary import TABLES
from unitledger.warehouse.manifest import Manifest, manifest_lock, partition_key, read_manifest, table_schema

_HIVE_TYPES = {"date": "DATE", "billing_period": "VARCHAR"}


def duckdb_literal_path(path: str | os.PathLike) -> str:
    """`path` as DuckDB's file readers take it literally: they expand every path they are given as
    a glob pattern (a data root `/srv/a[1]` would read `/srv/a1`), so the pattern characters are
    each escaped as a one-character class."""
    return re.sub(r"([\[*?])", r"[\1]", str(path))


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def view_sql(layout: Layout, manifest: Manifest, name: str) -> str:
    files = manifest.files(name)
    if not files:
        return f"CREATE OR REPLACE VIEW {name} AS {_empty_selects()[name]}"
    paths = "[" + ", ".join(_sql_string(duckdb_literal_path(layout.warehouse / f)) for f in files) + "]"
    key = partition_key(name)
    hive = "hive_partitioning = false" if key is None else f"hive_partitioning = true, hive_types = {{'{key}': {_HIVE_TYPES[key]}}}"
    return f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet({paths}, {hive}, union_by_name = true)"


# Polars type → the type DuckDB gives the column reading a Parquet file of it (checked against
# DuckDB itself in tests/test_warehouse.py); Decimal and Datetime are handled below.
_DUCKDB_TYPES = {pl.String: "VARCHAR", pl.Int64: "BIGINT", pl.Float64: "DOUBLE", pl.Boolean: "BOOLEAN", pl.Date: "DATE"}


def _duckdb_type(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.Decimal):
        return f"DECIMAL({dtype.precision},{dtype.scale})"
    if isinstance(dtype, pl.Datetime):
        return "TIMESTAMP WITH TIME ZONE" if dtype.time_zone else "TIMESTAMP"
    return _DUCKDB_TYPES[dtype.base_type()]


@functools.cache
def _empty_selects() -> dict[str, str]:
    """Per table: no rows, the table's columns with the types DuckDB gives them reading its files."""
    return {
        name: "SELECT " + ", ".join(f"CAST(NULL AS {_duckdb_type(t)}) AS {_identifier(c)}" for c, t in table_schema(name).items()) + " WHERE false"
        for name in TABLES
    }


def build_catalog(layout: Layout, manifest: Manifest) -> None:
    """Write a catalog with a view per table for `manifest` beside the current one, then rename it
    over it. The caller holds the manifest lock."""
    folder = layout.tmp / f"catalog-{os.getpid()}-{uuid.uuid4().hex}"  # a scratch folder: see publish.clear_scratch
    folder.mkdir(parents=True)
    try:
        built = folder / layout.duckdb_path.name
        with duckdb.connect(str(built)) as con:
            con.execute("BEGIN TRANSACTION")  # one commit: a log write per statement costs more than the views
            for name in TABLES:
                sql = view_sql(layout, manifest, name)
                con.execute(sql)
                con.execute(f"COMMENT ON VIEW {name} IS {_sql_string(_fingerprint(sql))}")
            con.execute("COMMIT")
            con.execute("CHECKPOINT")
        os.replace(built, layout.duckdb_path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def refresh_views(layout: Layout) -> list[str]:
    """Rebuild the catalog when a view is missing or differs from the manifest (a new table, the
    data root moved); returns the view names. Checking takes only a read-only look."""
    with manifest_lock(layout):
        manifest = read_manifest(layout)
        wanted = {name: _fingerprint(view_sql(layout, manifest, name)) for name in TABLES}
        if _current_views(layout.duckdb_path) != wanted:
            build_catalog(layout, manifest)
    return sorted(wanted)


def _fingerprint(sql: str) -> str:
    return "unitledger:" + hashlib.sha256(sql.encode()).hexdigest()[:16]


def _current_views(path: Path) -> dict[str, str | None]:
    """View name → its comment (the fingerprint of the SQL that created it)."""
    if not path.exists():
        return {}
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            rows = con.sql("SELECT view_name, comment FROM duckdb_views() WHERE NOT internal").fetchall()
    except duckdb.Error:
        return {}
    return dict(rows)


def connect_read_only(layout: Layout) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(layout.duckdb_path), read_only=True)
