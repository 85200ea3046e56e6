"""[allocation] in unitledger.toml: parsed into config.Allocation; a bad rule names file and rule."""

from pathlib import Path

import pytest

from unitledger.config import AccountRule, Allocation, ConfigError, MeterRule, load_settings
from tests.conftest import REPO


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "unitledger.toml"
    path.write_text(text)
    return path


def test_the_bundled_config_documents_allocation_with_its_defaults():
    assert load_settings(REPO / "unitledger.toml").allocation == Allocation()
    assert Allocation().token_coverage_warn == 0.95


def test_allocation_section_is_parsed(tmp_path):
    path = _write(
        tmp_path,
        """
[allocation]
token_coverage_warn = 0.9
fully_loaded = true
[allocation.model_aliases]
"r1" = "deepseek-r1"
[allocation.provider_aliases]
"gw" = "openai"
[allocation.units]
"10K Tokens" = 10000
[[allocation.meter_rules]]
pattern = "^Acme (?P<model>[a-z0-9-]+) prompt$"
token_type = "input"
[[allocation.meter_rules]]
pattern = "^Acme out$"
model = "acme-2"
token_type = "output"
columns = ["ChargeDescription"]
[[allocation.account_rules]]
billing_account_id = "acct-us"
feature_tag = "support_chat"
sub_account_id = "proj-support"
""",
    )
    allocation = load_settings(path).allocation
    assert allocation == Allocation(
        model_aliases=(("r1", "deepseek-r1"),),
        provider_aliases=(("gw", "openai"),),
        units=(("10K Tokens", 10000),),
        meter_rules=(
            MeterRule(pattern="^Acme (?P<model>[a-z0-9-]+) prompt$", token_type="input"),
            MeterRule(pattern="^Acme out$", token_type="output", model="acme-2", columns=("ChargeDescription",)),
        ),
        account_rules=(AccountRule(billing_account_id="acct-us", sub_account_id="proj-support", feature_tag="support_chat"),),
        token_coverage_warn=0.9,
        fully_loaded=True,
    )


@pytest.mark.parametrize(
    "section, message",
    [
        ('[[allocation.meter_rules]]\npattern = "Acme (unclosed"\ntoken_type = "input"\nmodel = "m"',
         "allocation.meter_rules[0] (pattern 'Acme (unclosed'): not a valid regular expression"),
        ('[[allocation.meter_rules]]\npattern = "x"\nmodel = "m"\ntoken_type = "input"\n'
         '[[allocation.meter_rules]]\npattern = "y"\nmodel = "m"\ntoken_type = "reasoning"',
         "allocation.meter_rules[1] (pattern 'y'): token_type 'reasoning' must be one of input, output, cache_read, cache_write"),
        ('[[allocation.meter_rules]]\npattern = "^Acme in$"\ntoken_type = "input"',
         "allocation.meter_rules[0] (pattern '^Acme in$'): give `model`, or a (?P<model>...) group"),
        ('[[allocation.meter_rules]]\npattern = "x"\nmodel = "m"\ntoken_type = "input"\ncolumns = ["Tags"]',
         "allocation.meter_rules[0] (pattern 'x'): columns ['Tags'] must be a non-empty list of"),
        ('[[allocation.account_rules]]\nfeature_tag = "chat"', "allocation.account_rules[0]: billing_account_id is required"),
        ('[[allocation.account_rules]]\nbilling_account_id = "a"\nteam = "x"', "allocation.account_rules[0]: unknown key(s) team"),
        ('[allocation.units]\n"1K Tokens" = 0', "allocation.units.1K Tokens: 0 must be a whole number"),
        ("[allocation]\ntoken_coverage_warn = 95", "allocation.token_coverage_warn: 95 must be a number from 0 to 1"),
        ("[allocation]\nmeter_rule = []", "[allocation]: unknown key(s) meter_rule"),
        ('[allocation]\nfully_loaded = "yes"', "allocation.fully_loaded must be true or false, got 'yes'"),
        ('[allocation.model_aliases]\n"r1" = ""', "allocation.model_aliases.r1: '' must be a non-empty string"),
    ],
)
def test_a_bad_allocation_rule_names_the_file_and_the_rule(tmp_path, section, message):
    path = _write(tmp_path, section + "\n")
    with pytest.raises(ConfigError) as failure:
        load_settings(path)
    assert str(failure.value).startswith(f"{path}: ")
    assert message in str(failure.value)
