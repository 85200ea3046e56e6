"""LLM gateway request logs -> telemetry rows: LiteLLM SpendLogs, OpenRouter generations, Helicone
request exports. Each record is one call with the cost the gateway reported (kept as exact text in
`reported_cost`, provenance `gateway_reported`); a Helicone feedback rating is also an outcome.

Files: CSV (a table export, header on line 1), JSON lines, or one JSON array (read whole: export
big tables as JSON lines or CSV); gzip too. source_line is the physical line (CSV: the record's
first line counted from the header on line 1; a quoted field spanning lines shifts later numbers,
as for FOCUS CSV), the element number in a JSON array.

Only ids, times, models, token counts, costs, status and the configured metadata keys are read:
prompts and responses are never ingested (Helicone's response_body is read for its `id` only).
A gateway record has no trace: attempt is the stated one (Telemetry.attempt_attributes in the
metadata), else 1; a record without a session is its own intent ("call:<record id>").
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl

from unitledger.config import Telemetry
from unitledger.sources.telemetry_rows import digits, finish_rows


class GatewayFileError(Exception):
    """A gateway export that cannot be read as one; the message names the file and the place."""


# --- reading any of the export shapes as text columns ------------------------------------------


def _open(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _is_csv(path: Path) -> bool:
    return path.name.lower().removesuffix(".gz").endswith(".csv")


def _first_char(path: Path) -> bytes:
    with _open(path) as fh:
        while chunk := fh.read(4096):
            stripped = chunk.lstrip(b"\xef\xbb\xbf \t\r\n")
            if stripped:
                return stripped[:1]
    return b""


def _records(path: Path, source_file: str, scalars: tuple[str, ...], nested: tuple[str, ...], unwrap: str | None = None) -> pl.LazyFrame:
    """The export's records as text columns `scalars` + `nested` (JSON text of objects and arrays,
    as a CSV export holds them) plus source_line; absent columns are null.

    `unwrap`: a key whose object, when a record has one, is the record (an API response saved
    as is, e.g. OpenRouter's {"data": {...}})."""
    wanted = scalars + nested
    if _is_csv(path):
        try:
            header = pl.scan_csv(path, infer_schema=False, n_rows=0, glob=False).collect_schema().names()
        except Exception as exc:
            raise GatewayFileError(f"{source_file}: line 1: cannot read the CSV header ({exc})") from exc
        present = [c for c in wanted if c in header]
        frame = pl.scan_csv(path, infer_schema=False, null_values=["", "NULL"], glob=False).select(present).with_row_index("source_line", offset=2)
        return frame.with_columns(pl.lit(None, pl.String).alias(c) for c in wanted if c not in header)
    if _first_char(path) == b"[":
        with _open(path) as fh:
            try:
                elements = json.load(fh)
            except (ValueError, UnicodeDecodeError) as exc:
                raise GatewayFileError(f"{source_file}: not a valid JSON array ({exc})") from exc
        if not isinstance(elements, list):
            raise GatewayFileError(f"{source_file}: not a JSON array")
        # an element that is no object stays a row (with a problem), read as an empty record
        texts = [json.dumps(e) if isinstance(e, dict) else "{}" for e in elements]
        objects = [isinstance(e, dict) for e in elements]
        lines = pl.LazyFrame({"_json": texts, "_object": objects}, schema={"_json": pl.String, "_object": pl.Boolean}).with_row_index("source_line", offset=1)
    else:
        lines = (
            pl.scan_lines(path, name="_json", glob=False)
            .with_row_index("source_line", offset=1)
            .filter(pl.col("_json").str.strip_chars() != "")
            .with_columns(_object=pl.lit(True))  # a line that is no object fails the decode: the file is refused
        )
    text = pl.col("_json")
    if unwrap:
        inner = text.str.json_path_match(f"$.{unwrap}")
        text = pl.when(inner.str.starts_with("{")).then(inner).otherwise(text)
    return lines.with_columns(_record=text).select(
        "source_line",
        pl.col("_record").str.json_decode(pl.Struct({c: pl.String for c in scalars})).alias("_scalars"),
        *[pl.col("_record").str.json_path_match(f"$.{c}").alias(c) for c in nested],
        _is_object=pl.col("_object"),
    ).unnest("_scalars").with_columns(
        # empty text is no value, as in a CSV export (LiteLLM's columns default to "")
        pl.when(pl.col(c) != "").then(pl.col(c)).alias(c) for c in wanted
    )


def _json_fields(text: pl.Expr, fields: dict[str, tuple[str, ...]]) -> dict[str, pl.Expr]:
    """Fields of a JSON object held as text: {name: path} with path the keys down to a scalar."""
    tree: dict = {}
    for path in fields.values():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node.setdefault(path[-1], None)

    def dtype(node: dict) -> pl.Struct:
        return pl.Struct({k: pl.String if v is None else dtype(v) for k, v in node.items()})

    decoded = text.str.json_decode(dtype(tree))
    out = {}
    for name, path in fields.items():
        expr = decoded
        for key in path:
            expr = expr.struct.field(key)
        out[name] = expr
    return out


def _status(text: pl.Expr) -> pl.Expr:
    """A gateway's call status as ok/error; an unknown word is kept for the rules to reject."""
    lowered = text.str.strip_chars().str.to_lowercase()
    return (
        pl.when(text.is_null()).then(pl.lit("ok"))
        .when(lowered.is_in(["success", "succeeded", "ok", "completed"])).then(pl.lit("ok"))
        .when(lowered.is_in(["failure", "failed", "error"])).then(pl.lit("error"))
        .otherwise(text)
    )


def _not_an_object_problem() -> pl.Expr:
    return pl.when(~pl.col("_is_object")).then(pl.lit("record is not a JSON object"))


# --- LiteLLM SpendLogs ------------------------------------------------------------------------

LITELLM_FORMAT = "litellm"
_LITELLM_SCALARS = (
    "request_id", "call_type", "api_key", "spend", "total_tokens", "prompt_tokens", "completion_tokens", "startTime",
    "model", "model_group", "custom_llm_provider", "team_id", "organization_id", "end_user", "session_id", "status",
)


def read_litellm_spendlogs(path: Path, source_file: str, telemetry: Telemetry) -> pl.LazyFrame:
    """Rows of a LiteLLM_SpendLogs export (CSV, JSON lines or a JSON array, e.g. /spend/logs).

    request_id (the provider's response id when there is one, else LiteLLM's call id) is both
    event_id and request_id; timestamp = startTime (naive times are UTC); model = model_group (what
    the app asked for), else model; model_version = model (the deployment that answered); provider
    = custom_llm_provider; tokens = prompt/completion tokens, cache reads/writes from
    metadata.additional_usage_values; reported_cost = spend (USD, LiteLLM's own estimate); session
    = session_id, else a session attribute in metadata.spend_logs_metadata; feature, prompt
    version, attempt, likewise from spend_logs_metadata (the configured attribute names); feature
    else the key alias, else the team alias, else Telemetry.default_feature."""
    rows = _records(path, source_file, _LITELLM_SCALARS, ("metadata",))
    if _is_csv(path):
        rows = rows.with_columns(_is_object=pl.lit(True))
    meta_keys = {f"m:{k}": ("spend_logs_metadata", k) for k in _metadata_keys(telemetry)}
    meta = _json_fields(
        pl.col("metadata"),
        meta_keys | {
            "_cache_read": ("additional_usage_values", "cache_read_input_tokens"),
            "_cache_write": ("additional_usage_values", "cache_creation_input_tokens"),
            "_key_alias": ("user_api_key_alias",),
            "_team_alias": ("user_api_key_team_alias",),
        },
    )
    rows = rows.with_columns(**meta)

    def metadata(keys: tuple[str, ...]) -> pl.Expr:
        return pl.coalesce([pl.col(f"m:{k}") for k in keys]) if keys else pl.lit(None, pl.String)

    input_text, cache_read, cache_write = digits(pl.col("prompt_tokens")), digits(pl.col("_cache_read")).fill_null("0"), digits(pl.col("_cache_write")).fill_null("0")
    if LITELLM_FORMAT in telemetry.input_excludes_cache:
        input_text = _plus(input_text, cache_read, cache_write)
    out = rows.select(
        "source_line",
        event_type=pl.lit("llm_call"),
        event_id=pl.col("request_id"),
        timestamp=pl.col("startTime"),
        request_id=pl.col("request_id"),
        session_id=pl.coalesce(pl.col("session_id"), metadata(telemetry.session_attributes), pl.lit("call:") + pl.col("request_id")),
        feature_tag=pl.coalesce(metadata(telemetry.feature_attributes), pl.col("_key_alias"), pl.col("_team_alias"), pl.lit(telemetry.default_feature)),
        provider=pl.col("custom_llm_provider"),
        model=pl.coalesce("model_group", "model"),
        model_version=pl.coalesce("model", "model_group"),
        prompt_version=metadata(telemetry.prompt_version_attributes),
        input_tokens=input_text,
        output_tokens=digits(pl.col("completion_tokens")),
        cache_read_input_tokens=cache_read,
        cache_write_input_tokens=cache_write,
        attempt=digits(metadata(telemetry.attempt_attributes)).fill_null("1"),
        status=_status(pl.col("status")),
        source_format=pl.lit(LITELLM_FORMAT),
        operation=pl.col("call_type"),
        response_id=pl.col("request_id"),
        reported_cost=pl.col("spend").str.strip_chars(),
        reported_currency=pl.lit("USD"),
        api_key_id=pl.col("api_key"),
        project_id=pl.col("organization_id"),
        team_id=pl.col("team_id"),
        end_user_id=pl.col("end_user"),
        problem=_not_an_object_problem(),
    )
    return finish_rows(out, source_file)


def _metadata_keys(telemetry: Telemetry) -> tuple[str, ...]:
    return tuple(dict.fromkeys(
        telemetry.session_attributes + telemetry.feature_attributes + telemetry.prompt_version_attributes + telemetry.attempt_attributes
    ))


def _plus(*texts: pl.Expr) -> pl.Expr:
    """Sum of token counts given as text, as text (the first one as is when any does not parse)."""
    total = sum((t.str.to_integer(strict=False) for t in texts[1:]), texts[0].str.to_integer(strict=False))
    return total.cast(pl.String).fill_null(texts[0])


# --- OpenRouter generations -------------------------------------------------------------------

OPENROUTER_FORMAT = "openrouter"
_OPENROUTER_SCALARS = (
    "id", "upstream_id", "total_cost", "created_at", "model", "provider_name", "api_type", "app_id", "external_user",
    "tokens_prompt", "tokens_completion", "native_tokens_prompt", "native_tokens_completion", "native_tokens_reasoning",
    "native_tokens_cached", "finish_reason", "native_finish_reason", "cancelled",
)


def read_openrouter_generations(path: Path, source_file: str, telemetry: Telemetry) -> pl.LazyFrame:
    """Rows of OpenRouter generation records (GET /api/v1/generation `data` objects, or whole
    responses {"data": {...}}), as JSON lines, a JSON array or CSV.

    event_id = id (gen-...); request_id = upstream_id (the provider's id, which telemetry logs as
    gen_ai.response.id), else id; timestamp = created_at; provider = provider_name; model =
    model_version = model; tokens = native_tokens_* (the provider's own counts), else tokens_*;
    cache writes are not reported (0); reported_cost = total_cost (USD, what OpenRouter charged);
    status error when cancelled or the finish reason is error; session: each generation is its own
    intent; feature: Telemetry.default_feature (OpenRouter records carry no tags); app_id is kept
    as project_id, external_user as end_user_id."""
    rows = _records(path, source_file, _OPENROUTER_SCALARS, (), unwrap="data")
    if _is_csv(path):
        rows = rows.with_columns(_is_object=pl.lit(True))
    input_text, cache_read = digits(pl.coalesce("native_tokens_prompt", "tokens_prompt")), digits(pl.col("native_tokens_cached")).fill_null("0")
    if OPENROUTER_FORMAT in telemetry.input_excludes_cache:
        input_text = _plus(input_text, cache_read)
    failed = (pl.col("cancelled").str.to_lowercase() == "true").fill_null(False) | pl.any_horizontal(
        (pl.col(c).str.to_lowercase() == "error").fill_null(False) for c in ("finish_reason", "native_finish_reason")
    )
    out = rows.select(
        "source_line",
        event_type=pl.lit("llm_call"),
        event_id=pl.col("id"),
        timestamp=pl.col("created_at"),
        request_id=pl.coalesce("upstream_id", "id"),
        session_id=pl.lit("call:") + pl.col("id"),
        feature_tag=pl.lit(telemetry.default_feature),
        provider=pl.col("provider_name"),
        model=pl.col("model"),
        model_version=pl.col("model"),
        input_tokens=input_text,
        output_tokens=digits(pl.coalesce("native_tokens_completion", "tokens_completion")),
        cache_read_input_tokens=cache_read,
        cache_write_input_tokens=pl.lit("0"),
        attempt=pl.lit("1"),
        status=pl.when(failed).then(pl.lit("error")).otherwise(pl.lit("ok")),
        source_format=pl.lit(OPENROUTER_FORMAT),
        operation=pl.col("api_type"),
        response_id=pl.col("upstream_id"),
        reasoning_output_tokens=digits(pl.col("native_tokens_reasoning")),
        reported_cost=pl.col("total_cost").str.strip_chars(),
        reported_currency=pl.lit("USD"),
        project_id=pl.col("app_id"),
        end_user_id=pl.col("external_user"),
        problem=_not_an_object_problem(),
    )
    return finish_rows(out, source_file)


# --- Helicone request exports -----------------------------------------------------------------

HELICONE_FORMAT = "helicone"
HELICONE_SESSION_PROPERTY = "Helicone-Session-Id"
_HELICONE_SCALARS = (
    "request_id", "response_id", "request_created_at", "response_status", "provider", "request_model", "model", "response_model",
    "model_override", "request_path", "request_user_id", "helicone_user", "prompt_tokens", "completion_tokens",
    "prompt_cache_read_tokens", "prompt_cache_write_tokens", "costUSD", "cost", "prompt_id", "feedback_id",
    "feedback_created_at", "feedback_rating",
)


def read_helicone_requests(path: Path, source_file: str, telemetry: Telemetry) -> pl.LazyFrame:
    """Rows of a Helicone request export (npx @helicone/export: JSON, JSON lines or CSV; or the
    query API's rows).

    event_id = request_id (Helicone's), else response_id; request_id = the provider's response id
    from response_body.id when the export includes bodies, else Helicone's request_id (billing
    cannot know it: such calls show as telemetry-only); timestamp = request_created_at; provider =
    provider, lower-cased (Helicone writes OPENAI); model = request_model, else model, else
    response_model; model_version = response_model, else the same; tokens = prompt/completion
    tokens and prompt_cache_read/write_tokens; status ok for an HTTP 2xx response_status;
    reported_cost = costUSD, else cost (USD); session = the Helicone-Session-Id property, else a
    configured session attribute among request_properties, else its own intent; feature and
    prompt version from request_properties (the configured names), else prompt_id for the prompt.
    A feedback rating (true/false) is also an `outcome` row of the call's session, explicit,
    dated feedback_created_at, event_id "feedback:<feedback id or request id>"."""
    rows = _records(path, source_file, _HELICONE_SCALARS, ("request_properties", "response_body"))
    if _is_csv(path):
        rows = rows.with_columns(_is_object=pl.lit(True))
    property_keys = tuple(dict.fromkeys((HELICONE_SESSION_PROPERTY, *_metadata_keys(telemetry))))
    rows = rows.with_columns(
        **_json_fields(pl.col("request_properties"), {f"p:{k}": (k,) for k in property_keys}),
        _provider_id=pl.col("response_body").str.json_path_match("$.id"),
    )

    def prop(keys: tuple[str, ...]) -> pl.Expr:
        return pl.coalesce([pl.col(f"p:{k}") for k in keys]) if keys else pl.lit(None, pl.String)

    record_id = pl.coalesce("request_id", "response_id")
    session = pl.coalesce(prop((HELICONE_SESSION_PROPERTY, *telemetry.session_attributes)), pl.lit("call:") + record_id)
    feature = pl.coalesce(prop(telemetry.feature_attributes), pl.lit(telemetry.default_feature))
    http = pl.col("response_status").str.strip_chars().str.to_integer(strict=False)
    input_text = digits(pl.col("prompt_tokens"))
    cache_read, cache_write = digits(pl.col("prompt_cache_read_tokens")).fill_null("0"), digits(pl.col("prompt_cache_write_tokens")).fill_null("0")
    if HELICONE_FORMAT in telemetry.input_excludes_cache:
        input_text = _plus(input_text, cache_read, cache_write)
    call = rows.select(
        "source_line",
        event_type=pl.lit("llm_call"),
        event_id=record_id,
        timestamp=pl.col("request_created_at"),
        request_id=pl.coalesce("_provider_id", "request_id", "response_id"),
        session_id=session,
        feature_tag=feature,
        provider=pl.col("provider").str.to_lowercase(),
        model=pl.coalesce("request_model", "model", "response_model"),
        model_version=pl.coalesce("response_model", "request_model", "model"),
        prompt_version=pl.coalesce(prop(telemetry.prompt_version_attributes), pl.col("prompt_id")),
        input_tokens=input_text,
        output_tokens=digits(pl.col("completion_tokens")),
        cache_read_input_tokens=cache_read,
        cache_write_input_tokens=cache_write,
        attempt=digits(prop(telemetry.attempt_attributes)).fill_null("1"),
        status=pl.when((http >= 200) & (http < 300)).then(pl.lit("ok")).when(http.is_not_null()).then(pl.lit("error")),
        source_format=pl.lit(HELICONE_FORMAT),
        operation=pl.col("request_path"),
        response_id=pl.col("_provider_id"),
        reported_cost=pl.coalesce("costUSD", "cost").str.strip_chars(),
        reported_currency=pl.lit("USD"),
        end_user_id=pl.coalesce("request_user_id", "helicone_user"),
        problem=pl.coalesce(
            _not_an_object_problem(),
            pl.when(pl.col("response_status").is_not_null() & http.is_null()).then(pl.lit("response_status is not an HTTP status code: ") + pl.col("response_status").str.slice(0, 40)),
        ),
    )
    rating = pl.col("feedback_rating").str.strip_chars().str.to_lowercase()
    feedback = rows.filter(pl.col("feedback_rating").is_not_null()).select(
        "source_line",
        event_type=pl.lit("outcome"),
        event_id=pl.lit("feedback:") + pl.coalesce("feedback_id", record_id),
        timestamp=pl.coalesce("feedback_created_at", "request_created_at"),
        session_id=session,
        feature_tag=feature,
        success=rating,
        escalated=pl.lit("false"),
        signal=pl.lit("explicit"),
        source_format=pl.lit(HELICONE_FORMAT),
    )
    return finish_rows(pl.concat([call, feedback], how="diagonal"), source_file)
