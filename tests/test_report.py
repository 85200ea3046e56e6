"""The HTML report: rendered from hand-built frames, parsed back with the standard library's HTML
parser (every number in its tables must equal the frames it was given), then opened in a real
headless browser (Debian's chromium driven by Playwright): no console errors, no network, every
chart drawn, a screenshot that is not blank."""

from __future__ import annotations

import struct
import zlib
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest

from schemas.types import MONEY
from tests.test_decisions import BUDGET, CALLS, DAY1, FRONTIER, Intent, daily_rows, intents_frame, labor_table, requests_frame
from unitledger.model import decisions
from unitledger.warehouse.report import render_report

CHROMIUM = Path("/usr/bin/chromium")
HOSTILE = '<script>alert("feature")</script>'
START, END = DAY1, DAY1 + timedelta(days=14)


def reconciliation_frame() -> pl.DataFrame:
    """Two USD rows of March (ok and warn), one EUR row, one telemetry-only row (no currency).
    No allocation columns: the report shows what exists."""
    return pl.DataFrame(
        {
            "billing_period": ["2026-03", "2026-03", "2026-03", "2026-03"],
            "billing_currency": ["USD", "USD", "EUR", None],
            "status": ["ok", "warn", "ok", "warn"],
            "billed_total": [Decimal("100.10"), Decimal("20.005"), Decimal("50"), Decimal("0")],
            "attributed_cost": [Decimal("90.10"), Decimal("15.005"), Decimal("40"), Decimal("0")],
            "unattributable_cost": [Decimal("10"), Decimal("5"), Decimal("10"), Decimal("0")],
        },
        schema_overrides={c: MONEY for c in ("billed_total", "attributed_cost", "unattributable_cost")},
    )


def frames() -> dict[str, pl.DataFrame]:
    extra = [Intent(DAY1 + timedelta(days=k % 10), "budget-1", "success" if k % 3 else "failure", Decimal("0.30"),
                    Decimal("75"), feature=HOSTILE) for k in range(60)]
    extra += [Intent(DAY1 + timedelta(days=k % 10), "frontier-1", "success" if k % 9 else "failure", Decimal("1.10"),
                     Decimal("75"), feature=HOSTILE) for k in range(40)]
    rows = daily_rows(BUDGET + FRONTIER + extra)
    breakdown = decisions.cost_breakdown(requests_frame(CALLS), intents_frame())
    scenario = decisions.Scenario("cheaper frontier", price_multipliers={"frontier-1": Decimal("0.5")})
    return {
        "trends": decisions.cost_per_success_trends(rows, START, END).collect(),
        "break_even": decisions.what_if(rows, labor_table(), START, END, scenario).collect(),
        "money": decisions.money_breakdown(breakdown, START, END).collect(),
        "label_coverage": decisions.label_coverage(rows, START, END).collect(),
        "reconciliation": reconciliation_frame(),
        "regressions": decisions.version_regressions(rows, START, END).collect(),
    }


def render(inputs: dict[str, pl.DataFrame]) -> str:
    return render_report(
        title="unitledger report", generated_at=datetime(2026, 3, 17, 2, 0, tzinfo=timezone.utc),
        window_start=START, window_end=END - timedelta(days=1), **inputs,
    )


class Page(HTMLParser):
    """Tables by id (rows of {column: (exact value, text)}), script and link sources, chart divs."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[dict[str, tuple[str, str]]]] = {}
        self.sources: list[str] = []
        self.charts: list[str] = []
        self._table: str | None = None
        self._cell: tuple[str, str] | None = None
        self._text = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "img", "iframe") and a.get("src"):
            self.sources.append(a["src"])
        if tag == "link" and a.get("href"):
            self.sources.append(a["href"])
        if tag == "div" and "plotly-graph-div" in (a.get("class") or ""):
            self.charts.append(a["id"])
        if tag == "table":
            self._table = a["id"]
            self.tables[self._table] = []
        if tag == "tr" and self._table:
            self.tables[self._table].append({})
        if tag == "td" and self._table:
            self._cell, self._text = (a["data-column"], a["data-value"]), ""

    def handle_data(self, data):
        if self._cell:
            self._text += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell:
            column, value = self._cell
            self.tables[self._table][-1][column] = (value, self._text)
            self._cell = None
        if tag == "table":
            self._table = None


def parsed(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.tables = {k: [r for r in rows if r] for k, rows in page.tables.items()}  # header rows hold no td
    return page


def read_number(text: str) -> float:
    return float(text.replace(",", "").replace("%", "").replace("pp", "").strip())


def assert_cells_equal(cells: list[dict[str, tuple[str, str]]], frame: pl.DataFrame, kinds: dict[str, str]):
    """Each cell's exact value equals the frame's, and its text is that value rounded for reading."""
    assert len(cells) == frame.height
    for cell_row, row in zip(cells, frame.iter_rows(named=True)):
        for column, kind in kinds.items():
            exact, text = cell_row[column]
            value = row[column]
            if value is None:
                assert (exact, text) == ("", "–"), column
                continue
            if kind == "money":
                number = Decimal(exact) if isinstance(value, Decimal) else float(exact)
                assert number == value, column
                unit = 0.01 if abs(value) >= 1 else 0.0001
                assert abs(read_number(text) - float(value)) <= unit / 2 + 1e-12, (column, text, value)
            elif kind in ("percent", "pp"):
                assert float(exact) == value
                assert abs(read_number(text) - 100 * value) <= (0.05 if kind == "percent" else 0.005) + 1e-9, (column, text)
            elif kind == "count":
                assert int(exact) == value and int(text.replace(",", "")) == value
            elif kind == "date":
                assert exact == text == value.isoformat()
            else:
                assert exact == text == str(value), column


def test_tables_hold_the_numbers_of_the_frames():
    inputs = frames()
    page = parsed(render(inputs))
    trend = inputs["trends"].filter(pl.col("window_days") == 7).sort("feature_tag", "billing_currency", "date")
    assert trend.height > 0
    assert_cells_equal(page.tables["table-trend"], trend, {
        "date": "date", "feature_tag": "text", "billing_currency": "text", "labeled_intents": "count",
        "success_rate": "percent", "cost_per_success": "money", "ci95_low": "money", "ci95_high": "money",
    })
    pairs = inputs["break_even"].sort("feature_tag", "billing_currency", "model_a", "model_b", pl.col("scenario") != "actual")
    assert pairs["scenario"].to_list() == ["actual", "cheaper frontier", "actual", "cheaper frontier"]
    assert_cells_equal(page.tables["table-break-even"], pairs, {
        "scenario": "text", "feature_tag": "text", "model_a": "text", "model_b": "text", "labeled_intents_a": "count",
        "token_cost_per_intent_a": "money", "token_cost_per_intent_b": "money", "failure_rate_a": "percent",
        "failure_rate_b": "percent", "labor_cost_per_failure": "money", "tco_a": "money", "tco_b": "money",
        "delta_token_cost": "money", "delta_failure_rate": "pp", "break_even_failure_gap": "pp",
        "break_even_labor_cost": "money", "verdict": "text",
    })
    reference = next(r for r in page.tables["table-break-even"] if r["feature_tag"][1] == "support_chat" and r["scenario"][1] == "actual")
    assert (reference["tco_a"][1], reference["tco_b"][1]) == ("33.83", "7.04")  # the case, as the analyst reads it
    assert reference["break_even_failure_gap"][1] == "1.28 pp"
    money = inputs["money"]
    token_shares = money.with_columns(  # computed here, apart from the report: component / token cost
        first_attempt_token_share=pl.col("first_attempt_cost").cast(pl.Float64) / pl.col("token_cost").cast(pl.Float64),
        retry_token_share=pl.col("retry_cost").cast(pl.Float64) / pl.col("token_cost").cast(pl.Float64),
    )
    assert_cells_equal(page.tables["table-money"], token_shares, {
        "total_cost": "money", "first_attempt_cost": "money", "multi_turn_cost": "money", "retry_cost": "money",
        "tool_cost": "money", "cache_write_cost": "money", "labor_cost": "money", "labor_share": "percent",
        "first_attempt_token_share": "percent", "retry_token_share": "percent", "cache_net_savings": "money",
    })
    assert_cells_equal(page.tables["table-coverage"], inputs["label_coverage"].sort("feature_tag", "week_start"), {
        "week_start": "date", "feature_tag": "text", "intents": "count", "labeled_intents": "count", "label_coverage": "percent",
    })


def test_reconciliation_shows_what_exists_summed_per_month_and_currency():
    page = parsed(render(frames()))
    rows = page.tables["table-reconciliation"]
    # By hand: USD 100.10 + 20.005, worst status warn; EUR as is; the row without currency left out.
    expected = [
        ("2026-03", "EUR", "ok", Decimal("50"), Decimal("40"), Decimal("10")),
        ("2026-03", "USD", "warn", Decimal("120.105"), Decimal("105.105"), Decimal("15")),
    ]
    got = [
        (r["billing_period"][1], r["billing_currency"][1], r["status"][1], Decimal(r["billed_total"][0]),
         Decimal(r["attributed_cost"][0]), Decimal(r["unattributable_cost"][0]))
        for r in rows
    ]
    assert got == expected
    assert [r["billed_total"][1] for r in rows] == ["50.00", "120.11"]  # exact decimals round half up for reading
    assert all("allocated_cost" not in r for r in rows)


def test_reconciliation_parts_shown_add_up_to_the_billed_total():
    # Every part of billed_total as schemas.Reconciliation's delta names them, each a different
    # amount, so that one the report leaves out breaks the sum.
    parts = ["attributed_cost", "unmatched_billing_cost", "late_billing_cost", "conflicting_cost", "allocated_cost",
             "unlogged_usage_cost", "unmatched_pool_cost", "unrecognized_usage_cost", "unattributable_cost", "quarantined_cost"]
    amounts = {c: Decimal(k + 1) / 100 for k, c in enumerate(parts)}
    row = pl.DataFrame(
        {"billing_period": ["2026-03"], "billing_currency": ["USD"], "status": ["ok"],
         "billed_total": [sum(amounts.values())], **{c: [v] for c, v in amounts.items()}},
        schema_overrides={c: MONEY for c in ["billed_total", *parts]},
    )
    [shown] = parsed(render({**frames(), "reconciliation": row})).tables["table-reconciliation"]
    assert sorted(c for c in shown if c.endswith("_cost")) == sorted(parts)
    assert sum(Decimal(shown[c][0]) for c in parts) == Decimal(shown["billed_total"][0]) == Decimal("0.55")


def test_self_contained_and_escaped():
    text = render(frames())
    page = parsed(text)
    assert not [s for s in page.sources if s.lower().startswith(("http:", "https:", "//"))]
    assert text.count("* plotly.js v") == 1  # the library embedded once
    assert page.charts == ["chart-trend", "chart-break-even", "chart-money", "chart-coverage", "chart-reconciliation"]
    assert HOSTILE not in text  # data text never becomes markup
    assert any(r["feature_tag"][1] == HOSTILE for r in page.tables["table-trend"])  # shown as text


def test_empty_sections_say_so():
    empty = {k: v.clear() for k, v in frames().items()}
    text = render(empty)
    assert text.count("No data in this window.") == 5
    assert parsed(text).charts == []


# ---------------------------------------------------------------------------------------------
# A real browser
# ---------------------------------------------------------------------------------------------


def png_colours(data: bytes, limit: int = 2) -> int:
    """Distinct colours of an 8-bit RGB or RGBA PNG (up to `limit`): a small PNG decoder, so the
    check does not rely on the browser that drew the page."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and colour_type in (2, 6) and interlace == 0
            channels = 3 if colour_type == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw, stride = zlib.decompress(idat), width * channels
    previous, seen = bytearray(stride), set()
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, up_left = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else up_left)) & 255
        for x in range(0, stride, channels * 7):  # every 7th pixel is plenty to tell blank from drawn
            seen.add(bytes(line[x : x + channels]))
            if len(seen) >= limit:
                return len(seen)
        previous = line
    return len(seen)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install -y chromium) to run the browser test")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync"],
        )
        yield launched
        launched.close()


def overlapping_charts(page) -> list[str]:
    """Charts whose drawing covers the table of their numbers (beside or below it), once the page
    has fitted them to their columns."""
    page.evaluate("() => window.chartsFitted")
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('.pair')).flatMap(pair => {
            const svg = pair.querySelector('.plotly-graph-div svg.main-svg'), table = pair.querySelector('.table-wrap');
            if (!svg || !table) return [];
            const a = svg.getBoundingClientRect(), b = table.getBoundingClientRect();
            const apart = a.right <= b.left + 1 || b.right <= a.left + 1 || a.bottom <= b.top + 1 || b.bottom <= a.top + 1;
            return apart ? [] : [pair.querySelector('.plotly-graph-div').id];
        })"""
    )


def test_report_opens_in_headless_chromium(browser, tmp_path: Path):
    inputs = frames()
    report = tmp_path / "report.html"
    report.write_text(render(inputs))
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    problems, requests = [], []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))
    page.goto(report.as_uri(), wait_until="load")
    assert problems == []
    assert [u for u in requests if not u.startswith(("file:", "data:", "blob:", "about:"))] == []
    drawn = page.evaluate(
        """() => Array.from(document.querySelectorAll('.plotly-graph-div')).map(div => [
            div.id, div.querySelectorAll('svg.main-svg').length, div.querySelectorAll('g.trace').length])"""
    )
    assert [d[0] for d in drawn] == ["chart-trend", "chart-break-even", "chart-money", "chart-coverage", "chart-reconciliation"]
    assert all(svgs > 0 and traces > 0 for _, svgs, traces in drawn), drawn
    assert overlapping_charts(page) == []
    # The numbers the browser shows are the frames': the reference pair's TCOs, read from the DOM.
    cells = page.evaluate(
        """() => Array.from(document.querySelectorAll('#table-break-even tbody tr')).map(tr =>
            Object.fromEntries(Array.from(tr.cells).map(td => [td.dataset.column, td.dataset.value])))"""
    )
    actual = inputs["break_even"].filter((pl.col("scenario") == "actual") & (pl.col("feature_tag") == "support_chat")).row(0, named=True)
    shown = next(c for c in cells if c["scenario"] == "actual" and c["feature_tag"] == "support_chat")
    assert float(shown["tco_a"]) == actual["tco_a"] and float(shown["tco_b"]) == actual["tco_b"]
    for chart in ("chart-trend", "chart-break-even", "chart-money"):
        assert png_colours(page.locator(f"#{chart}").screenshot()) >= 2, f"{chart} is blank"
    assert png_colours(page.screenshot(full_page=True)) >= 2
    page.close()


def test_png_colours_tells_blank_from_drawn():
    """The checker itself: a one-colour PNG counts 1, a two-colour one 2 (built here by hand)."""
    def png(pixels: list[list[tuple[int, int, int]]]) -> bytes:
        raw = b"".join(b"\x00" + bytes(c for px in row for c in px) for row in pixels)
        def chunk(kind: bytes, body: bytes) -> bytes:
            return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        header = struct.pack(">IIBBBBB", len(pixels[0]), len(pixels), 8, 2, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")

    white = (255, 255, 255)
    assert png_colours(png([[white] * 20 for _ in range(5)])) == 1
    assert png_colours(png([[white] * 20 for _ in range(4)] + [[(0, 0, 0)] * 20])) == 2
