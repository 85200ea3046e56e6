"""[telemetry] settings: defaults, overrides, list prices and the mistakes they refuse."""

from datetime import date
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from unitledger.config import ConfigError, Telemetry, load_settings


def _settings(tmp_path: Path, text: str):
    path = tmp_path / "unitledger.toml"
    path.write_text(text)
    return load_settings(path)


def test_defaults_when_the_section_is_absent(tmp_path):
    telemetry = _settings(tmp_path, "[pipeline]\nstart_date = '2026-01-01'\n").telemetry
    assert telemetry == Telemetry()
    assert telemetry.session_attributes == ("gen_ai.conversation.id", "session.id", "langfuse.session.id")
    assert telemetry.feature_attributes[-1] == "service.name"


def test_bundled_file_documents_the_defaults(settings):
    bundled = settings.telemetry
    defaults = Telemetry()
    for name in Telemetry.__dataclass_fields__:
        if name != "list_prices":
            assert getattr(bundled, name) == getattr(defaults, name), name


def test_overrides_and_list_prices(tmp_path):
    telemetry = _settings(tmp_path, """
[telemetry]
session_attributes = ["app.session"]
session_fallback = "call"
score_threshold = 0.7
success_evaluators = ["task_success"]
input_excludes_cache = ["helicone"]

[[telemetry.list_prices]]
provider = "openai"
model = "gpt-4o-mini"
currency = "USD"
effective_from = "2024-07-18"
input = "0.15"
output = "0.60"

[[telemetry.list_prices]]
provider = "openai"
model = "gpt-4o-mini"
currency = "USD"
effective_from = 2025-01-01
input = "0.12"
""").telemetry
    assert telemetry.session_attributes == ("app.session",)
    assert telemetry.session_fallback == "call"
    assert telemetry.score_threshold == 0.7
    table = telemetry.list_price_table().collect().sort("token_type", "effective_from")
    # 0.15 per million = 0.00000015 per token, exactly; the 2024 input price ends when the 2025 one starts.
    assert table.rows() == [
        ("openai", "gpt-4o-mini", "input", "USD", date(2024, 7, 18), date(2025, 1, 1), Decimal("0.00000015")),
        ("openai", "gpt-4o-mini", "input", "USD", date(2025, 1, 1), None, Decimal("0.00000012")),
        ("openai", "gpt-4o-mini", "output", "USD", date(2024, 7, 18), None, Decimal("0.0000006")),
    ]
    assert table.schema["price_per_token"] == pl.Decimal(38, 18)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[telemetry]\nsession_atributes = ['x']\n", "unknown key(s) session_atributes"),
        ("[telemetry]\nsession_attributes = 'session.id'\n", "telemetry.session_attributes"),
        ("[telemetry]\nsession_fallback = 'none'\n", "telemetry.session_fallback"),
        ("[telemetry]\nscore_threshold = 'high'\n", "telemetry.score_threshold"),
        ("[telemetry]\ninput_excludes_cache = ['langfuse']\n", "langfuse not among"),
        ("[telemetry]\npass_labels = ['ok']\nfail_labels = ['OK']\n", "label(s) ok in both"),
        ("[[telemetry.list_prices]]\nprovider='openai'\nmodel='m'\ncurrency='USD'\neffective_from='2026-01-01'\ninput=0.15\n", "quote the price"),
        ("[[telemetry.list_prices]]\nprovider='openai'\nmodel='m'\ncurrency='XXX1'\neffective_from='2026-01-01'\ninput='1'\n", "not an ISO 4217"),
        ("[[telemetry.list_prices]]\nprovider='openai'\nmodel='m'\ncurrency='USD'\neffective_from='2026-01-01'\n", "at least one of"),
        ("[[telemetry.list_prices]]\nprovider='openai'\nmodel='m'\ncurrency='USD'\neffective_from='2026-01-01'\ninput='0.0000000000001'\n", "more than 18 decimal places"),
        ("[[telemetry.list_prices]]\nprovider='openai'\nmodel='m'\ncurrency='USD'\neffective_from='2026-13-01'\ninput='1'\n", "not a YYYY-MM-DD date"),
        ("[[telemetry.list_prices]]\nprovider='openai'\nmodel='m'\ncurrency='USD'\neffective_from='2026-01-01'\ninput='1'\n"
         "[[telemetry.list_prices]]\nprovider='openai'\nmodel='m'\ncurrency='USD'\neffective_from='2026-01-01'\ninput='2'\n", "listed twice"),
    ],
)
def test_mistakes_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _settings(tmp_path, text)
