"""Model and provider names as telemetry and bills spell them, normalized so that the two meet.

Telemetry says `gpt-4o-mini-2024-07-18`, `claude-haiku-4-5-20251001`, `anthropic.claude-haiku-4-5-
20251001-v1:0`; bills say `gpt-4o-mini-0718` (Azure), `gpt 4o 0513`, `Claude4.5Haiku` (AWS usage
types). Both sides go through the same rules, in this order (all pure Polars expressions):

1. lowercase, trim; keep what follows the last `/` (`openai/gpt-4o`, Bedrock ARNs, Vertex paths);
2. drop a cross-region inference prefix (`us.`, `eu.`, `apac.`, `global.`, ...) and a Bedrock
   vendor prefix (`anthropic.`, `meta.`, `amazon.`, ...); drop a Bedrock revision (`:0`) and a
   `-v1` that follows a date (`...-20251001-v1:0`; `claude-v2:1` keeps its `v2`);
3. spaces, `_` and `@` become `-`; a trailing date `YYYY-MM-DD` is written `YYYYMMDD`;
4. Claude names take one form, `claude-<tier>-<major>[.<minor>]`: `claude-3-5-sonnet`,
   `Claude3.5Sonnet` and `claude-sonnet-3-5` all become `claude-sonnet-3.5`;
5. a trailing `-YYYYMMDD` or `-MMDD` (a valid month and day) is the model's date; the rest is its
   family. Two names match when their families are equal and, if both carry a date, the dates
   agree (on month and day when one side has no year: `0718` matches `20240718`).

Aliases from the config ([allocation.model_aliases]) are names too: both sides of an alias are
normalized, an alias of a full name (with its date) applies first, else an alias of the family
(keeping the date). Providers: FOCUS ServiceProviderName and telemetry provider names map to one
key each (`openai`, `azure`, `aws`, `anthropic`, `google`; others lowercased), after the config's
[allocation.provider_aliases].
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl

# Built-in provider names -> key. Telemetry: OpenTelemetry gen_ai.provider.name values and gateway
# spellings; bills: FOCUS ServiceProviderName / ProviderName values.
PROVIDER_KEYS = {
    "openai": "openai",
    "open ai": "openai",
    "openai, inc.": "openai",
    "microsoft": "azure",
    "azure": "azure",
    "microsoft azure": "azure",
    "azure_openai": "azure",
    "azure-openai": "azure",
    "azure openai": "azure",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "aws": "aws",
    "amazon": "aws",
    "amazon web services": "aws",
    "amazon web services, inc.": "aws",
    "aws.bedrock": "aws",
    "aws_bedrock": "aws",
    "bedrock": "aws",
    "amazon bedrock": "aws",
    "anthropic": "anthropic",
    "anthropic, pbc": "anthropic",
    "google": "google",
    "google cloud": "google",
    "google cloud platform": "google",
    "gcp": "google",
    "gcp.vertex_ai": "google",
    "gcp.gemini": "google",
    "gcp.gen_ai": "google",
    "vertex_ai": "google",
    "vertex": "google",
}

_REGION_PREFIX = r"^(?:us|eu|apac|global|jp|au|ca|us-gov)\."
_VENDOR_PREFIX = (
    r"^(?:anthropic|meta|amazon|cohere|mistral|ai21|deepseek|openai|qwen|writer|twelvelabs|stability|google|nvidia|moonshot|minimax)\."
)
_DATE_8 = r"(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
_DATE_4 = r"(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
_CLAUDE_TIERS = "opus|sonnet|haiku|instant"


def blank_as_null(text: pl.Expr) -> pl.Expr:
    """Text trimmed; empty or blank text as null."""
    stripped = text.str.strip_chars()
    return pl.when(stripped.str.len_chars() > 0).then(stripped)


def provider_key(name: pl.Expr, aliases: Iterable[tuple[str, str]] = ()) -> pl.Expr:
    """The provider key of a provider name: config aliases first (case-insensitive), then the
    built-in names; anything else lowercased."""
    lowered = blank_as_null(name).str.to_lowercase()
    user = {k.strip().lower(): v.strip().lower() for k, v in aliases}
    if user:
        lowered = lowered.replace(user)
    return lowered.replace(PROVIDER_KEYS)


def canonical_model(name: pl.Expr) -> pl.Expr:
    """Rules 1-4 of the module doc: the name both sides are compared in (date kept at the end)."""
    s = blank_as_null(name).str.to_lowercase()
    s = s.str.replace(r"^.*/", "")
    s = s.str.replace(_REGION_PREFIX, "").str.replace(_VENDOR_PREFIX, "")
    s = s.str.replace(r":\d+$", "").str.replace(r"(-(?:19|20)\d{6})-v\d+$", "${1}")
    s = s.str.replace_all(r"[\s_@]+", "-")
    s = s.str.replace(r"-(20\d{2})-(\d{2})-(\d{2})$", "-${1}${2}${3}")
    # Claude: "claude4.5haiku" -> "claude-4.5-haiku" -> "claude-haiku-4.5"
    s = s.str.replace(r"^claude(\d)", "claude-${1}")
    s = s.str.replace(rf"^claude-(\d+(?:\.\d+)?)({_CLAUDE_TIERS})", "claude-${1}-${2}")
    s = s.str.replace(rf"^claude-(\d+)[.-](\d)-({_CLAUDE_TIERS})(-|$)", "claude-${3}-${1}.${2}${4}")
    s = s.str.replace(rf"^claude-(\d+)-({_CLAUDE_TIERS})(-|$)", "claude-${2}-${1}${3}")
    s = s.str.replace(rf"^claude-({_CLAUDE_TIERS})-(\d+)-(\d)(-|$)", "claude-${1}-${2}.${3}${4}")
    s = s.str.replace_all(r"-{2,}", "-").str.strip_chars("-")
    return pl.when(s.str.len_chars() > 0).then(s)


def model_date(canonical: pl.Expr) -> pl.Expr:
    """The trailing date of a canonical name: YYYYMMDD or MMDD, else null."""
    return pl.coalesce(canonical.str.extract(rf"-({_DATE_8})$", 1), canonical.str.extract(rf"-({_DATE_4})$", 1))


def model_family(canonical: pl.Expr) -> pl.Expr:
    """A canonical name without its trailing date."""
    return canonical.str.replace(rf"-(?:{_DATE_8}|{_DATE_4})$", "")


def dates_agree(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    """True when either date is null, or they are equal (on month and day when one lacks the year)."""
    short = (a.str.len_chars() == 4) | (b.str.len_chars() == 4)
    same = pl.when(short).then(a.str.slice(-4) == b.str.slice(-4)).otherwise(a == b)
    return a.is_null() | b.is_null() | same


def alias_table(aliases: Iterable[tuple[str, str]]) -> pl.LazyFrame:
    """Config model aliases, both sides canonical: (alias, target)."""
    pairs = list(aliases)
    frame = pl.LazyFrame({"alias": [a for a, _ in pairs], "target": [t for _, t in pairs]}, schema={"alias": pl.String, "target": pl.String})
    return frame.select(alias=canonical_model(pl.col("alias")), target=canonical_model(pl.col("target"))).unique("alias", keep="last")


def with_model_key(frame: pl.LazyFrame, column: str, aliases: Iterable[tuple[str, str]] = (), prefix: str = "model") -> pl.LazyFrame:
    """Add `{prefix}_key` (canonical name after aliases), `{prefix}_family` and `{prefix}_date`
    for the model names in `column`. Meant for small frames of distinct names (join them back)."""
    key, family, date = f"{prefix}_key", f"{prefix}_family", f"{prefix}_date"
    frame = frame.with_columns(canonical_model(pl.col(column)).alias(key))
    pairs = list(aliases)
    if pairs:
        table = alias_table(pairs)
        frame = (
            frame.with_columns(_family=model_family(pl.col(key)), _date=model_date(pl.col(key)))
            .join(table.rename({"alias": key, "target": "_full"}), on=key, how="left")
            .join(table.rename({"alias": "_family", "target": "_by_family"}), on="_family", how="left")
            .with_columns(
                pl.coalesce(
                    "_full",
                    pl.when(pl.col("_date").is_null()).then(pl.col("_by_family")).otherwise(pl.col("_by_family") + "-" + pl.col("_date")),
                    key,
                ).alias(key)
            )
            .drop("_family", "_date", "_full", "_by_family")
        )
    return frame.with_columns(model_family(pl.col(key)).alias(family), model_date(pl.col(key)).alias(date))


def match_models(call_models: pl.LazyFrame, bill_models: pl.LazyFrame) -> pl.LazyFrame:
    """For each (provider, call_key, call_family, call_date) of `call_models`, the billed model
    (provider, model_key, model_family, model_date of `bill_models`) it is: same provider and
    family, dates agreeing. Where several agree, those whose date equals the call's (both sides
    dated) are preferred over undated ones. Returns (provider, call_key, model, candidates,
    match): match is `matched` (model set), `ambiguous_model` (several remain; candidates lists
    them) or `unknown_model`."""
    candidates = (
        call_models.join(bill_models, left_on=["provider", "call_family"], right_on=["provider", "model_family"], how="inner")
        .filter(dates_agree(pl.col("call_date"), pl.col("model_date")))
        .with_columns(_dated=(pl.col("call_date").is_not_null() & pl.col("model_date").is_not_null()).cast(pl.Int8))
        .filter(pl.col("_dated") == pl.col("_dated").max().over("provider", "call_key"))
        .group_by("provider", "call_key")
        .agg(
            _n=pl.col("model_key").n_unique(),
            _model=pl.col("model_key").min(),
            candidates=pl.col("model_key").unique().sort().str.join(", "),
        )
    )
    return (
        call_models.select("provider", "call_key")
        .unique()
        .join(candidates, on=["provider", "call_key"], how="left", nulls_equal=True)
        .with_columns(
            match=pl.when(pl.col("_n").is_null())
            .then(pl.lit("unknown_model"))
            .when(pl.col("_n") > 1)
            .then(pl.lit("ambiguous_model"))
            .otherwise(pl.lit("matched")),
        )
        .with_columns(
            model=pl.when(pl.col("match") == "matched").then(pl.col("_model")),
            candidates=pl.when(pl.col("match") == "ambiguous_model").then(pl.col("candidates")),
        )
        .drop("_n", "_model")
    )
