"""FOCUS Cost and Usage exports (1.0–1.4): the columns read, each row's problems, its typed row or
quarantine record; reading and staging a file; the restatement rule (per billing account and billing
period only the newest delivery counts) and the scans of staged and quarantined FOCUS rows."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from schemas.types import CHARGE_CATEGORIES, CHARGE_CLASSES, ISO_4217
from unitledger.layout import Layout
from unitledger.sources.files import (
    InputFileError,
    LandingFile,
    StagingReport,
    check_readable,
    decoded,
    list_landing,
    scan_dir,
    scan_csv_text,
    scan_parquet_as_text,
    stage_file,
    sync_staging,
    total_rows,
)
from unitledger.sources.values import (
    Problem,
    decimal_problems,
    describe_problems,
    one_of,
    parse_money,
    parse_timestamp,
    parsed_column,
    problem,
    required,
    ts_problem,
    with_problems,
)
from unitledger.warehouse.publish import scratch_folder, write_parquet_atomic


# Columns the pipeline reads from a FOCUS export. Mandatory ones must be present in every file
# (ServiceProviderName may come as FOCUS 1.0-1.2 ProviderName); optional ones become null.
FOCUS_MANDATORY = (
    "BilledCost",
    "EffectiveCost",
    "ListCost",
    "BillingAccountId",
    "BillingCurrency",
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargeCategory",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ServiceProviderName",
)

FOCUS_OPTIONAL = (
    "BillingAccountName",
    "ChargeClass",
    "ChargeDescription",
    "ContractedCost",
    "ConsumedQuantity",
    "ConsumedUnit",
    "InvoiceId",
    "InvoiceIssuerName",
    "ResourceId",
    "ResourceName",
    "ServiceName",
    "SkuId",
    "SkuMeter",
    "SkuPriceDetails",
    "SubAccountId",
    "SubAccountName",
    "Tags",
    "x_RequestId",
    "x_ModelVersion",
    "x_PromptVersion",
    "x_FeatureTag",
    "x_SkuMeterName",
    "x_UsageType",
)

FOCUS_COLUMNS = FOCUS_MANDATORY + FOCUS_OPTIONAL

# Older FOCUS versions' names for columns 1.3 renamed.
FOCUS_LEGACY_NAMES = {"ServiceProviderName": "ProviderName"}

FOCUS_MONEY_COLUMNS = ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "ConsumedQuantity")

FOCUS_TIMESTAMP_COLUMNS = ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd")

FOCUS_SUFFIXES = (".csv", ".csv.gz", ".parquet")

DELIVERY_KEY = ["BillingAccountId", "BillingPeriodStart"]


# --- rows -----------------------------------------------------------------------------------------


def _focus_problems() -> dict[str, list[Problem]]:
    problems: dict[str, list[Problem]] = {}
    for name in FOCUS_MANDATORY:
        problems.setdefault(name, []).append(required(name))
    for name in FOCUS_MONEY_COLUMNS:
        problems.setdefault(name, []).extend(decimal_problems(pl.col(name), pl.col(parsed_column(name))))
    for name in FOCUS_TIMESTAMP_COLUMNS:
        problems[name].append(ts_problem(name))
    problems["ChargeCategory"].append(one_of("ChargeCategory", CHARGE_CATEGORIES, "a FOCUS ChargeCategory"))
    problems.setdefault("ChargeClass", []).append(one_of("ChargeClass", CHARGE_CLASSES, "a FOCUS ChargeClass"))
    problems["BillingCurrency"].append(one_of("BillingCurrency", ISO_4217, "an ISO 4217 currency code"))
    for start, end in (("ChargePeriodStart", "ChargePeriodEnd"), ("BillingPeriodStart", "BillingPeriodEnd")):
        problems[start].append(problem(pl.col(parsed_column(start)) >= pl.col(parsed_column(end)), f"is not before {end}"))
    return problems


def focus_problems(raw: pl.LazyFrame) -> pl.LazyFrame:
    """Raw FOCUS text rows with `_bad` and the parsed money (`parse_money`) and timestamp columns
    (hidden) added."""
    parsed = raw.with_columns(
        **{parsed_column(name): parse_money(pl.col(name)) for name in FOCUS_MONEY_COLUMNS},
        **{parsed_column(name): parse_timestamp(pl.col(name)) for name in FOCUS_TIMESTAMP_COLUMNS},
    )
    return with_problems(parsed, _focus_problems())


def focus_typed(checked: pl.LazyFrame) -> pl.LazyFrame:
    """The good rows of `focus_problems`, typed as schemas.StagedFocus."""
    from schemas.focus import StagedFocus

    typed = {name: pl.col(parsed_column(name)).struct.field("value") for name in FOCUS_MONEY_COLUMNS}
    typed |= {name: pl.col(parsed_column(name)) for name in FOCUS_TIMESTAMP_COLUMNS}
    return (
        checked.filter(~pl.col("_bad"))
        .with_columns(**typed)
        .with_columns(charge_date=pl.col("ChargePeriodStart").dt.date())
        .select(list(StagedFocus.to_schema().columns))
    )


def focus_quarantine(checked: pl.LazyFrame) -> pl.LazyFrame:
    """The bad rows of `focus_problems` as schemas.Quarantine records; their cost is kept when it parses."""
    return describe_problems(checked.filter(pl.col("_bad")), _focus_problems()).select(
        source=pl.lit("focus"),
        source_file=pl.col("source_file"),
        source_line=pl.col("source_line"),
        column=pl.col("_columns"),
        reason=pl.col("_reason"),
        raw=pl.struct(FOCUS_COLUMNS).struct.json_encode(),
        billing_account_id=pl.col("BillingAccountId"),
        billing_currency=pl.col("BillingCurrency"),
        billing_period_start=pl.col(parsed_column("BillingPeriodStart")),
        invoice_id=pl.col("InvoiceId"),
        service_provider_name=pl.col("ServiceProviderName"),
        billed_cost=pl.col(parsed_column("BilledCost")).struct.field("value"),
        effective_cost=pl.col(parsed_column("EffectiveCost")).struct.field("value"),
    )


# --- files ----------------------------------------------------------------------------------------


def read_focus_raw(f: LandingFile) -> pl.LazyFrame:
    """All FOCUS columns the pipeline reads, as text, plus source_file/source_line/delivery."""
    check_readable(f)
    wanted = FOCUS_COLUMNS + tuple(FOCUS_LEGACY_NAMES.values())
    if f.relpath.lower().endswith(".parquet"):
        raw = scan_parquet_as_text(f, wanted)
    else:
        raw = scan_csv_text(f, wanted)
    names = raw.collect_schema().names()
    for new, old in FOCUS_LEGACY_NAMES.items():
        if new not in names and old in names:
            raw = raw.rename({old: new})
            names[names.index(old)] = new
    missing = [c for c in FOCUS_MANDATORY if c not in names]
    if missing:
        raise InputFileError(f"{f.relpath}: line 1: missing mandatory FOCUS column(s) {', '.join(missing)}")
    return raw.with_columns(
        [pl.lit(None, dtype=pl.String).alias(c) for c in FOCUS_COLUMNS if c not in names]
    ).with_columns(
        source_file=pl.lit(f.relpath),
        source_line=pl.col("source_line").cast(pl.Int64),
        delivery=pl.lit(f.delivery),
    )


def focus_outputs(layout: Layout, f: LandingFile, raw: pl.LazyFrame | None = None) -> dict[Path, pl.LazyFrame]:
    """What staging one FOCUS file (read as `raw`, by default read_focus_raw) writes: its bad
    rows, then its typed rows (the marker)."""
    checked = focus_problems(read_focus_raw(f) if raw is None else raw)
    return {
        layout.quarantine("focus") / f"{f.file_id}.parquet": focus_quarantine(checked),
        layout.staged("focus") / f"{f.file_id}.parquet": focus_typed(checked),
    }


def stage_focus(layout: Layout) -> StagingReport:
    """Stage every FOCUS landing file not staged yet; drop staging of files no longer landed."""
    files = list_landing(layout.landing_focus, FOCUS_SUFFIXES)
    staged, quarantine = layout.staged("focus"), layout.quarantine("focus")
    report = StagingReport()

    def stage_one(f: LandingFile) -> None:
        with scratch_folder(layout.tmp, "staging") as folder:
            raw = decoded(folder, f, read_focus_raw)
            stage_file(focus_outputs(layout, f, raw), f, staged / f"{f.file_id}.parquet", raw, folder)

    sync_staging(files, staged, [staged, quarantine], stage_one, report)
    write_parquet_atomic(deliveries_frame(files), layout.staged("focus_deliveries") / "deliveries.parquet")
    report.rows["focus"] = total_rows(staged)
    report.quarantined_rows = total_rows(quarantine)
    return report


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


def scan_staged_focus_files(layout: Layout) -> pl.LazyFrame:
    """Every staged FOCUS row as staging holds it, superseded deliveries included."""
    from schemas.focus import StagedFocus

    return scan_dir(layout.staged("focus"), StagedFocus)


def scan_staged_focus(layout: Layout, every_period: bool = False) -> pl.LazyFrame:
    """Current FOCUS rows: staged rows of superseded deliveries removed (see deliveries_frame), and
    rows of billing periods no reconciliation covers (held in quarantine by the staging step:
    unitledger.steps.staging) unless `every_period`."""
    rows = scan_staged_focus_files(layout)
    deliveries_file = layout.staged("focus_deliveries") / "deliveries.parquet"
    if deliveries_file.exists():
        quarantined = _quarantine_keys(_placed_focus_quarantine(layout, rows))
        # A few rows, computed once here rather than again by every query over the current rows
        # (each Pandera check is one): those would each re-rank every staged row.
        current = current_delivery_keys(rows, pl.scan_parquet(deliveries_file, glob=False), quarantined).collect()
        rows = rows.join(current.lazy(), on=["delivery", *DELIVERY_KEY], how="semi")
    periods_file = layout.staged("focus_periods") / PERIODS_FILE
    if every_period or not periods_file.exists():
        return rows
    first, end = pl.read_parquet(periods_file, glob=False).row(0)
    return rows.filter(pl.col("BillingPeriodStart").is_between(pl.lit(first), pl.lit(end), closed="left"))


# The billing periods reconciliations cover, [first, end) by BillingPeriodStart: written by staging.
PERIODS_FILE = "periods.parquet"


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

    rows = scan_dir(layout.quarantine("focus"), Quarantine).with_columns(delivery=delivery_of(pl.col("source_file")))
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

    staged = scan_dir(layout.staged("focus"), StagedFocus)
    rows = _placed_focus_quarantine(layout, staged)
    deliveries_file = layout.staged("focus_deliveries") / "deliveries.parquet"
    if not deliveries_file.exists():
        return rows
    deliveries = pl.scan_parquet(deliveries_file, glob=False)
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
