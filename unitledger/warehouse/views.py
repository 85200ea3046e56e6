"""The analysts' DuckDB file: one view per table over the Parquet files.

Views glob the table folders, so they show new partitions without being recreated; the pipeline
opens the file for writing only when a view is missing or points elsewhere, and only for as long
as it takes to create it. Each view's comment is a hash of the SQL that created it: DuckDB stores
view SQL re-rendered, so the hash is what tells a current view from an outdated one. Paths in the
SQL come from the data root, never from input data."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import duckdb

from unitledger.layout import Layout

# table name → (folder glob relative to the warehouse, hive partition key or None)
VIEWS: dict[str, tuple[str, str | None]] = {
    "request_costs": ("request_costs/*/*.parquet", "date"),
    "intent_costs": ("intent_costs/*/*.parquet", "date"),
    "cost_per_intent": ("cost_per_intent/*/*.parquet", "date"),
    "cost_per_success": ("cost_per_success/*/*.parquet", "date"),
    "cost_per_intent_monthly": ("cost_per_intent_monthly/*/*.parquet", "billing_period"),
    "cost_per_success_monthly": ("cost_per_success_monthly/*/*.parquet", "billing_period"),
    "reconciliation": ("reconciliation/*/*.parquet", "billing_period"),
    "reconciliation_daily": ("reconciliation_daily/*/*.parquet", "date"),
    "token_reconciliation": ("token_reconciliation/*/*.parquet", "billing_period"),
    "token_mismatches": ("token_mismatches/*/*.parquet", "billing_period"),
    "request_conflicts": ("request_conflicts/*/*.parquet", "billing_period"),
    "quarantine": ("quarantine/*/*.parquet", None),
}
_HIVE_TYPES = {"date": "DATE", "billing_period": "VARCHAR"}


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def view_sql(layout: Layout, name: str) -> str:
    pattern, key = VIEWS[name]
    path = _sql_string(str(layout.warehouse / pattern))
    if key is None:
        return f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet({path}, union_by_name = true)"
    hive = f"hive_partitioning = true, hive_types = {{'{key}': {_HIVE_TYPES[key]}}}"
    return f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet({path}, {hive}, union_by_name = true)"


def _has_files(layout: Layout, name: str) -> bool:
    return any(layout.warehouse.glob(VIEWS[name][0]))


def refresh_views(layout: Layout, attempts: int = 5) -> list[str]:
    """Create the missing or outdated views; returns the names of the views that exist."""
    wanted = {name: view_sql(layout, name) for name in VIEWS if _has_files(layout, name)}
    if not wanted:
        return []
    current = _current_views(layout.duckdb_path)
    stale = {n: sql for n, sql in wanted.items() if current.get(n) != _fingerprint(sql)}
    if stale:
        for attempt in range(attempts):
            try:
                with duckdb.connect(str(layout.duckdb_path)) as con:
                    for name, sql in stale.items():
                        con.execute(sql)
                        con.execute(f"COMMENT ON VIEW {name} IS {_sql_string(_fingerprint(sql))}")
                break
            except duckdb.IOException:
                # Another process holds the write lock (an analyst's read-write session): wait.
                if attempt == attempts - 1:
                    raise
                time.sleep(0.5 * 2**attempt)
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
