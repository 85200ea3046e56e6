import os

# Row groups a Parquet scan decodes ahead (Polars' default: at least 8). Landing FOCUS exports come
# with row groups of ~500k rows × 26 columns read as text: 8 in flight set the whole day's peak
# memory (2.9 GB at 5M requests, 2.5 GB with 2, for the same time). Read by Polars per scan; an
# operator's own setting wins.
os.environ.setdefault("POLARS_ROW_GROUP_PREFETCH_SIZE", "2")
