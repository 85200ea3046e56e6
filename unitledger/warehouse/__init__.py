"""The published side: atomic Parquet publishing, the DuckDB views, queries and the data dictionary."""
