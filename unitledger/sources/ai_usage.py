"""AI token usage in FOCUS rows: which rows bill tokens, of which model and token type, how many.

Real provider exports bill AI usage in aggregated rows (per model, token type, account and hour or
day) without a request id. `classify_usage` looks at every staged FOCUS row without x_RequestId and
derives (model, token type) from the first source that names each, in this order:

1. `x_ModelVersion` (model only);
2. `SkuPriceDetails` JSON, keys read case-insensitively: model from `ModelId`, `x_ModelId`,
   `x_Model`, `x_ModelName`, `x_ModelVersion`; token type from `TokenType`, else `TokenDirection`
   (Input/Request, Output/Response) with `CacheAction` / `TokenCacheAction` (Read, Write,
   Uncached);
3. the meter texts `SkuMeter`, `x_SkuMeterName`, `x_UsageType` (in that order; for each text the
   first of these that matches wins):
   a. the FOCUS convention (whole text): `Input Tokens`, `Output Tokens`, `Cached Input Tokens`,
      `Cache Read Input Tokens`, `Cache Write Input Tokens`, `Input Cache` (cache read),
      `Output Cache` (cache write: the spec's AI examples renamed these two to the cache read /
      write meters), `cache_creation.ephemeral_5m_input_tokens` and the like;
   b. AWS Bedrock usage types `USE1-Claude4.6Sonnet-input-tokens`, `...-output-tokens`,
      `...-mantle-input-tokens-...`, `...-cache-read-input-token-count`,
      `...-cache-write-input-token-count` (model and type), and marketplace usage types
      `USE1-MP:USE1_InputTokenCount-Units`, `..._CacheReadInputTokenCount...`,
      `..._input_tokens_standard-Units` (type only);
   c. Azure OpenAI meter names `<model> [cached|cchd|cd] <Input|Inp|Inpt|Output|Outp|Outpt|opt>
      [deployment ...] Tokens`: `gpt 4o 0513 Input global Tokens`, `gpt-4o-mini-0718-Inp-glbl
      Tokens`, `R1 Outp glbl Tokens`, `5.1 codex opt Gl 1M Tokens`. Pricing variants (`Batch`,
      `pp`, `ShortCo`, `LongCo`) are dropped from the model, so they share its pool; a model that
      starts with a digit is a GPT model (`5 mini` -> `gpt 5 mini`);
4. `ServiceName` `<model> (Amazon Bedrock Edition)` (Bedrock marketplace products; model only);
5. the config's meter rules ([[allocation.meter_rules]]), first match wins.

A Usage row is a token row when any source gives a token type, or a meter text, the unit or the
SkuPriceDetails keys mention tokens. A token row is usable (`token`) when its model, its type and
its quantity are known: ConsumedQuantity x tokens per ConsumedUnit (Tokens 1, 1K / 1000 Tokens
1000, 1M / 1000000 Tokens 1000000, Units / Count 1: Azure writes the token count with unit Units;
[allocation.units] adds or overrides units). A null quantity is allowed (the pool is then allocated
by logged tokens). Otherwise it is `unrecognized_token` with the reason (no model, no token type,
unknown unit, negative quantity, ...): reported, never guessed. Every other row is `shared`: tax,
fees, credits, purchases (any ChargeCategory but Usage), and Usage rows metering something other
than tokens (LiteLLM's `Requests` rows, Azure's `Standard Text Records`).
"""

from __future__ import annotations

import polars as pl

from schemas.allocation import TOKEN_TYPES
from schemas.types import MONEY
from unitledger.config import Allocation
from unitledger.model.model_names import blank_as_null

# Staged FOCUS columns classification reads besides the ones staging has always kept
# (schemas.focus.StagedFocus); absent ones are taken as null.
NEW_STAGED_COLUMNS = ("SubAccountId", "SkuPriceDetails", "x_SkuMeterName", "x_UsageType")
METER_TEXTS = ("SkuMeter", "x_SkuMeterName", "x_UsageType")
# Every column `recognize` reads.
RECOGNITION_COLUMNS = (*METER_TEXTS, "SkuPriceDetails", "x_ModelVersion", "ServiceName", "SkuId", "ChargeDescription", "ConsumedUnit")

BUILTIN_UNITS = {
    "token": 1,
    "tokens": 1,
    "1 token": 1,
    "1 tokens": 1,
    "units": 1,
    "unit": 1,
    "count": 1,
    "1k": 1_000,
    "1k tokens": 1_000,
    "1000 tokens": 1_000,
    "k tokens": 1_000,
    "thousand tokens": 1_000,
    "1m": 1_000_000,
    "1m tokens": 1_000_000,
    "1000000 tokens": 1_000_000,
    "m tokens": 1_000_000,
    "million tokens": 1_000_000,
    "1 million tokens": 1_000_000,
}
MAX_BILLED_TOKENS = 10**18  # larger quantities are reported, not allocated (exact arithmetic bound)

_FOCUS_METERS = {
    "cache_read": r"^(?:cached input|cache read(?: input)?|cached|cache hit|input cache) tokens?$|^input cache$",
    "cache_write": r"^cache (?:write|creation)(?: ephemeral \w+)?(?: input)? tokens?$|^output cache$",
    "input": r"^(?:uncached input|input|prompt) tokens?$",
    "output": r"^(?:output|completion|reasoning(?: output)?) tokens?$",
}
_BEDROCK_TOKENS = r"^(?:[A-Z]{3}\d-)?(?P<model>.+?)-(?i:(?:mantle-)?(?P<dir>input|output)-tokens?)(?:-.*)?$"
_BEDROCK_CACHE = r"^(?:[A-Z]{3}\d-)?(?P<model>.+?)-(?i:cache-(?P<cache>read|write)-input-token-count)(?:-.*)?$"
_BEDROCK_MARKETPLACE = (
    r"(?:^|[-_:])(?P<kind>cache_?read_?input|cache_?write_?input|cacheread|cachewrite|input|output)_?tokens?_?(?:count)?(?:[-_]|$)"
)
_AZURE_METER = (
    r"^(?P<model>.+?) (?:(?P<cached>cached|cchd|cd|cache|cach|ch) )?"
    r"(?P<dir>input|inpt|inp|output|outpt|outp|opt)(?: .*)? tokens$"
)
_AZURE_VARIANTS = r"\b(?:batch|bt|pp|priority|shortco|longco)\b"
_BEDROCK_EDITION = r"^(?P<model>.+?)\s*\(amazon bedrock edition\)$"
_SPD_MODEL_KEYS = ("modelid", "x_modelid", "x_model", "x_modelname", "x_modelversion")


def with_usage_columns(billing: pl.LazyFrame) -> pl.LazyFrame:
    """`billing` with the NEW_STAGED_COLUMNS and RECOGNITION_COLUMNS it lacks added as null text."""
    present = set(billing.collect_schema().names())
    missing = dict.fromkeys(c for c in (*NEW_STAGED_COLUMNS, *RECOGNITION_COLUMNS) if c not in present)
    return billing.with_columns(pl.lit(None, pl.String).alias(c) for c in missing)


def _words(text: pl.Expr) -> pl.Expr:
    """Lowercase text with runs of spaces, `_`, `.`-free separators (`-`, `_`) as one space."""
    return text.str.to_lowercase().str.replace_all(r"[\s_\-]+", " ").str.strip_chars()


def _focus_words(text: pl.Expr) -> pl.Expr:
    # The FOCUS convention compares whole words: "cache_creation.ephemeral_5m_input_tokens" too.
    return text.str.to_lowercase().str.replace_all(r"[\s_.\-]+", " ").str.strip_chars()


def _from_direction(direction: pl.Expr, cache: pl.Expr) -> pl.Expr:
    """Token type from a direction word (input/output) and a cache action (read/write/none)."""
    return (
        pl.when(cache.str.contains(r"^(?:read|hit|cached)"))
        .then(pl.lit("cache_read"))
        .when(cache.str.contains(r"^(?:write|creat)"))
        .then(pl.lit("cache_write"))
        .when(cache.is_not_null() & ~cache.str.contains(r"^(?:uncached|none|no)$"))
        .then(pl.lit(None, pl.String))  # "Other" or an unknown action: the type is not known
        .when(direction.str.contains(r"^(?:input|inp|inpt|in|request|prompt)$"))
        .then(pl.lit("input"))
        .when(direction.str.contains(r"^(?:output|outp|outpt|opt|out|response|completion)$"))
        .then(pl.lit("output"))
    )


def _meter(text: pl.Expr) -> pl.Expr:
    """Struct (model, token_type, by) from one meter text: the first recognizer that matches."""
    words = _focus_words(text)
    focus = pl.lit(None, pl.String)
    for token_type, pattern in reversed(_FOCUS_METERS.items()):
        focus = pl.when(words.str.contains(pattern)).then(pl.lit(token_type)).otherwise(focus)
    bedrock = text.str.extract_groups(_BEDROCK_TOKENS)
    cache = text.str.extract_groups(_BEDROCK_CACHE)
    market = text.str.to_lowercase().str.extract_groups(_BEDROCK_MARKETPLACE).struct.field("kind")
    azure = _words(text).str.extract_groups(_AZURE_METER)
    azure_model = azure.struct.field("model").str.replace_all(_AZURE_VARIANTS, " ").str.replace_all(r"\s+", " ").str.strip_chars()
    azure_model = pl.when(azure_model.str.contains(r"^\d")).then(pl.lit("gpt ") + azure_model).otherwise(azure_model)

    def found(model: pl.Expr, token_type: pl.Expr, by: str) -> pl.Expr:
        return pl.struct(model.cast(pl.String).alias("model"), token_type.cast(pl.String).alias("token_type"), pl.lit(by).alias("by"))

    none = found(pl.lit(None), pl.lit(None), "")
    return (
        pl.when(focus.is_not_null())
        .then(found(pl.lit(None), focus, "focus"))
        .when(cache.struct.field("model").is_not_null())  # before the plain pattern: "-input-token-count"
        .then(found(cache.struct.field("model"), pl.lit("cache_") + cache.struct.field("cache").str.to_lowercase(), "bedrock"))
        .when(bedrock.struct.field("model").is_not_null())
        .then(found(bedrock.struct.field("model"), bedrock.struct.field("dir").str.to_lowercase(), "bedrock"))
        .when(market.is_not_null())
        .then(
            found(
                pl.lit(None),
                pl.when(market.str.contains("read"))
                .then(pl.lit("cache_read"))
                .when(market.str.contains("write"))
                .then(pl.lit("cache_write"))
                .otherwise(market),
                "bedrock",
            )
        )
        .when(azure_model.is_not_null())
        .then(
            found(
                azure_model,
                pl.when(azure.struct.field("cached").is_not_null()).then(pl.lit("cache_read")).otherwise(
                    _from_direction(azure.struct.field("dir"), pl.lit(None, pl.String))
                ),
                "azure",
            )
        )
        .otherwise(none)
    )


def _sku_price_details() -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(model, token type, mentions tokens) from SkuPriceDetails; keys compared case-insensitively
    (the whole text is lowercased: model names are normalized lowercase anyway)."""
    details = pl.col("SkuPriceDetails").str.to_lowercase()

    def key(name: str) -> pl.Expr:
        return details.str.json_path_match(f"$.{name}").str.strip_chars()

    model = pl.coalesce([key(k) for k in _SPD_MODEL_KEYS])
    token_type_value = key("tokentype").str.replace_all(r"[^a-z]", "")
    by_value = (
        pl.when(token_type_value.str.contains(r"^(?:cacheread|cachedinput|cached|cachehit|cachereadinput)$"))
        .then(pl.lit("cache_read"))
        .when(token_type_value.str.contains(r"^(?:cachewrite|cachecreation|cachewriteinput|cachecreationinput)"))
        .then(pl.lit("cache_write"))
        .when(token_type_value.str.contains(r"^(?:input|uncachedinput|prompt)$"))
        .then(pl.lit("input"))
        .when(token_type_value.str.contains(r"^(?:output|completion|reasoning)$"))
        .then(pl.lit("output"))
    )
    cache = pl.coalesce(key("cacheaction"), key("tokencacheaction"))
    token_type = pl.coalesce(by_value, _from_direction(key("tokendirection"), cache))
    mentions = details.str.contains(r'"(?:tokentype|tokendirection|cacheaction|tokencacheaction)"\s*:')
    return model, token_type, mentions.fill_null(False)


def _rules(settings: Allocation) -> tuple[pl.Expr, pl.Expr]:
    """(model, token type) from the config's meter rules: the first rule any of whose columns
    matches gives both."""
    model, token_type = pl.lit(None, pl.String), pl.lit(None, pl.String)
    for rule in reversed(settings.meter_rules):
        matches = [pl.col(c).str.contains(rule.pattern).fill_null(False) for c in rule.columns]
        if rule.model is not None:
            rule_model = pl.lit(rule.model)
        else:  # the (?P<model>...) group of the first column that matches
            rule_model = pl.coalesce(
                [pl.when(m).then(pl.col(c).str.extract_groups(rule.pattern).struct.field("model")) for c, m in zip(rule.columns, matches)]
            )
        hit = pl.any_horizontal(matches)
        model = pl.when(hit).then(rule_model).otherwise(model)
        token_type = pl.when(hit).then(pl.lit(rule.token_type)).otherwise(token_type)
    return model, token_type


def _tokens_per_unit(settings: Allocation) -> pl.Expr:
    units = dict(BUILTIN_UNITS)
    units.update({" ".join(unit.lower().split()): n for unit, n in settings.units})
    key = pl.col("ConsumedUnit").str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()
    return key.replace_strict(units, default=None, return_dtype=pl.Int64)


def _first(named: list[tuple[str | pl.Expr, pl.Expr]]) -> tuple[pl.Expr, pl.Expr]:
    """(value, source name) of the first non-null expression of `named`."""
    value = pl.coalesce([e for _, e in named])
    source = pl.lit(None, pl.String)
    for name, expr in reversed(named):
        source = pl.when(expr.is_not_null()).then(pl.lit(name) if isinstance(name, str) else name).otherwise(source)
    return value, source


def _meter_source(column: str) -> pl.Expr:
    return pl.lit(f"{column}:") + pl.col(f"_m_{column}").struct.field("by")


def recognize(billing: pl.LazyFrame, settings: Allocation = Allocation()) -> pl.LazyFrame:
    """`billing` (staged FOCUS rows, with_usage_columns applied) plus billed_model, token_type,
    recognized_by, token_signal (the row looks like token usage) and tokens_per_unit."""
    texts = {c: blank_as_null(pl.col(c)) for c in METER_TEXTS}
    frame = billing.with_columns(**{f"_m_{c}": _meter(e) for c, e in texts.items()})
    spd_model, spd_type, spd_mentions = _sku_price_details()
    rule_model, rule_type = _rules(settings)
    edition = pl.col("ServiceName").str.to_lowercase().str.extract(_BEDROCK_EDITION, 1)
    model, model_by = _first(
        [("x_ModelVersion", blank_as_null(pl.col("x_ModelVersion"))), ("SkuPriceDetails", spd_model)]
        + [(_meter_source(c), pl.col(f"_m_{c}").struct.field("model")) for c in METER_TEXTS]
        + [("ServiceName", edition), ("meter rule", rule_model)]
    )
    token_type, type_by = _first(
        [("SkuPriceDetails", spd_type)]
        + [(_meter_source(c), pl.col(f"_m_{c}").struct.field("token_type")) for c in METER_TEXTS]
        + [("meter rule", rule_type)]
    )
    mentions = pl.any_horizontal([e.str.to_lowercase().str.contains("token").fill_null(False) for e in texts.values()])
    unit_mentions = pl.col("ConsumedUnit").str.to_lowercase().str.contains("token").fill_null(False)
    return frame.with_columns(
        billed_model=model,
        token_type=token_type.replace_strict({t: t for t in TOKEN_TYPES}, default=None, return_dtype=pl.String),
        recognized_by=pl.when(model_by.is_not_null() | type_by.is_not_null()).then(
            pl.concat_str(model_by.fill_null("?"), type_by.fill_null("?"), separator="+")
        ),
        token_signal=(token_type.is_not_null() | mentions | unit_mentions | spd_mentions | rule_model.is_not_null()),
        tokens_per_unit=_tokens_per_unit(settings),
    ).drop(f"_m_{c}" for c in METER_TEXTS)


def classify_usage(billing: pl.LazyFrame, settings: Allocation = Allocation()) -> pl.LazyFrame:
    """Every row of `billing` (staged FOCUS rows) without x_RequestId, as schemas.ClassifiedUsage."""
    from schemas.allocation import ClassifiedUsage

    rows = recognize(with_usage_columns(billing).filter(pl.col("x_RequestId").is_null()), settings)
    quantity = pl.col("ConsumedQuantity").cast(MONEY)
    per_unit = pl.col("tokens_per_unit")
    in_range = quantity.to_physical() < pl.lit(MAX_BILLED_TOKENS * 10**MONEY.scale, pl.Int128) // per_unit.cast(pl.Int128)
    usage = pl.col("ChargeCategory") == "Usage"
    token_row = usage & pl.col("token_signal")
    problems = [
        (pl.col("billed_model").is_null(), pl.lit("no model")),
        (pl.col("token_type").is_null(), pl.lit("no token type")),
        (quantity.is_not_null() & pl.col("ConsumedUnit").is_null(), pl.lit("quantity without ConsumedUnit")),
        (
            quantity.is_not_null() & pl.col("ConsumedUnit").is_not_null() & per_unit.is_null(),
            pl.format("unknown unit '{}' (add it to [allocation.units])", pl.col("ConsumedUnit")),
        ),
        (quantity < 0, pl.lit("negative quantity")),
        (quantity.is_not_null() & per_unit.is_not_null() & (quantity >= 0) & ~in_range, pl.lit("quantity out of range")),
    ]
    reasons = pl.concat_str([pl.when(cond.fill_null(False)).then(text) for cond, text in problems], separator="; ", ignore_nulls=True)
    reasons = pl.when(reasons.str.len_chars() > 0).then(reasons)
    meter = pl.coalesce(blank_as_null(pl.col("SkuMeter")), blank_as_null(pl.col("x_SkuMeterName")), blank_as_null(pl.col("x_UsageType")))
    shared_reason = (
        pl.when(~usage)
        .then(pl.format("ChargeCategory {}", pl.col("ChargeCategory")))
        .otherwise(
            pl.concat_str(
                pl.lit("not token usage (meter "),
                pl.format("'{}'", meter).fill_null("null"),
                pl.lit(", unit "),
                pl.format("'{}'", pl.col("ConsumedUnit")).fill_null("null"),
                pl.lit(")"),
            )
        )
    )
    usable = token_row & reasons.is_null()
    safe_quantity = pl.when(usable).then(quantity)  # only usable rows are multiplied: no overflow
    return rows.with_columns(
        meter_name=pl.coalesce(blank_as_null(pl.col("x_SkuMeterName")), blank_as_null(pl.col("x_UsageType"))),
        usage_class=pl.when(usable).then(pl.lit("token")).when(token_row).then(pl.lit("unrecognized_token")).otherwise(pl.lit("shared")),
        reason=pl.when(usable).then(pl.lit(None, pl.String)).when(token_row).then(reasons).otherwise(shared_reason),
        billed_tokens=(safe_quantity * per_unit).cast(MONEY),
        ConsumedQuantity=quantity,
    ).select(list(ClassifiedUsage.to_schema().columns))


def token_usage(classified: pl.LazyFrame) -> pl.LazyFrame:
    """The usable token rows of `classify_usage`."""
    return classified.filter(pl.col("usage_class") == "token")


def unrecognized_usage(classified: pl.LazyFrame) -> pl.LazyFrame:
    """The token rows of `classify_usage` that cannot be allocated, as schemas.UnrecognizedUsage."""
    from schemas.allocation import UnrecognizedUsage

    return classified.filter(pl.col("usage_class") == "unrecognized_token").select(list(UnrecognizedUsage.to_schema().columns))


def with_token_types(rows: pl.LazyFrame, settings: Allocation = Allocation()) -> pl.LazyFrame:
    """`rows` (staged FOCUS rows, typically with x_RequestId) plus `token_type`: the type the row
    bills, recognized as for aggregated rows (recognize: SkuPriceDetails, the meter texts, meter
    rules); null when it cannot be derived (a per-request total, a fee)."""
    rows = with_usage_columns(rows)
    # The type depends on these columns only (the others name the model): recognized once per
    # distinct combination, joined back on them (exact rows are many, their meters few; the fewer
    # join keys, the cheaper the join on every row).
    keys = list(dict.fromkeys(["SkuPriceDetails", *METER_TEXTS, *[c for rule in settings.meter_rules for c in rule.columns]]))
    others = [pl.lit(None, pl.String).alias(c) for c in RECOGNITION_COLUMNS if c not in keys]
    kinds = recognize(rows.select(keys).unique().with_columns(others), settings).select(*keys, "token_type")
    return rows.join(kinds, on=keys, how="left", nulls_equal=True)


def exact_token_coverage(billing: pl.LazyFrame, settings: Allocation = Allocation()) -> pl.LazyFrame:
    """One row per request with x_RequestId rows: `covers_<type>` for each token type, true when
    its own rows bill that type. Exact rows win for the token types they cover, so these are
    left out of the allocation. A row whose token type cannot be derived (a per-request total, a
    fee) covers all four. (Flags per request, not (request, type) pairs: the allocation joins
    them to the calls on the request id alone, before the calls are unpivoted to token types.)"""
    rows = with_token_types(billing.filter(pl.col("x_RequestId").is_not_null()), settings)
    return rows.group_by(request_id=pl.col("x_RequestId")).agg(token_coverage())


def token_coverage() -> list[pl.Expr]:
    """exact_token_coverage's `covers_<type>` flags, as aggregations over a request's rows with
    their `token_type` (with_token_types)."""
    token_type = pl.col("token_type")
    return [(token_type.is_null() | (token_type == t)).any().alias(f"covers_{t}") for t in TOKEN_TYPES]
