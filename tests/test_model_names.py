"""Model and provider names: telemetry's and the bills' spellings meet (unitledger.model.model_names)."""

import polars as pl
import pytest

from unitledger.model.model_names import canonical_model, match_models, model_date, model_family, provider_key, with_model_key


def _canonical(names: list[str | None]) -> list[tuple[str | None, str | None]]:
    frame = pl.DataFrame({"n": names}, schema={"n": pl.String}).with_columns(c=canonical_model(pl.col("n")))
    frame = frame.with_columns(f=model_family(pl.col("c")), d=model_date(pl.col("c")))
    return list(zip(frame["f"].to_list(), frame["d"].to_list()))


@pytest.mark.parametrize(
    "name, family, date",
    [
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini", "20240718"),  # telemetry (OpenAI response model)
        ("gpt-4o-mini-0718", "gpt-4o-mini", "0718"),  # Azure meter, model part
        ("gpt 4o 0513", "gpt-4o", "0513"),  # Azure meter with spaces
        ("gpt-4o-2024-05-13", "gpt-4o", "20240513"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4.5", "20251001"),  # Anthropic API
        ("anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4.5", "20251001"),  # Bedrock model id
        ("us.anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4.5", "20251001"),  # cross-region profile
        ("Claude4.5Haiku", "claude-haiku-4.5", None),  # Bedrock usage type
        ("Claude4.6Sonnet", "claude-sonnet-4.6", None),
        ("claude-3-5-sonnet-20241022", "claude-sonnet-3.5", "20241022"),  # old naming order
        ("Claude3.5Sonnet", "claude-sonnet-3.5", None),
        ("claude-3-5-sonnet@20240620", "claude-sonnet-3.5", "20240620"),  # Vertex
        ("claude-sonnet-4-20250514", "claude-sonnet-4", "20250514"),  # "4-2..." is not 4.2
        ("anthropic.claude-v2:1", "claude-v2", None),  # the v2 is the model's, the :1 a revision
        ("openai/gpt-4o", "gpt-4o", None),
        ("mistral-large-2407", "mistral-large-2407", None),  # 24 is no month: not a date
        ("gpt-4-1106-preview", "gpt-4-1106-preview", None),  # a date inside the name stays
        ("  ", None, None),
        (None, None, None),
    ],
)
def test_model_names_normalize_to_family_and_date(name, family, date):
    assert _canonical([name]) == [(family, date)]


def test_provider_names_of_telemetry_and_bills_meet():
    names = ["openai", "OpenAI", "azure_openai", "azure.ai.openai", "Microsoft", "aws.bedrock", "AWS", "Amazon Web Services",
             "anthropic", "Anthropic", "gcp.vertex_ai", "Google Cloud", "Mistral AI", "gw-oa", None]  # fmt: skip
    keys = pl.select(provider_key(pl.Series(names, dtype=pl.String), [("GW-OA", "OpenAI")])).to_series().to_list()
    assert keys == ["openai", "openai", "azure", "azure", "azure", "aws", "aws", "aws",
                    "anthropic", "anthropic", "google", "google", "mistral ai", "openai", None]  # fmt: skip


def _match(call_names: list[str], bill_names: list[str], aliases=()) -> dict[str, tuple[str | None, str]]:
    calls = with_model_key(pl.LazyFrame({"provider": "p", "call_model": call_names}), "call_model", aliases, prefix="call")
    bills = with_model_key(pl.LazyFrame({"provider": "p", "billed": bill_names}), "billed", aliases).drop("billed")
    mapping = match_models(calls.select("provider", "call_key", "call_family", "call_date"), bills).collect()
    keys = calls.collect()
    out = {}
    for name, key in zip(keys["call_model"], keys["call_key"]):
        row = mapping.filter(pl.col("call_key") == key).row(0, named=True)
        out[name] = (row["model"], row["match"])
    return out


def test_dates_must_agree_when_both_sides_carry_one():
    result = _match(["gpt-4o-2024-05-13", "gpt-4o-2024-08-06", "gpt-4o"], ["gpt 4o 0513"])
    assert result == {
        "gpt-4o-2024-05-13": ("gpt-4o-0513", "matched"),  # 0513 = May 13th
        "gpt-4o-2024-08-06": (None, "unknown_model"),  # another snapshot: never taken for 0513
        "gpt-4o": ("gpt-4o-0513", "matched"),  # no date on the call side: the family decides
    }


def test_a_call_that_fits_several_billed_models_is_ambiguous_not_guessed():
    result = _match(["gpt-4o", "gpt-4o-2024-08-06"], ["gpt 4o 0513", "gpt 4o 0806"])
    assert result["gpt-4o"] == (None, "ambiguous_model")
    assert result["gpt-4o-2024-08-06"] == ("gpt-4o-0806", "matched")


def test_a_dated_bill_is_preferred_over_an_undated_one_for_a_dated_call():
    result = _match(["gpt-4o-2024-05-13"], ["gpt-4o", "gpt-4o-0513"])
    assert result["gpt-4o-2024-05-13"] == ("gpt-4o-0513", "matched")


def test_aliases_apply_to_both_sides_and_keep_the_date():
    aliases = [("R1", "DeepSeek-R1"), ("gpt-4o-rt-txt", "gpt-4o-realtime-preview")]
    result = _match(["deepseek-r1", "gpt-4o-realtime-preview-2024-12-17"], ["r1", "gpt 4o rt txt 1217"], aliases)
    assert result == {
        "deepseek-r1": ("deepseek-r1", "matched"),
        "gpt-4o-realtime-preview-2024-12-17": ("gpt-4o-realtime-preview-1217", "matched"),
    }
