"""Landing files → staged, validated inputs.

Each landing file is staged once: parsed into typed Parquet (`warehouse/staged/<table>/<id>.parquet`)
and its bad rows into `warehouse/quarantine/<source>/<id>.parquet`. The id is a hash of the file's
path, size and modification time, so a changed or re-delivered file is staged again and a removed
one disappears from staging. Downstream steps read staging only.

A file that cannot be read at all (corrupt, truncated, empty, a mandatory column missing) raises
InputFileError naming the file and the place; nothing is staged from it.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from schemas.types import MONEY
from unitledger import parse
from unitledger.layout import Layout
from unitledger.warehouse.publish import WRITE_OPTIONS, scratch_folder, write_parquet_atomic

FOCUS_SUFFIXES = (".csv", ".csv.gz", ".parquet")
EVENT_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")


class InputFileError(Exception):
    """A landing file that cannot be read; the message names the file and the place."""


@dataclass(frozen=True)
class LandingFile:
    path: Path
    relpath: str  # relative to its landing folder, '/'-separated
    size: int
    mtime_ns: int

    @property
    def file_id(self) -> str:
        key = f"{self.relpath}\0{self.size}\0{self.mtime_ns}".encode()
        return hashlib.sha256(key).hexdigest()[:24]

    @property
    def delivery(self) -> str:
        """The folder the file was delivered in: all files of one folder form one delivery."""
        parent = Path(self.relpath).parent.as_posix()
        return "" if parent == "." else parent


def list_landing(root: Path, suffixes: tuple[str, ...]) -> list[LandingFile]:
    """Data files below `root` (nested folders allowed), sorted by path. Hidden files, files in
    hidden folders and symbolic links are skipped."""
    if not root.is_dir():
        return []
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            path = Path(dirpath) / name
            if name.startswith(".") or path.is_symlink() or not name.lower().endswith(suffixes):
                continue
            st = path.stat()
            found.append(LandingFile(path, path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    return sorted(found, key=lambda f: f.relpath)


# --- reading one file ---------------------------------------------------------------------------


def _check_readable(f: LandingFile) -> None:
    if f.size == 0:
        raise InputFileError(f"{f.relpath}: empty file (0 bytes)")
    if f.relpath.lower().endswith(".gz"):
        try:
            with gzip.open(f.path, "rb") as fh:
                while fh.read(1 << 20):
                    pass
        except (OSError, EOFError, zlib.error) as exc:
            raise InputFileError(f"{f.relpath}: corrupt gzip data ({exc})") from exc


def _scan_parquet_as_text(f: LandingFile, wanted: tuple[str, ...]) -> pl.LazyFrame:
    try:
        names = pl.scan_parquet(f.path).collect_schema().names()
    except Exception as exc:  # polars raises several types for a broken footer
        raise InputFileError(f"{f.relpath}: not a readable Parquet file ({_first_line(exc)})") from exc
    present = [c for c in wanted if c in names]
    return pl.scan_parquet(f.path).select(
        [pl.col(c).cast(pl.String) for c in present]
    ).with_row_index("source_line", offset=1)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def read_focus_raw(f: LandingFile) -> pl.LazyFrame:
    """All FOCUS columns the pipeline reads, as text, plus source_file/source_line/delivery."""
    _check_readable(f)
    wanted = parse.FOCUS_COLUMNS + tuple(parse.FOCUS_LEGACY_NAMES.values())
    if f.relpath.lower().endswith(".parquet"):
        raw = _scan_parquet_as_text(f, wanted)
    else:
        _check_text_header(f)
        try:
            header = pl.scan_csv(f.path, infer_schema=False, n_rows=0).collect_schema().names()
        except Exception as exc:
            raise InputFileError(f"{f.relpath}: line 1: cannot read the CSV header ({_first_line(exc)})") from exc
        present = [c for c in wanted if c in header]
        raw = (
            # Real exports write nulls as empty cells, quoted empty strings or NULL.
            pl.scan_csv(f.path, infer_schema=False, null_values=["NULL", ""])
            .select(present)
            # Line 1 is the header; a record spanning several lines shifts later numbers.
            .with_row_index("source_line", offset=2)
        )
    names = raw.collect_schema().names()
    for new, old in parse.FOCUS_LEGACY_NAMES.items():
        if new not in names and old in names:
            raw = raw.rename({old: new})
            names[names.index(old)] = new
    missing = [c for c in parse.FOCUS_MANDATORY if c not in names]
    if missing:
        raise InputFileError(f"{f.relpath}: line 1: missing mandatory FOCUS column(s) {', '.join(missing)}")
    return raw.with_columns(
        [pl.lit(None, dtype=pl.String).alias(c) for c in parse.FOCUS_COLUMNS if c not in names]
    ).with_columns(
        source_file=pl.lit(f.relpath),
        source_line=pl.col("source_line").cast(pl.Int64),
        delivery=pl.lit(f.delivery),
    )


def _open_text(f: LandingFile):
    return gzip.open(f.path, "rb") if f.relpath.lower().endswith(".gz") else open(f.path, "rb")


def _check_text_header(f: LandingFile) -> None:
    """Binary junk would otherwise surface as 'missing mandatory columns'."""
    with _open_text(f) as fh:
        first = fh.readline(1 << 20)
    try:
        first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{f.relpath}: line 1: not UTF-8 text, not a CSV file ({exc.reason} at byte {exc.start})") from exc
    if b"\0" in first:
        raise InputFileError(f"{f.relpath}: line 1: binary data (NUL bytes), not a CSV file")


def _first_bad_csv_line(f: LandingFile) -> InputFileError | None:
    """The file and line of the first CSV line that is not UTF-8 or has more fields than the
    header, or None. Only called once Polars has failed on the file: its error names no line."""

    def lines(fh, position: list[int]):
        for number, raw in enumerate(fh, start=1):
            position[0] = number
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")

    position = [0]
    with _open_text(f) as fh:
        reader = csv.reader(lines(fh, position))
        try:
            width = len(next(reader, []))
            for record in reader:
                if len(record) > width:
                    return InputFileError(f"{f.relpath}: line {position[0]}: {len(record)} fields, the header has {width}")
        except UnicodeDecodeError as exc:
            return InputFileError(f"{f.relpath}: line {position[0]}: not UTF-8 text ({exc.reason} at byte {exc.start} of the line)")
        except csv.Error as exc:
            return InputFileError(f"{f.relpath}: line {position[0]}: {exc}")
    return None


def read_events_raw(f: LandingFile) -> pl.LazyFrame:
    """Every known event field as text, plus source_file/source_line (content fields never read)."""
    _check_readable(f)
    if f.relpath.lower().endswith(".parquet"):
        raw = _scan_parquet_as_text(f, parse.EVENT_FIELDS)
    else:
        struct = pl.Struct({name: pl.String for name in parse.EVENT_FIELDS})
        raw = (
            pl.scan_lines(f.path, name="_json")
            .with_row_index("source_line", offset=1)
            .filter(pl.col("_json").str.strip_chars() != "")
            .select("source_line", pl.col("_json").str.json_decode(struct).alias("_event"))
            .unnest("_event")
        )
    names = raw.collect_schema().names()
    return raw.with_columns(
        [pl.lit(None, dtype=pl.String).alias(c) for c in parse.EVENT_FIELDS if c not in names]
    ).with_columns(source_file=pl.lit(f.relpath), source_line=pl.col("source_line").cast(pl.Int64))


def _first_bad_json_line(f: LandingFile) -> InputFileError | None:
    """The file and line of the first line that is not a JSON object, or None.

    Only called once Polars has failed on the file: its JSON error does not say which line."""
    opener: Callable = gzip.open if f.relpath.lower().endswith(".gz") else open
    with opener(f.path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except (ValueError, UnicodeDecodeError) as exc:
                return InputFileError(f"{f.relpath}: line {number}: not valid JSON ({exc})")
            if not isinstance(value, dict):
                return InputFileError(f"{f.relpath}: line {number}: not a JSON object")
    return None


INVOICE_COLUMNS = ("invoice_id", "billing_account_id", "billing_period", "invoice_total", "currency")


def read_invoices(layout: Layout) -> pl.DataFrame:
    """Accounts-payable invoice totals from landing/invoices/*.csv: columns INVOICE_COLUMNS
    (billing_period YYYY-MM, invoice_total an exact decimal, currency ISO 4217), one line per
    invoice. The files are small and read whole; a bad line fails the run naming file, line, column."""
    from schemas.monthly import BILLING_PERIOD_PATTERN
    from schemas.types import ISO_4217

    frames = []
    for f in list_landing(layout.landing_invoices, (".csv",)):
        _check_readable(f)
        _check_text_header(f)
        try:
            raw = pl.read_csv(f.path, infer_schema=False, null_values=["NULL", ""])
        except Exception as exc:
            raise (_first_bad_csv_line(f) or InputFileError(f"{f.relpath}: cannot be read ({_first_line(exc)})")) from exc
        missing = [c for c in INVOICE_COLUMNS if c not in raw.columns]
        if missing:
            raise InputFileError(f"{f.relpath}: line 1: missing invoice column(s) {', '.join(missing)}")
        problems = [pl.when(pl.col(c).is_null()).then(pl.lit(f"{c} is empty")) for c in INVOICE_COLUMNS] + [
            pl.when(~pl.col("billing_period").str.contains(BILLING_PERIOD_PATTERN)).then(pl.lit("billing_period is not YYYY-MM: ") + pl.col("billing_period").str.slice(0, 40)),
            pl.lit("invoice_total ") + parse.decimal_problem(pl.col("invoice_total")),
            pl.when(~pl.col("currency").is_in(sorted(ISO_4217))).then(pl.lit("currency is not an ISO 4217 code: ") + pl.col("currency").str.slice(0, 40)),
        ]
        checked = raw.with_row_index("line", offset=2).with_columns(problem=pl.coalesce(problems))
        bad = checked.filter(pl.col("problem").is_not_null())
        if not bad.is_empty():
            raise InputFileError(f"{f.relpath}: line {bad['line'][0]}: {bad['problem'][0]}")
        frames.append(checked.with_columns(place=pl.format("{}: line {}", pl.lit(f.relpath), pl.col("line"))))
    schema = {"billing_period": pl.String, "invoice_id": pl.String, "billing_account_id": pl.String, "billing_currency": pl.String, "invoice_total": MONEY}
    if not frames:
        return pl.DataFrame(schema=schema)
    invoices = pl.concat(frames)
    repeated = invoices.filter(pl.col("invoice_id").is_duplicated()).sort("invoice_id", "place")
    if not repeated.is_empty():
        first = repeated.filter(pl.col("invoice_id") == repeated["invoice_id"][0])
        raise InputFileError(f"invoice {first['invoice_id'][0]} is listed more than once: {', '.join(first['place'])}")
    return invoices.select(
        "billing_period", "invoice_id", "billing_account_id", billing_currency=pl.col("currency"),
        invoice_total=parse.parse_decimal(pl.col("invoice_total")),
    )


# --- staging ------------------------------------------------------------------------------------


@dataclass
class StagingReport:
    staged_files: int = 0
    reused_files: int = 0
    removed_files: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    quarantined_rows: int = 0


def _row_count(path: Path) -> int:
    return pl.scan_parquet(path).select(pl.len()).collect().item()


def _stage(outputs: dict[Path, pl.LazyFrame], f: LandingFile, marker: Path, rows_in: pl.LazyFrame, folder: Path) -> None:
    """Write every output of one landing file (read as `rows_in`) into the scratch `folder`, then
    rename them into place, `marker` last: it says the file is staged. The first output holds the
    file's bad rows: found by a second pass over the file only when the other outputs hold fewer
    rows than it has, else written empty.

    One output at a time: sinking them together holds every output's buffers at once (twice the
    memory) for little, the file being Parquet (see _decoded) and reading its columns again cheap."""
    bad, *good = outputs
    parts = {p: folder / f"output-{i}.parquet" for i, p in enumerate(outputs)}
    try:
        for p in good:
            outputs[p].sink_parquet(parts[p], **WRITE_OPTIONS)
        if sum(_row_count(parts[p]) for p in good) < rows_in.select(pl.len()).collect().item():
            outputs[bad].sink_parquet(parts[bad], **WRITE_OPTIONS)
        else:
            pl.DataFrame(schema=outputs[bad].collect_schema()).write_parquet(parts[bad])
    except InputFileError:
        raise
    except Exception as exc:
        raise _unreadable(f, exc) from exc
    if sum(_row_count(part) for part in parts.values()) == 0:
        raise InputFileError(f"{f.relpath}: no data rows (empty or header only)")
    for p in sorted(outputs, key=lambda p: p == marker):
        p.parent.mkdir(parents=True, exist_ok=True)
        os.replace(parts[p], p)


def _unreadable(f: LandingFile, exc: Exception) -> InputFileError:
    name = f.relpath.lower()
    locate = _first_bad_json_line if ".jsonl" in name else _first_bad_csv_line if ".csv" in name else None
    return (locate(f) if locate else None) or InputFileError(f"{f.relpath}: cannot be read ({_first_line(exc)})")


def _decoded(folder: Path, f: LandingFile, read: Callable[[LandingFile], pl.LazyFrame]) -> pl.LazyFrame:
    """`read(f)`, a text file (CSV, JSON lines) decoded once into a Parquet file in the scratch
    `folder` first: staging then reads it in large batches, where a text reader hands out a few
    thousand rows at a time and every batch pays the parsers' fixed cost per batch (about half the
    time on a CSV)."""
    raw = read(f)
    if f.relpath.lower().endswith(".parquet"):
        return raw
    decoded = folder / "decoded.parquet"
    try:
        raw.sink_parquet(decoded, compression="uncompressed", statistics=False)  # read once, soon: speed over size
    except Exception as exc:
        raise _unreadable(f, exc) from exc
    return pl.scan_parquet(decoded)


def _sync(
    files: list[LandingFile],
    marker_dir: Path,
    output_dirs: list[Path],
    stage_one: Callable[[LandingFile], None],
    report: StagingReport,
) -> None:
    wanted = {f.file_id for f in files}
    for f in files:
        if (marker_dir / f"{f.file_id}.parquet").exists():
            report.reused_files += 1
        else:
            stage_one(f)
            report.staged_files += 1
    for directory in output_dirs:
        for old in directory.glob("*.parquet") if directory.is_dir() else []:
            if old.stem not in wanted:
                old.unlink()
                report.removed_files += directory == marker_dir


def focus_outputs(layout: Layout, f: LandingFile, raw: pl.LazyFrame | None = None) -> dict[Path, pl.LazyFrame]:
    """What staging one FOCUS file (read as `raw`, by default read_focus_raw) writes: its bad
    rows, then its typed rows (the marker)."""
    checked = parse.focus_problems(read_focus_raw(f) if raw is None else raw)
    return {
        layout.quarantine("focus") / f"{f.file_id}.parquet": parse.focus_quarantine(checked),
        layout.staged("focus") / f"{f.file_id}.parquet": parse.focus_typed(checked),
    }


def stage_focus(layout: Layout) -> StagingReport:
    """Stage every FOCUS landing file not staged yet; drop staging of files no longer landed."""
    files = list_landing(layout.landing_focus, FOCUS_SUFFIXES)
    staged, quarantine = layout.staged("focus"), layout.quarantine("focus")
    report = StagingReport()

    def stage_one(f: LandingFile) -> None:
        with scratch_folder(layout.tmp, "staging") as folder:
            raw = _decoded(folder, f, read_focus_raw)
            _stage(focus_outputs(layout, f, raw), f, staged / f"{f.file_id}.parquet", raw, folder)

    _sync(files, staged, [staged, quarantine], stage_one, report)
    write_parquet_atomic(deliveries_frame(files), layout.staged("focus_deliveries") / "deliveries.parquet")
    report.rows["focus"] = _total_rows(staged)
    report.quarantined_rows = _total_rows(quarantine)
    return report


def event_outputs(layout: Layout, f: LandingFile, raw: pl.LazyFrame | None = None) -> dict[Path, pl.LazyFrame]:
    """What staging one event file (read as `raw`, by default read_events_raw) writes: bad rows,
    outcomes, then llm_calls (the marker)."""
    checked = parse.events_problems(read_events_raw(f) if raw is None else raw)
    return {
        layout.quarantine("events") / f"{f.file_id}.parquet": parse.events_quarantine(checked),
        layout.staged("outcomes") / f"{f.file_id}.parquet": parse.outcomes_typed(checked),
        layout.staged("llm_calls") / f"{f.file_id}.parquet": parse.llm_calls_typed(checked),
    }


def stage_events(layout: Layout) -> StagingReport:
    """Stage every event landing file not staged yet into staged/llm_calls and staged/outcomes."""
    files = list_landing(layout.landing_events, EVENT_SUFFIXES)
    calls, outcomes, quarantine = layout.staged("llm_calls"), layout.staged("outcomes"), layout.quarantine("events")
    report = StagingReport()

    def stage_one(f: LandingFile) -> None:
        with scratch_folder(layout.tmp, "staging") as folder:
            raw = _decoded(folder, f, read_events_raw)
            _stage(event_outputs(layout, f, raw), f, calls / f"{f.file_id}.parquet", raw, folder)

    _sync(files, calls, [calls, outcomes, quarantine], stage_one, report)
    report.rows["llm_calls"] = _total_rows(calls)
    report.rows["outcomes"] = _total_rows(outcomes)
    report.quarantined_rows = _total_rows(quarantine)
    return report


def _total_rows(directory: Path) -> int:
    files = sorted(directory.glob("*.parquet")) if directory.is_dir() else []
    return sum(_row_count(p) for p in files)


def deliveries_frame(files: list[LandingFile]) -> pl.DataFrame:
    """Each FOCUS delivery (folder) with its rank: newer deliveries rank higher.

    A delivery's time is the newest modification time among its files; ties are broken by the
    folder name. The restatement rule uses the rank: for each billing account and billing period,
    only the highest-ranked delivery that contains it counts."""
    newest: dict[str, int] = {}
    for f in files:
        newest[f.delivery] = max(newest.get(f.delivery, 0), f.mtime_ns)
    order = sorted(newest, key=lambda d: (newest[d], d))
    return pl.DataFrame(
        {
            "delivery": order,
            "delivery_mtime_ns": [newest[d] for d in order],
            "delivery_rank": list(range(1, len(order) + 1)),
        },
        schema={"delivery": pl.String, "delivery_mtime_ns": pl.Int64, "delivery_rank": pl.Int64},
    )


# --- reading staging ------------------------------------------------------------------------------


def _scan_dir(directory: Path, schema_model) -> pl.LazyFrame:
    files = sorted(directory.glob("*.parquet")) if directory.is_dir() else []
    if not files:
        return pl.DataFrame(schema=_polars_schema(schema_model)).lazy()
    return pl.scan_parquet(files)


def _polars_schema(model) -> dict[str, pl.DataType]:
    return {name: col.dtype.type for name, col in model.to_schema().columns.items()}


DELIVERY_KEY = ["BillingAccountId", "BillingPeriodStart"]


def scan_staged_focus_files(layout: Layout) -> pl.LazyFrame:
    """Every staged FOCUS row as staging holds it, superseded deliveries included."""
    from schemas.focus import StagedFocus

    return _scan_dir(layout.staged("focus"), StagedFocus)


def scan_staged_focus(layout: Layout) -> pl.LazyFrame:
    """Current FOCUS rows: staged rows of superseded deliveries removed (see deliveries_frame)."""
    rows = scan_staged_focus_files(layout)
    deliveries_file = layout.staged("focus_deliveries") / "deliveries.parquet"
    if not deliveries_file.exists():
        return rows
    quarantined = _quarantine_keys(_placed_focus_quarantine(layout, rows))
    # A few rows, computed once here rather than again by every query over the current rows
    # (each Pandera check is one): those would each re-rank every staged row.
    current = current_delivery_keys(rows, pl.scan_parquet(deliveries_file), quarantined).collect()
    return rows.join(current.lazy(), on=["delivery", *DELIVERY_KEY], how="semi")


def current_deliveries(rows: pl.LazyFrame, deliveries: pl.LazyFrame, quarantined: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """Keep, per (BillingAccountId, BillingPeriodStart), the rows of its newest delivery only.

    `quarantined` (delivery + DELIVERY_KEY of quarantined rows) takes part in the ranking: a newer
    delivery whose rows of a key were all quarantined still replaces the older one."""
    return rows.join(current_delivery_keys(rows, deliveries, quarantined), on=["delivery", *DELIVERY_KEY], how="semi")


def current_delivery_keys(rows: pl.LazyFrame, deliveries: pl.LazyFrame, quarantined: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """(delivery, *DELIVERY_KEY) of the newest delivery of every key in `rows` (and `quarantined`)."""
    keys = rows.select("delivery", *DELIVERY_KEY)
    if quarantined is not None:
        keys = pl.concat([keys, quarantined])
    return _newest(keys, deliveries).join(deliveries.select("delivery", "delivery_rank"), on="delivery_rank").select(
        "delivery", *DELIVERY_KEY
    )


def _newest(keys: pl.LazyFrame, deliveries: pl.LazyFrame) -> pl.LazyFrame:
    ranked = keys.join(deliveries.select("delivery", "delivery_rank"), on="delivery", how="left")
    return ranked.group_by(DELIVERY_KEY).agg(pl.col("delivery_rank").max())


def delivery_of(source_file: pl.Expr) -> pl.Expr:
    """LandingFile.delivery of a source_file: its folder, '' for a file at the top."""
    return (
        pl.when(source_file.str.contains("/", literal=True))
        .then(source_file.str.replace(r"/[^/]*$", ""))
        .otherwise(pl.lit(""))
    )


def _placed_focus_quarantine(layout: Layout, staged: pl.LazyFrame) -> pl.LazyFrame:
    """Quarantined FOCUS rows with `delivery`, and billing_period_start filled in when the row's own
    is unreadable: the only billing period of its delivery (staged and quarantined rows), if one."""
    from schemas.outputs import Quarantine

    rows = _scan_dir(layout.quarantine("focus"), Quarantine).with_columns(delivery=delivery_of(pl.col("source_file")))
    periods = pl.concat(
        [
            staged.select("delivery", period=pl.col("BillingPeriodStart")),
            rows.select("delivery", period=pl.col("billing_period_start")),
        ]
    ).drop_nulls()
    only_period = periods.group_by("delivery").agg(pl.col("period").unique()).filter(pl.col("period").list.len() == 1)
    return (
        rows.join(only_period.select("delivery", pl.col("period").list.first()), on="delivery", how="left")
        .with_columns(billing_period_start=pl.coalesce("billing_period_start", "period"))
        .drop("period")
    )


def _quarantine_keys(quarantine: pl.LazyFrame) -> pl.LazyFrame:
    return quarantine.select(
        "delivery", BillingAccountId=pl.col("billing_account_id"), BillingPeriodStart=pl.col("billing_period_start")
    ).drop_nulls()


def scan_quarantined_focus(layout: Layout) -> pl.LazyFrame:
    """Current quarantined FOCUS rows (schemas.Quarantine plus `delivery`), placed as
    `_placed_focus_quarantine` does. The restatement rule applies as to staged rows: a row with a
    billing account and period is current when its delivery is the newest of that key; a row
    lacking either, when its delivery is the newest of at least one key."""
    from schemas.focus import StagedFocus

    staged = _scan_dir(layout.staged("focus"), StagedFocus)
    rows = _placed_focus_quarantine(layout, staged)
    deliveries_file = layout.staged("focus_deliveries") / "deliveries.parquet"
    if not deliveries_file.exists():
        return rows
    deliveries = pl.scan_parquet(deliveries_file)
    newest = _newest(pl.concat([staged.select("delivery", *DELIVERY_KEY), _quarantine_keys(rows)]), deliveries)
    ranked = rows.join(deliveries.select("delivery", "delivery_rank"), on="delivery", how="left")
    keyed = pl.col("billing_account_id").is_not_null() & pl.col("billing_period_start").is_not_null()
    current_keyed = ranked.filter(keyed).join(
        newest,
        left_on=["billing_account_id", "billing_period_start", "delivery_rank"],
        right_on=[*DELIVERY_KEY, "delivery_rank"],
        how="semi",
    )
    current_unkeyed = ranked.filter(~keyed).join(newest.select("delivery_rank").unique(), on="delivery_rank", how="semi")
    return pl.concat([current_keyed, current_unkeyed]).drop("delivery_rank")


def scan_staged_calls(layout: Layout) -> pl.LazyFrame:
    from schemas.events import StagedLlmCall

    return _scan_dir(layout.staged("llm_calls"), StagedLlmCall)


def scan_staged_outcomes(layout: Layout) -> pl.LazyFrame:
    from schemas.events import StagedOutcome

    return _scan_dir(layout.staged("outcomes"), StagedOutcome)


def scan_quarantine(layout: Layout) -> pl.LazyFrame:
    from schemas.outputs import Quarantine

    files = sorted(layout.warehouse.glob("quarantine/*/*.parquet"))
    return pl.scan_parquet(files) if files else pl.DataFrame(schema=_polars_schema(Quarantine)).lazy()
