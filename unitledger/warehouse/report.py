"""The report: one self-contained HTML file a finance analyst reads, from already-computed frames.

Pure rendering: the decision tables come in (cost_per_success_trends, break_even/what_if,
money_breakdown, label_coverage, reconciliation; optionally version_regressions and
weighted_cost_per_success), one HTML string goes out. Plotly draws the charts; its JavaScript is
embedded once, so the file opens offline and loads nothing from the network. Every chart has a
caption in plain words and, beside it, a table of the numbers it shows: each cell holds the exact
value in `data-value` and the value rounded for reading as its text. Text from the data (feature
names, model versions) is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

import plotly.graph_objects as go
import plotly.io as pio
import polars as pl
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from unitledger.model.decisions import ACTUAL
from unitledger.warehouse.display import money

# Reconciliation columns the status chart shows, in this order, those the frame has: the billed
# total, then every part of it (schemas.Reconciliation's delta), so the parts shown add up to it.
RECONCILIATION_COLUMNS = {
    "billed_total": "billed total",
    "attributed_cost": "attributed to requests",
    "allocated_cost": "allocated to requests",
    "unlogged_usage_cost": "unlogged usage",
    "unmatched_billing_cost": "billed, unknown to telemetry",
    "late_billing_cost": "billed late",
    "unmatched_pool_cost": "unmatched pools",
    "unrecognized_usage_cost": "unrecognized token rows",
    "conflicting_cost": "conflicting requests",
    "unattributable_cost": "no request (tax, fees, credits)",
    "quarantined_cost": "quarantined rows",
}
STATUS_ORDER = {"ok": 0, "warn": 1, "fail": 2}
COMPONENTS = {
    "first_attempt_cost": "first attempt",
    "multi_turn_cost": "multi-turn tax",
    "retry_cost": "retry tax",
    "tool_cost": "tool calls",
    "cache_write_cost": "cache writes",
    "labor_cost": "labor (failures × L)",
}
_PLOT_CONFIG = {"displaylogo": False, "responsive": True}
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")


@dataclass(frozen=True)
class Column:
    """A table column: the frame's column, its header and how its values read."""

    name: str
    header: str
    kind: str = "text"  # text | count | money | percent | pp | date | flag


def _display(value: object, kind: str) -> str:
    if value is None:
        return "–"
    if kind == "money":
        return money(value)  # as the terminal shows it
    if kind == "percent":
        return f"{100 * float(value):.1f} %"
    if kind == "pp":
        return f"{100 * float(value):.2f} pp"
    if kind == "count":
        return f"{int(value):,}"
    if kind == "flag":
        return "yes" if value else "no: n < 100"
    return str(value)


def _exact(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return str(value)  # Decimal: every digit; ints and text as they are


def _table(frame: pl.DataFrame, columns: Sequence[Column], table_id: str) -> str:
    head = "".join(f'<th scope="col" data-column="{c.name}">{html.escape(c.header)}</th>' for c in columns)
    body = []
    for row in frame.select([c.name for c in columns]).iter_rows(named=True):
        cells = "".join(
            f'<td class="{c.kind}" data-column="{c.name}" data-value="{html.escape(_exact(row[c.name]), quote=True)}">'
            f"{html.escape(_display(row[c.name], c.kind))}</td>"
            for c in columns
        )
        body.append(f"<tr>{cells}</tr>")
    return (
        f'<div class="table-wrap"><table class="numbers" id="{table_id}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _figure(fig: go.Figure, div_id: str, title_y: str, title_x: str = "") -> str:
    # The empty template and a few settings by hand: a named template is deep-copied per figure
    # (most of the rendering time) and written into the page once per chart.
    fig.update_layout(template="none", margin={"l": 60, "r": 20, "t": 40, "b": 50}, legend={"orientation": "h", "y": -0.18},
                      font={"family": "system-ui, sans-serif", "size": 12}, hovermode="closest")
    fig.update_xaxes(gridcolor="#eee", zerolinecolor="#bbb", linecolor="#bbb")
    fig.update_yaxes(gridcolor="#eee", zerolinecolor="#bbb", linecolor="#bbb")
    if not fig.layout.height:
        fig.update_layout(height=460)
    if title_y or title_x:
        fig.update_layout(yaxis_title=title_y, xaxis_title=title_x)
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id, config=_PLOT_CONFIG)


def _section(key: str, title: str, caption: str, chart: str | None, table: str, wide: bool = False) -> str:
    """A chart with its caption and, beside it (below it when `wide`), the table of its numbers."""
    chart_html = f'<div class="chart">{chart}</div>' if chart else '<p class="empty">No data in this window.</p>'
    return (
        f'<section id="{key}"><h2>{html.escape(title)}</h2><p class="caption">{html.escape(caption)}</p>'
        f'<div class="pair{" wide" if wide else ""}">{chart_html}{table}</div></section>'
    )


def _collect(frame: pl.DataFrame | pl.LazyFrame | None) -> pl.DataFrame | None:
    return frame.collect() if isinstance(frame, pl.LazyFrame) else frame


def _label(*parts: object) -> str:
    return " · ".join(_text(p) for p in parts)


def _text(value: object) -> str:
    """Data text for a chart: Plotly reads a few HTML tags in labels, so escape them."""
    return "(none)" if value is None else html.escape(str(value), quote=False)


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def _trend(trends: pl.DataFrame, window_days: int) -> str:
    rows = trends.filter(pl.col("window_days") == window_days).sort("feature_tag", "billing_currency", "date")
    fig = go.Figure()
    for k, ((feature, currency), part) in enumerate(rows.group_by(["feature_tag", "billing_currency"], maintain_order=True)):
        colour = _PALETTE[k % len(_PALETTE)]
        name = f"{_text(feature)} ({_text(currency)})"
        dates = part["date"].to_list()
        fig.add_trace(go.Scatter(x=dates, y=part["ci95_high"].to_list(), mode="lines", line={"width": 0},
                                 legendgroup=name, showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=dates, y=part["ci95_low"].to_list(), mode="lines", line={"width": 0}, fill="tonexty",
                                 fillcolor=_transparent(colour), legendgroup=name, showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=dates, y=part["cost_per_success"].to_list(), mode="lines+markers", name=name,
                                 legendgroup=name, line={"color": colour}))
    columns = [
        Column("date", "last day", "date"), Column("feature_tag", "feature"), Column("billing_currency", "currency"),
        Column("labeled_intents", "labeled intents", "count"), Column("success_rate", "success rate", "percent"),
        Column("cost_per_success", "cost per success", "money"), Column("ci95_low", "95% low", "money"),
        Column("ci95_high", "95% high", "money"), Column("sample_ok", "enough data", "flag"),
    ]
    caption = (
        f"What one successful outcome cost, per feature, over the {window_days} days ending each day: token cost plus "
        "the labor cost of failures, divided by successes. The band is the 95% interval: where it is wide, there "
        "were few labeled intents, and a rise may be noise."
    )
    chart = _figure(fig, "chart-trend", "cost per success (line's currency)") if rows.height else None
    return _section("trend", "Cost per success over time", caption, chart, _table(rows, columns, "table-trend"))


def _break_even(pairs: pl.DataFrame) -> str:
    rows = pairs.sort("feature_tag", "billing_currency", "model_a", "model_b", pl.col("scenario") != ACTUAL, "scenario", nulls_last=True)
    groups = list(rows.group_by(["feature_tag", "billing_currency", "model_a", "model_b"], maintain_order=True))
    per_row = 3
    fig = make_subplots(
        rows=max(1, -(-len(groups) // per_row)), cols=per_row, horizontal_spacing=0.07,
        vertical_spacing=min(0.3, 0.4 / max(1, -(-len(groups) // per_row))),
        subplot_titles=[f"{_text(feature)} ({_text(currency)})<br>{_text(b)} vs {_text(a)}" for (feature, currency, a, b), _ in groups],
    )
    shown: set[str] = set()
    for k, (_, part) in enumerate(groups):
        at = {"row": k // per_row + 1, "col": k % per_row + 1}
        labor = [float(x) for x in part["labor_cost_per_failure"].to_list() if x is not None and float(x) > 0]
        if not labor:
            continue
        low, high = min(labor) / 4, max(labor) * 3
        grid = [low + (high - low) * i / 120 for i in range(121)]
        for row in part.iter_rows(named=True):
            actual = row["scenario"] == ACTUAL
            line = "break-even Δp* = ΔC / L" + ("" if actual else " (what-if)")
            dot = "measured Δp at your L, 95% interval" + ("" if actual else " (what-if)")
            colour = _PALETTE[0] if actual else _PALETTE[1]
            if row["delta_token_cost"] is not None:
                fig.add_trace(go.Scatter(x=grid, y=[100 * row["delta_token_cost"] / x for x in grid], mode="lines", name=line,
                                         legendgroup=line, showlegend=line not in shown,
                                         line={"color": colour, "dash": "solid" if actual else "dash"}), **at)
                shown.add(line)
            if row["delta_failure_rate"] is not None and row["labor_cost_per_failure"] is not None:
                p = 100 * row["delta_failure_rate"]
                fig.add_trace(go.Scatter(
                    x=[float(row["labor_cost_per_failure"])], y=[p], mode="markers", name=dot, legendgroup=dot,
                    showlegend=dot not in shown, marker={"color": colour, "size": 10, "symbol": "circle" if actual else "circle-open"},
                    error_y={"type": "data", "symmetric": False, "array": [100 * row["delta_failure_rate_ci95_high"] - p],
                             "arrayminus": [p - 100 * row["delta_failure_rate_ci95_low"]]},
                ), **at)
                shown.add(dot)
    fig.update_layout(height=max(460, 320 * -(-len(groups) // per_row)))
    fig.update_annotations(font_size=11)
    columns = [
        Column("scenario", "scenario"), Column("feature_tag", "feature"), Column("billing_currency", "currency"),
        Column("model_a", "model a (cheaper tokens)"), Column("model_b", "model b"),
        Column("labeled_intents_a", "labeled a", "count"), Column("labeled_intents_b", "labeled b", "count"),
        Column("token_cost_per_intent_a", "C a: tokens per intent", "money"), Column("token_cost_per_intent_b", "C b", "money"),
        Column("failure_rate_a", "p a: failure rate", "percent"), Column("failure_rate_b", "p b", "percent"),
        Column("labor_cost_per_failure", "L: labor per failure", "money"),
        Column("tco_a", "TCO a = C + p·L", "money"), Column("tco_b", "TCO b", "money"),
        Column("cost_per_success_a", "cost per success a", "money"), Column("cost_per_success_b", "cost per success b", "money"),
        Column("delta_token_cost", "ΔC", "money"), Column("delta_failure_rate", "Δp", "pp"),
        Column("break_even_failure_gap", "break-even Δp* = ΔC / L", "pp"), Column("break_even_labor_cost", "break-even L* = ΔC / Δp", "money"),
        Column("verdict", "verdict"),
    ]
    caption = (
        "Should a feature pay for the pricier model? In each panel, the line is the break-even failure gap "
        "Δp* = ΔC / L: how much less often model b (dearer tokens, by ΔC per intent) must fail than model a to pay "
        "for itself, for each labor cost L of a failure. The dot is the gap measured at your configured L, with its "
        "95% interval: above the line, model b costs less per intent all in; below it, model a. Dashed lines and "
        "open dots are what-if scenarios."
    )
    fig.update_xaxes(title_text="labor cost per failure L")
    fig.update_yaxes(title_text="Δp (pp)")
    chart = _figure(fig, "chart-break-even", "") if shown else None
    return _section("break-even", "Models compared: the break-even", caption, chart, _table(rows, columns, "table-break-even"), wide=True)


def _money(money: pl.DataFrame) -> str:
    token_parts = [c for c in COMPONENTS if c != "labor_cost"]
    rows = money.sort("feature_tag", "billing_currency", "model_version", nulls_last=True).with_columns(
        # The token view: each token component's share of the token cost, labor left out.
        *[(pl.col(c).cast(pl.Float64) / pl.col("token_cost").cast(pl.Float64)).alias(f"{c.removesuffix('_cost')}_token_share")
          for c in token_parts],
        _label=pl.concat_str(pl.col("feature_tag"), pl.lit(" · "), pl.col("model_version").fill_null("(none)"),
                             pl.lit(" ("), pl.col("billing_currency"), pl.lit(")")),
    )
    labels = [_text(x) for x in rows["_label"].to_list()]
    fig = go.Figure()
    views = {"total": [f"{c.removesuffix('_cost')}_share" for c in COMPONENTS], "token": [f"{c.removesuffix('_cost')}_token_share" for c in token_parts]}
    for view, shares in views.items():
        for k, share in enumerate(shares):
            fig.add_trace(go.Bar(y=labels, x=[None if v is None else 100 * v for v in rows[share].to_list()], orientation="h",
                                 name=list(COMPONENTS.values())[k], marker={"color": _PALETTE[k]}, visible=view == "total",
                                 legendgroup=view))
    total, token = len(views["total"]), len(views["token"])
    fig.update_layout(
        barmode="stack", height=max(460, 40 * rows.height + 160),
        updatemenus=[{"type": "buttons", "direction": "right", "x": 0, "y": 1.12, "xanchor": "left", "buttons": [
            {"label": "share of total cost", "method": "update", "args": [{"visible": [True] * total + [False] * token}]},
            {"label": "share of token cost (labor left out)", "method": "update", "args": [{"visible": [False] * total + [True] * token}]},
        ]}],
    )
    columns = [
        Column("feature_tag", "feature"), Column("model_version", "model"), Column("billing_currency", "currency"),
        Column("intents", "intents", "count"), Column("total_cost", "total cost", "money"),
        *[Column(c, name, "money") for c, name in COMPONENTS.items()],
        *[Column(c.removesuffix("_cost") + "_share", f"{name}: share of total", "percent") for c, name in COMPONENTS.items()],
        *[Column(c.removesuffix("_cost") + "_token_share", f"{name}: share of tokens", "percent") for c, name in COMPONENTS.items() if c != "labor_cost"],
        Column("cache_net_savings", "cache net savings", "money"), Column("no_cache_token_cost", "token cost without cache", "money"),
    ]
    caption = (
        "Where each feature's money goes, as shares of its total cost (tokens plus labor): the first attempt of the "
        "first turn, the extra turns, retries and failed calls, tool round trips, cache writes, and the labor cost "
        "of failures; the parts add up to the total exactly. The buttons switch to shares of the token cost alone. "
        "A missing part (tool calls, cache writes) means the billing data does not say; its cost is then inside "
        "the other parts."
    )
    chart = _figure(fig, "chart-money", "", "share (%)") if rows.height else None
    return _section("money", "Where the money goes", caption, chart, _table(rows, columns, "table-money"), wide=True)


def _coverage(coverage: pl.DataFrame) -> str:
    rows = coverage.sort("feature_tag", "week_start")
    fig = go.Figure()
    for k, (feature, part) in enumerate(rows.group_by("feature_tag", maintain_order=True)):
        fig.add_trace(go.Scatter(x=part["week_start"].to_list(), y=[100 * v for v in part["label_coverage"].to_list()],
                                 mode="lines+markers", name=_text(feature[0]), line={"color": _PALETTE[k % len(_PALETTE)]}))
    fig.update_yaxes(range=[0, 105])
    columns = [
        Column("week_start", "week of", "date"), Column("days_in_window", "days", "count"), Column("feature_tag", "feature"),
        Column("intents", "intents", "count"),
        Column("labeled_intents", "labeled intents", "count"), Column("label_coverage", "label coverage", "percent"),
    ]
    caption = (
        "Which share of intents has an outcome label (success or failure) yet. Cost per success counts labeled "
        "intents only: low coverage makes it less certain. Labels land days late, so the latest week is always low; "
        "the first and last weeks may hold only some of their days (days column)."
    )
    chart = _figure(fig, "chart-coverage", "labeled intents (%)", "week") if rows.height else None
    return _section("coverage", "Label coverage", caption, chart, _table(rows, columns, "table-coverage"))


def reconciliation_summary(reconciliation: pl.DataFrame) -> pl.DataFrame:
    """Reconciliation rows summed per billing period and currency (exact sums of the money
    columns present), with the worst status. Telemetry-only rows (no currency) are left out."""
    present = [c for c in RECONCILIATION_COLUMNS if c in reconciliation.columns]
    worst = {v: k for k, v in STATUS_ORDER.items()}
    return (
        reconciliation.filter(pl.col("billing_currency").is_not_null())
        .group_by("billing_period", "billing_currency")
        .agg(*[pl.col(c).sum() for c in present],
             status=pl.col("status").replace_strict(STATUS_ORDER, return_dtype=pl.Int64).max().replace_strict(worst, return_dtype=pl.String))
        .sort("billing_period", "billing_currency")
    )


def _reconciliation(reconciliation: pl.DataFrame) -> str:
    rows = reconciliation_summary(reconciliation)
    present = [c for c in RECONCILIATION_COLUMNS if c in rows.columns]
    labels = [_label(p, c) for p, c in zip(rows["billing_period"].to_list(), rows["billing_currency"].to_list())]
    fig = go.Figure()
    for k, column in enumerate(present):
        fig.add_trace(go.Bar(x=labels, y=[float(v) for v in rows[column].to_list()], name=RECONCILIATION_COLUMNS[column],
                             marker={"color": _PALETTE[k % len(_PALETTE)]}))
    fig.update_layout(barmode="group")
    columns = [
        Column("billing_period", "billing period"), Column("billing_currency", "currency"), Column("status", "status"),
        *[Column(c, RECONCILIATION_COLUMNS[c], "money") for c in present],
    ]
    caption = (
        "Every billed cent, accounted for: the billed total of each month and currency beside where it went "
        "(attributed to logged requests, allocated, billed but unknown to telemetry or billed late, token rows "
        "nobody could recognize, no request at all such as tax and fees, quarantined rows). Status is the worst of the month's rows: warn or fail means look closer."
    )
    chart = _figure(fig, "chart-reconciliation", "amount (row's currency)", "billing period · currency") if rows.height else None
    return _section("reconciliation", "Reconciliation", caption, chart, _table(rows, columns, "table-reconciliation"))


def _tables_only(key: str, title: str, caption: str, frame: pl.DataFrame, columns: Sequence[Column]) -> str:
    return (
        f'<section id="{key}"><h2>{html.escape(title)}</h2><p class="caption">{html.escape(caption)}</p>'
        f"{_table(frame, columns, f'table-{key}')}</section>"
    )


def _regressions(regressions: pl.DataFrame) -> str:
    columns = [
        Column("change_date", "changed on", "date"), Column("feature_tag", "feature"), Column("billing_currency", "currency"),
        Column("change", "what changed"), Column("model_version_before", "model before"), Column("prompt_version_before", "prompt before"),
        Column("model_version_after", "model after"), Column("prompt_version_after", "prompt after"),
        Column("cost_per_success_before", "cost per success before", "money"), Column("cost_per_success_after", "after", "money"),
        Column("difference_ci95_low", "difference 95% low", "money"), Column("difference_ci95_high", "95% high", "money"),
        Column("status", "status"),
    ]
    caption = (
        "When a feature's model or prompt version changed: cost per success before and after, each over the same "
        "number of days. 'regressed' means it rose and the whole 95% interval of the rise is above zero."
    )
    return _tables_only("regressions", "Version changes", caption, regressions, columns)


def _weighted(weighted: pl.DataFrame) -> str:
    columns = [
        Column("billing_currency", "currency"), Column("model_version", "model"), Column("weight_source", "weights"),
        Column("classes_served", "classes served", "count"), Column("classes", "classes", "count"),
        Column("weighted_cost_per_success", "weighted cost per success", "money"),
        Column("ci95_low", "95% low", "money"), Column("ci95_high", "95% high", "money"),
        Column("served_weighted_cost_per_success", "over the classes served", "money"),
        Column("missing_classes", "classes not served"), Column("sample_ok", "enough data", "flag"),
    ]
    caption = (
        "One number per model for your traffic mix: each workflow class's cost per success times the class's "
        "weight, summed. Only a model serving every class has it; the last column renormalizes to what it serves."
    )
    return _tables_only("weighted", "Weighted cost per successful task", caption, weighted, columns)


def _transparent(colour: str) -> str:
    red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},0.18)"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
header p { max-width: 70rem; }
nav a { margin-right: 1rem; }
section { margin: 2.5rem 0; border-top: 1px solid #ddd; padding-top: 1rem; }
.caption { max-width: 70rem; color: #444; }
.pair { display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; }
.chart { flex: 1 1 40rem; min-width: 30rem; min-height: 460px; }
.table-wrap { flex: 1 1 30rem; min-width: 0; max-height: 470px; overflow: auto; }
table.numbers { border-collapse: collapse; font-size: 0.85rem; }
table.numbers th, table.numbers td { border-bottom: 1px solid #eee; padding: 0.2rem 0.5rem; white-space: nowrap; }
table.numbers th { position: sticky; top: 0; background: #f7f7f7; text-align: left; }
td.money, td.count, td.percent, td.pp { text-align: right; font-variant-numeric: tabular-nums; }
.pair.wide { flex-direction: column; align-items: stretch; }
.pair.wide .chart, .pair.wide .table-wrap { flex: none; width: 100%; }
.empty { color: #888; }
"""


# Each chart is drawn as its div is parsed, before the table beside it exists, at the row's full
# width: once the page is laid out, each is redrawn to the width its column got (asynchronously:
# window.chartsFitted resolves when all are).
_FIT_CHARTS = (
    'window.chartsFitted = new Promise(function (done) { window.addEventListener("load", function () {'
    ' done(Promise.all(Array.from(document.querySelectorAll(".plotly-graph-div")).map(function (div) { return Plotly.Plots.resize(div); })));'
    ' }); });'
)


def render_report(
    *,
    title: str,
    generated_at: datetime,
    window_start: date,
    window_end: date,
    trends: pl.DataFrame | pl.LazyFrame,
    break_even: pl.DataFrame | pl.LazyFrame,
    money: pl.DataFrame | pl.LazyFrame,
    label_coverage: pl.DataFrame | pl.LazyFrame,
    reconciliation: pl.DataFrame | pl.LazyFrame,
    regressions: pl.DataFrame | pl.LazyFrame | None = None,
    weighted: pl.DataFrame | pl.LazyFrame | None = None,
    trend_window_days: int = 7,
) -> str:
    """The report as one HTML document. `window_end` is the window's last day (included);
    `generated_at` is printed as given (the caller's clock, never read here)."""
    sections: list[tuple[str, str, Callable[[], str]]] = [
        ("trend", "Cost per success over time", lambda: _trend(_collect(trends), trend_window_days)),
        ("break-even", "Models compared", lambda: _break_even(_collect(break_even))),
        ("money", "Where the money goes", lambda: _money(_collect(money))),
        ("coverage", "Label coverage", lambda: _coverage(_collect(label_coverage))),
        ("reconciliation", "Reconciliation", lambda: _reconciliation(_collect(reconciliation))),
    ]
    if regressions is not None:
        sections.append(("regressions", "Version changes", lambda: _regressions(_collect(regressions))))
    if weighted is not None:
        sections.append(("weighted", "Weighted cost per task", lambda: _weighted(_collect(weighted))))
    nav = "".join(f'<a href="#{key}">{html.escape(name)}</a>' for key, name, _ in sections)
    legend = (
        "Money is in each row's billing currency, rounded for reading (the warehouse keeps it exact, and every cell "
        "here holds the exact value); nothing is added across currencies. Intents none of whose calls were billed "
        "have no currency and are left out of money figures. 'n < 100': fewer than 100 labeled intents, so read the "
        "figure as a hint, not a finding. Cost includes the labor cost L of each failed intent."
    )
    body = "".join(render() for _, _, render in sections)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f"<header><h1>{html.escape(title)}</h1>"
        f"<p>Window: {window_start.isoformat()} to {window_end.isoformat()} (UTC days, both included). "
        f"Generated {html.escape(generated_at.isoformat(timespec='seconds'))}.</p>"
        f'<p class="legend">{html.escape(legend)}</p><nav>{nav}</nav></header>{body}<script>{_FIT_CHARTS}</script></body></html>'
    )
