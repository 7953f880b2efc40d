"""Settings a user can discover (issue 15): `alumet-setup settings`, near-name suggestions for an
unknown --set key, and shell completion of steps, settings and profiles."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from alumet_setup.cli import cli
from alumet_setup.hostside import resources
from alumet_setup.playbook.settings import STEPS, SettingError, load_specs, parse_settings

SPECS = load_specs(resources.bundled("roles"))


def listing(*args: str) -> str:
    result = CliRunner().invoke(cli, ["settings", *args])
    assert result.exit_code == 0, result.output
    return result.output


INTERNAL = ["alumet_config_template_dir", "install_record_digest"]  # what alumet-setup sets itself
USER_SETTINGS = sorted(set(SPECS) - set(INTERNAL))


def test_every_setting_is_listed_once_under_a_step_heading():
    text = listing()
    names = [line.split()[0] for line in text.splitlines() if line.startswith("  ") and not line.startswith("   ")]
    assert sorted(names) == USER_SETTINGS
    headings = [line[:-1] for line in text.splitlines() if line and not line.startswith(" ")]
    assert [h for h in headings if h in STEPS] == [s for s in STEPS if s in headings]  # in step order


def test_a_setting_shows_its_type_default_bounds_and_description():
    text = listing("--step", "sysctl")
    assert text.splitlines()[0] == "sysctl:"
    assert "  perf_paranoid_value (int, default: 2) from -1 to 4" in text.splitlines()
    assert "kernel.perf_event_paranoid" in text
    assert "alumet_config_" not in text  # another step's


def test_choices_are_listed():
    line = next(ln for ln in listing("--step", "config").splitlines() if ln.startswith("  alumet_config_nvml_mode "))
    assert line.endswith("one of: full, minimal")


def test_what_alumet_setup_sets_itself_is_not_listed():
    """Issue 25: the run's digest and the templates' directory are the tool's, not a user's to set."""
    assert sorted(name for name, option in SPECS.items() if option.internal) == INTERNAL
    text = listing()
    assert not [name for name in INTERNAL if name in text]
    assert not [row["name"] for row in json.loads(listing("--json")) if row["name"] in INTERNAL]


def test_values_are_spelled_as_yaml_and_toml_write_them():
    """`--set capabilities_ptrace=true`, not Python's True."""
    text = listing()
    line = next(ln for ln in text.splitlines() if ln.startswith("  capabilities_ptrace "))
    assert line.endswith("one of: auto, true, false")
    assert not [w for w in ("True", "False", "None") if f" {w}" in text or f"{w}," in text]


def test_the_listing_in_json():
    rows = json.loads(listing("--json"))
    assert sorted(row["name"] for row in rows) == USER_SETTINGS
    by_name = {row["name"]: row for row in rows}
    assert by_name["perf_paranoid_value"] == {
        **by_name["perf_paranoid_value"], "step": "sysctl", "role": "alumet_sysctl", "type": "int", "default": 2,
        "range": [-1, 4]}
    assert by_name["capabilities_ptrace"]["choices"] == ["auto", True, False]
    assert "git URL" in by_name["alumet_agent_git_url"]["format"]
    assert {row["step"] for row in json.loads(listing("--json", "--step", "group"))} == {"group"}


@pytest.mark.processes
def test_settings_rejects_an_unknown_step_in_one_line():
    result = subprocess.run([sys.executable, "-m", "alumet_setup", "settings", "--step", "nope"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("alumet-setup: error: unknown step nope") and result.stderr.count("\n") == 1


def test_an_unknown_setting_suggests_the_nearest_names_not_all_of_them():
    with pytest.raises(SettingError) as caught:
        parse_settings(["perf_paranoid_valeu=1"], SPECS)
    message = str(caught.value)
    assert message.startswith("unknown setting perf_paranoid_valeu (did you mean perf_paranoid_value")
    assert "alumet_config_nvml_mode" not in message and len(message) < 200


def test_an_unknown_setting_far_from_every_name_points_at_the_listing():
    with pytest.raises(SettingError) as caught:
        parse_settings(["zzz=1"], SPECS)
    assert str(caught.value) == "unknown setting zzz (`alumet-setup settings` lists them all)"


def complete(line: str) -> list[str]:
    """What bash completion offers for the last word of `line` (click's bash protocol)."""
    words = line.split(" ")
    env = {**os.environ, "_ALUMET_SETUP_COMPLETE": "bash_complete", "COMP_WORDS": line,
           "COMP_CWORD": str(len(words) - 1)}
    result = subprocess.run([sys.executable, "-c", "from alumet_setup.cli import main; main()"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return [row.split(",", 1)[1] for row in result.stdout.splitlines() if row]  # none: one empty line


@pytest.mark.processes
def test_completion_of_commands_steps_settings_and_profiles():
    assert {"doctor", "install", "uninstall", "settings", "config"} <= set(complete("alumet-setup "))
    assert complete("alumet-setup install --only pre") == ["prereqs"]
    assert complete("alumet-setup uninstall --skip prereqs,sy") == ["prereqs,sysctl"]
    assert complete("alumet-setup install --set perf_paranoid_v") == ["perf_paranoid_value="]
    assert complete("alumet-setup install --set alumet_config_nvml_mode=") == [
        "alumet_config_nvml_mode=full", "alumet_config_nvml_mode=minimal"]
    assert complete("alumet-setup install --set alumet_config_profile=rapl") == [
        "alumet_config_profile=rapl", "alumet_config_profile=rapl-perf"]
    assert "rapl-perf" in complete("alumet-setup config render --profile rapl")
    assert complete("alumet-setup settings --step cap") == ["capabilities"]


@pytest.mark.parametrize(("pair", "message"), [
    ("alumet_config_poll_interval=99999999999999999999999999999s",
     "'99999999999999999999999999999s' is not a duration alumet-agent reads"),
    ("alumet_config_retention_time=1.5ns", "'1.5ns' is not a duration alumet-agent reads"),
    ("alumet_config_csv_delimiter=ab", "'ab' is not exactly one character"),
])
def test_config_values_the_agent_refuses_are_refused_before_any_step_runs(pair: str, message: str) -> None:
    with pytest.raises(SettingError, match=message):
        parse_settings([pair], SPECS)


def test_an_emoji_delimiter_is_one_character_for_the_agent_and_is_accepted() -> None:
    assert parse_settings(["alumet_config_csv_delimiter=\U0001f600"], SPECS) == \
        {"alumet_config_csv_delimiter": "\U0001f600"}


@pytest.mark.processes
def test_completion_of_bool_values_and_not_of_internal_variables():
    assert complete("alumet-setup install --set perf_paranoid_allow_override=") == [
        "perf_paranoid_allow_override=true", "perf_paranoid_allow_override=false"]
    assert complete("alumet-setup install --set capabilities_ptrace=") == [
        "capabilities_ptrace=auto", "capabilities_ptrace=true", "capabilities_ptrace=false"]
    assert complete("alumet-setup install --set install_record_d") == []
    assert complete("alumet-setup install --set alumet_config_t") == []


@pytest.mark.processes
def test_completion_of_config_render_parameters_and_their_values():
    assert complete("alumet-setup config render --profile nvml --set nvml_m") == ["nvml_mode="]
    assert complete("alumet-setup config render --profile nvml --set nvml_mode=") == [
        "nvml_mode=full", "nvml_mode=minimal"]
    assert complete("alumet-setup config render --set force_flush=t") == ["force_flush=true"]
    assert complete("alumet-setup config render --profile procfs --set nvml_m") == []
