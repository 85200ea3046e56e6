"""Landing files and the staging machinery every input format shares.

Each landing file is staged once: parsed into typed Parquet (`warehouse/staged/<table>/<id>.parquet`)
and its bad rows into `warehouse/staged/quarantine/<source>/<id>.parquet`. The id is a hash of the file's
path, size and modification time (and STAGING_FORMAT), so a changed or re-delivered file is staged
again and a removed one disappears from staging. Downstream steps read staging only. What a file's
rows become is each format's own module: sources.focus, sources.events.

A file that cannot be read at all (corrupt, truncated, empty, a mandatory column missing, a CSV
record with more or fewer fields than the header, a column named twice) raises InputFileError
naming the file and the place; nothing is staged from it. Line numbers are physical lines: CSV
records start where they start (a quoted field may span lines; blank lines are not records),
JSON lines count blank lines too, Parquet rows are numbered from 1.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv

from unitledger.layout import Layout
from unitledger.warehouse.publish import WRITE_OPTIONS, polars_schema


# Part of every file's id: bumped when what staging writes from a file changes (columns, line
# numbers), so that an upgraded pipeline stages every landing file again.
STAGING_FORMAT = 3

_CSV_BLOCK_BYTES = 4 << 20  # bytes Arrow parses at a time (a longer record is still read whole)


class InputFileError(Exception):
    """A landing file that cannot be read; the message names the file and the place."""


@dataclass(frozen=True)
class LandingFile:
    path: Path
    relpath: str  # relative to its landing folder, '/'-separated
    size: int
    mtime_ns: int
    # Which reader and settings the file is staged with, when that is not its folder's only one
    # (telemetry: "otlp:<settings digest>"): part of the id, so the same name in another folder, or
    # the same file read with other settings, is staged apart.
    reader: str = ""

    @property
    def file_id(self) -> str:
        key = f"{STAGING_FORMAT}\0{self.relpath}\0{self.size}\0{self.mtime_ns}".encode()
        if self.reader:
            key += f"\0{self.reader}".encode()
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


def check_readable(f: LandingFile) -> None:
    if f.size == 0:
        raise InputFileError(f"{f.relpath}: empty file (0 bytes)")
    if f.relpath.lower().endswith(".gz"):
        try:
            with gzip.open(f.path, "rb") as fh:
                while fh.read(1 << 20):
                    pass
        except (OSError, EOFError, zlib.error) as exc:
            raise InputFileError(f"{f.relpath}: corrupt gzip data ({exc})") from exc


def scan_parquet_as_text(f: LandingFile, wanted: tuple[str, ...]) -> pl.LazyFrame:
    try:
        names = pl.scan_parquet(f.path, glob=False).collect_schema().names()
    except Exception as exc:  # polars raises several types for a broken footer
        raise InputFileError(f"{f.relpath}: not a readable Parquet file ({first_line(exc)})") from exc
    present = [c for c in wanted if c in names]
    return pl.scan_parquet(f.path, glob=False).select(
        [pl.col(c).cast(pl.String) for c in present]
    ).with_row_index("source_line", offset=1)


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _open_text(f: LandingFile):
    return gzip.open(f.path, "rb") if f.relpath.lower().endswith(".gz") else open(f.path, "rb")


def check_text_header(f: LandingFile) -> None:
    """Binary junk would otherwise surface as 'missing mandatory columns'."""
    with _open_text(f) as fh:
        first = fh.readline(1 << 20)
    try:
        first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{f.relpath}: line 1: not UTF-8 text, not a CSV file ({exc.reason} at byte {exc.start})") from exc
    if b"\0" in first:
        raise InputFileError(f"{f.relpath}: line 1: binary data (NUL bytes), not a CSV file")


def read_csv_header(f: LandingFile) -> list[str]:
    """The column names of a CSV file's header (its first record). A name given twice refuses the
    file: which of the two columns holds the values cannot be known."""
    check_text_header(f)
    with _open_text(f) as fh:
        text = (raw.decode("utf-8-sig" if number == 0 else "utf-8") for number, raw in enumerate(fh))
        try:
            header = next(csv.reader(text, strict=True), [])
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InputFileError(f"{f.relpath}: line 1: cannot read the CSV header ({exc})") from exc
    if not header:
        raise InputFileError(f"{f.relpath}: line 1: no header (the first line is blank)")
    repeated = [f"{name or chr(34) * 2} appears {count} times" for name, count in Counter(header).items() if count > 1]
    if repeated:
        raise InputFileError(f"{f.relpath}: line 1: the header names a column more than once: {', '.join(repeated)}")
    return header


@dataclass(frozen=True)
class CsvShape:
    records: int  # data records, blank lines not counted
    lines: int  # physical lines, the header's included


class _CountingReader:
    """A binary stream that counts the newline bytes read through it (physical lines)."""

    def __init__(self, fh) -> None:
        self.fh, self.newlines, self.last, self.closed = fh, 0, b"", False

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size)
        if data:
            self.newlines += data.count(b"\n")
            self.last = data[-1:]
        return data

    def close(self) -> None:
        self.closed = True


def check_csv_records(f: LandingFile, header: list[str]) -> CsvShape:
    """Refuse a CSV file any of whose records has more or fewer fields than its header; count its
    records and physical lines.

    Polars cannot do this check: when only some columns are read it ignores fields past the header
    (an unquoted comma in Tags shifts the columns after it) and it pads a short record (an export cut
    mid-row) with nulls, with or without a projection. Arrow's CSV parser counts every record's
    fields, quote-aware, newlines inside quoted fields included, in one pass converting a single
    column: about 2.4 s of CPU per million 69-column rows (docs/performance.md). Blank lines are not
    records."""
    first_bad: list = []

    def refuse(row) -> str:
        first_bad.append(row)
        return "error"

    with _open_text(f) as raw:
        stream = _CountingReader(raw)
        try:
            reader = pa_csv.open_csv(
                stream,
                read_options=pa_csv.ReadOptions(block_size=_CSV_BLOCK_BYTES),
                parse_options=pa_csv.ParseOptions(newlines_in_values=True, invalid_row_handler=refuse),
                convert_options=pa_csv.ConvertOptions(include_columns=header[:1], column_types={header[0]: pa.binary()}),
            )
            records = sum(batch.num_rows for batch in reader)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            located = first_bad_csv_line(f)
            if located:
                raise located from exc
            if first_bad:
                row = first_bad[0]
                raise InputFileError(
                    f"{f.relpath}: a record has {row.actual_columns} fields, the header has {row.expected_columns}: {row.text[:80]}"
                ) from exc
            raise InputFileError(f"{f.relpath}: cannot be read as CSV ({first_line(exc)})") from exc
    return CsvShape(records=records, lines=stream.newlines + (stream.last not in (b"", b"\n")))


def scan_csv_text(f: LandingFile, wanted: tuple[str, ...]) -> pl.LazyFrame:
    """The columns of `wanted` that the CSV file's header names, as text (empty cells and `NULL`
    null), and `source_line`: the physical line where each record starts, the header being line 1
    (a quoted field spanning lines moves the records after it down). Blank lines are skipped. The
    file's header and records are checked first (read_csv_header, check_csv_records)."""
    header = read_csv_header(f)
    shape = check_csv_records(f, header)
    present = [c for c in wanted if c in header]
    # Real exports write nulls as empty cells, quoted empty strings or NULL.
    raw = pl.scan_csv(f.path, infer_schema=False, null_values=["NULL", ""], glob=False).select(present)
    if shape.lines == shape.records + 1:  # one line per record: the usual file, numbered as read
        return raw.with_row_index("source_line", offset=2).with_columns(pl.col("source_line").cast(pl.Int64))
    starts, blank = _record_start_lines(f)
    try:
        parsed = pl.scan_csv(f.path, infer_schema=False, glob=False).select(pl.len()).collect().item()
    except Exception as exc:  # polars raises several types for a malformed file
        raise _unreadable(f, exc) from exc
    if parsed != len(starts):
        raise InputFileError(f"{f.relpath}: its quoting is ambiguous: {parsed} records read, {len(starts)} found line by line")
    lines = pl.DataFrame({"source_line": starts, "_blank": blank}, schema={"source_line": pl.Int64, "_blank": pl.Boolean})
    return pl.concat([raw, lines.lazy()], how="horizontal").filter(~pl.col("_blank")).drop("_blank")


def _record_start_lines(f: LandingFile) -> tuple[list[int], list[bool]]:
    """The physical line each data record starts on, and whether it is a blank line (Polars reads
    one as a record of nulls): a record starts on every line begun outside quotes. Only for files
    whose records and lines differ in number, so a plain loop."""
    starts, blank, inside = [], [], False
    with _open_text(f) as fh:
        for number, line in enumerate(fh, start=1):
            if not inside:
                starts.append(number)
                blank.append(line.rstrip(b"\r\n") == b"")
            inside ^= line.count(b'"') % 2 == 1
    return starts[1:], blank[1:]


def first_bad_csv_line(f: LandingFile) -> InputFileError | None:
    """The file and line (where the record starts) of the first CSV record that is not UTF-8, has
    another number of fields than the header, or is not well quoted, or None. Only called once a
    reader has failed on the file: its error names no line. Fields are counted as Arrow and Polars
    count them (a quote inside an unquoted field is a character); the quoting is checked after."""
    return _first_bad_record(f, strict=False) or _first_bad_record(f, strict=True)


def _first_bad_record(f: LandingFile, strict: bool) -> InputFileError | None:
    def lines(fh, position: list[int]):
        for number, raw in enumerate(fh, start=1):
            position[0] = number
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")

    position = [0]
    start = 1
    with _open_text(f) as fh:
        reader = csv.reader(lines(fh, position), strict=strict)
        try:
            width = len(next(reader, []))
            start = position[0] + 1
            for record in reader:
                if record and len(record) != width:  # a blank line is no record
                    cut = len(record) < width and next(reader, None) is None
                    return InputFileError(
                        f"{f.relpath}: line {start}: {len(record)} fields, the header has {width}"
                        + (": the file ends inside this record (truncated?)" if cut else "")
                    )
                start = position[0] + 1
        except UnicodeDecodeError as exc:
            return InputFileError(f"{f.relpath}: line {position[0]}: not UTF-8 text ({exc.reason} at byte {exc.start} of the line)")
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                return InputFileError(f"{f.relpath}: line {start}: a quoted field is not closed before the end of the file (truncated?)")
            return InputFileError(f"{f.relpath}: line {start}: {exc}")
    return None


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


# --- staging ------------------------------------------------------------------------------------


@dataclass
class StagingReport:
    staged_files: int = 0
    reused_files: int = 0
    removed_files: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    quarantined_rows: int = 0
    duplicate_events: int = 0  # later copies of an event delivered more than once: not counted in rows


def _row_count(path: Path) -> int:
    return pl.scan_parquet(path, glob=False).select(pl.len()).collect().item()


def stage_file(outputs: dict[Path, pl.LazyFrame], f: LandingFile, marker: Path, rows_in: pl.LazyFrame, folder: Path) -> None:
    """Write every output of one landing file (read as `rows_in`) into the scratch `folder`, then
    rename them into place, `marker` last: it says the file is staged. The first output holds the
    file's bad rows: found by a second pass over the file only when the other outputs hold fewer
    rows than it has, else written empty.

    One output at a time: sinking them together holds every output's buffers at once (twice the
    memory) for little, the file being Parquet (see decoded) and reading its columns again cheap."""
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
    locate = _first_bad_json_line if ".jsonl" in name else first_bad_csv_line if ".csv" in name else None
    return (locate(f) if locate else None) or InputFileError(f"{f.relpath}: cannot be read ({first_line(exc)})")


def decoded(folder: Path, f: LandingFile, read: Callable[[LandingFile], pl.LazyFrame]) -> pl.LazyFrame:
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
    return pl.scan_parquet(decoded, glob=False)


def sync_staging(
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


def total_rows(directory: Path) -> int:
    files = sorted(directory.glob("*.parquet")) if directory.is_dir() else []
    return sum(_row_count(p) for p in files)


# --- reading staging ------------------------------------------------------------------------------


def scan_dir(directory: Path, schema_model) -> pl.LazyFrame:
    files = sorted(directory.glob("*.parquet")) if directory.is_dir() else []
    if not files:
        return pl.DataFrame(schema=polars_schema(schema_model)).lazy()
    return pl.scan_parquet(files, glob=False)


def scan_quarantine(layout: Layout) -> pl.LazyFrame:
    from schemas.outputs import Quarantine

    files = sorted(layout.staged("quarantine").glob("*/*.parquet"))  # the staged bad rows of every source
    return pl.scan_parquet(files, glob=False) if files else pl.DataFrame(schema=polars_schema(Quarantine)).lazy()
