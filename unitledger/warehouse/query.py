"""The analysts' side: `unitledger query` (SQL against warehouse.duckdb, read-only) and
`unitledger tables` (tables and columns with their meaning, from the data dictionary)."""

from __future__ import annotations

import duckdb
import polars as pl

from unitledger.layout import Layout
from unitledger.warehouse import dictionary
from unitledger.warehouse.display import print_readable
from unitledger.warehouse.views import connect_read_only

FORMATS = ("table", "csv", "parquet", "json")


class QueryError(Exception):
    """The query cannot run; the message says why."""


def run_query(layout: Layout, sql: str) -> pl.DataFrame:
    """Run `sql` on a read-only connection: it cannot change the warehouse and takes no lock, so it
    runs while the pipeline publishes, on the catalog (and so the run) current when it started.
    Published files are never rewritten, so a query never meets a file changing under it."""
    if not layout.duckdb_path.exists():
        raise QueryError(f"no warehouse at {layout.duckdb_path}: run `unitledger materialize` first")
    try:
        with connect_read_only(layout) as con:
            relation = con.sql(sql)
            if relation is None:
                raise QueryError("the statement returns no rows: `unitledger query` runs queries (SELECT, WITH, …)")
            return relation.pl()
    except duckdb.Error as exc:
        raise QueryError(str(exc).strip()) from exc


def write_result(frame: pl.DataFrame, fmt: str, output) -> None:
    """Write `frame` as csv, parquet or json (an array of row objects) to `output` (a path or a
    text stream; parquet needs a path)."""
    if fmt == "csv":
        frame.write_csv(output)
    elif fmt == "json":
        # Exact decimals as strings: JSON numbers would be read back as floats.
        frame.with_columns(pl.col(pl.Decimal).cast(pl.String)).write_json(output)
    elif fmt == "parquet":
        frame.write_parquet(output)
    else:
        raise ValueError(f"unknown format {fmt!r}")


def print_table(frame: pl.DataFrame) -> None:
    """The result for reading (display.readable: money rounded, unbilled rows named, small samples
    flagged), its row count and the legend."""
    print_readable(frame, f"({frame.height} row{'s' if frame.height != 1 else ''})")


def describe_tables(names: list[str] | None = None) -> str:
    """Tables with their partition key and meaning, then their columns (type, nullable, meaning)."""
    unknown = sorted(set(names or []) - set(dictionary.TABLES))
    if unknown:
        raise QueryError(f"no table {', '.join(unknown)}; tables: {', '.join(dictionary.TABLES)}")
    lines = []
    for table, (model, key) in dictionary.TABLES.items():
        if names and table not in names:
            continue
        doc = " ".join((model.__doc__ or "").split())
        partitioning = "not partitioned" if key == "none" else f"partitioned by {key}"
        lines.append(f"{table}  ({partitioning})  {doc}")
        rows = dictionary.columns(model)
        name_width = max(len(n) for n, *_ in rows)
        type_width = max(len(t) for _, t, *_ in rows)
        for name, dtype, nullable, description in rows:
            lines.append(f"  {name:<{name_width}}  {dtype:<{type_width}}  {'null ' if nullable else '     '} {description}")
        lines.append("")
    return "\n".join(lines)
