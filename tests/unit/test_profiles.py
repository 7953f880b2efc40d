"""Alumet configuration profiles: rendering, golden files, validation rules, `config render|validate`."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from alumet_setup.hostside import alumet_schema, profiles

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "alumet_setup", *args], capture_output=True, text=True,
                          timeout=60, check=False, cwd=ROOT)


@pytest.mark.parametrize("name", list(profiles.PROFILES))
def test_profile_renders_valid_toml_equal_to_its_golden_file(name: str) -> None:
    text = profiles.render(name)
    doc = tomllib.loads(text)
    assert alumet_schema.validate(doc) == []
    assert alumet_schema.enabled_plugins(doc) == list(profiles.PROFILES[name].plugins)
    assert text == (GOLDEN / f"{name}.toml").read_text(encoding="utf-8")


def test_every_profile_has_a_template_and_golden_file_and_nothing_else_does() -> None:
    templates = {p.name.removesuffix(".toml.j2") for p in (ROOT / "templates" / "alumet-config").glob("[!_]*.j2")}
    assert templates == set(profiles.PROFILES)
    assert {p.stem for p in GOLDEN.glob("*.toml")} == set(profiles.PROFILES)


@pytest.mark.parametrize(("name", "strategy"),
                         [("energy-attribution", "watcher"), ("energy-attribution-exec", "event")])
def test_energy_attribution_profiles_have_what_attribution_needs(name: str, strategy: str) -> None:
    plugins = tomllib.loads(profiles.render(name))["plugins"]
    assert set(plugins["procfs"]) == {"kernel", "memory", "network", "processes"}
    assert plugins["procfs"]["processes"]["strategy"] == strategy
    formula = plugins["energy-attribution"]["formulas"]["attributed_energy"]
    assert formula["expr"] == "cpu_energy * cpu_usage / 100.0"
    assert formula["per_resource"]["cpu_energy"] == {
        "metric": "rapl_consumed_energy", "resource_kind": "local_machine", "domain": "package_total"}
    assert formula["per_consumer"]["cpu_usage"] == {"metric": "cpu_percent", "kind": "total"}
    assert set(plugins["csv"]) == set(alumet_schema.CSV_KEYS)


def test_settings_are_typed_and_rendered() -> None:
    profile = profiles.get_profile("rapl")
    values = profiles.parse_settings(profile, ["poll_interval=250ms", "no_perf_events=TRUE", "csv_delimiter=,",
                                               'output_path=/var/lib/alumet/out "1".csv'])
    plugins = tomllib.loads(profiles.render("rapl", values))["plugins"]
    assert plugins["rapl"] == {"poll_interval": "250ms", "flush_interval": "5s", "no_perf_events": True}
    assert plugins["csv"]["csv_delimiter"] == ","
    assert plugins["csv"]["output_path"] == '/var/lib/alumet/out "1".csv'  # quoted for TOML, not pasted


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("retention_time=5s", "--set retention_time: not a parameter of profile rapl"),
        ("poll_interval=1 parsec", '--set poll_interval: expected a duration such as "1s"'),
        ("poll_interval=1.5ns", "--set poll_interval: expected a duration such as \"1s\" or \"500ms\", got '1.5ns' "
                                "(humantime 2.3.0: values below 1ns are not supported)"),
        ("poll_interval=", '--set poll_interval: expected a duration'),
        ("force_flush=yes", "--set force_flush: expected true or false, got 'yes'"),
        ("csv_delimiter=;;", "--set csv_delimiter: expected a string of exactly one character"),
        ("poll_interval", "--set 'poll_interval': expected KEY=VALUE"),
    ],
)
def test_bad_settings_are_refused(setting: str, message: str) -> None:
    with pytest.raises(profiles.ProfileError, match="^" + re.escape(message)):
        profiles.parse_settings(profiles.get_profile("rapl"), [setting])


def test_render_refuses_a_template_whose_output_is_invalid(tmp_path: Path) -> None:
    (tmp_path / "alumet-config").mkdir()
    (tmp_path / "alumet-config" / "rapl.toml.j2").write_text('[plugins.rapl]\npoll_interval = "1s"\n')
    with pytest.raises(profiles.ProfileError, match=re.escape("plugins.rapl: missing key flush_interval")):
        profiles.render("rapl", template_root=tmp_path)


def test_role_defaults_and_argument_specs_match_the_profile_parameters() -> None:
    role = ROOT / "roles" / "alumet_config"
    if not (role / "defaults" / "main.yml").is_file():
        pytest.skip("roles/alumet_config/defaults/main.yml is not there yet")
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    for p in profiles.PARAMETERS:
        assert defaults[p.variable] == p.default, p.variable
        assert specs[p.variable]["default"] == p.default, p.variable
        assert tuple(specs[p.variable].get("choices", ())) == p.choices, p.variable
    assert defaults["alumet_config_profile"] == profiles.DEFAULT_PROFILE


# ---- validation rules (alumet_schema.validate) ---------------------------------------------------

def _doc(name: str = "energy-attribution") -> dict:
    return tomllib.loads((GOLDEN / f"{name}.toml").read_text(encoding="utf-8"))


def _errors_after(mutate) -> list[str]:  # type: ignore[no-untyped-def]
    doc = _doc()
    mutate(doc["plugins"])
    return alumet_schema.validate(doc)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda p: p["csv"].pop("csv_late_delimiter"), "plugins.csv: missing key csv_late_delimiter"),
        (lambda p: p["csv"].update(delimiter=";"), "plugins.csv: unknown key delimiter"),
        (lambda p: p["csv"].update(csv_delimiter="ab"),
         "plugins.csv.csv_delimiter: expected a string of exactly one character, got 'ab'"),
        (lambda p: p["csv"].update(force_flush="true"), "plugins.csv.force_flush: expected true or false, got 'true'"),
        (lambda p: p["procfs"].pop("network"), "plugins.procfs: missing key network"),
        (lambda p: p["procfs"]["processes"].update(strategy="events"),
         "plugins.procfs.processes.strategy: expected one of 'watcher', 'event', got 'events'"),
        (lambda p: p["procfs"]["processes"]["groups"][0].pop("exe_regex"),
         "plugins.procfs.processes.groups[0]: missing key exe_regex"),
        (lambda p: p["rapl"].update(poll_interval="1"),
         'plugins.rapl.poll_interval: expected a duration such as "1s" or "500ms", got \'1\''),
        (lambda p: p["rapl"].update(poll_interval=1), "plugins.rapl.poll_interval: expected a duration"),
        (lambda p: p["rapl"].update(no_perf_events=0), "plugins.rapl.no_perf_events: expected true or false, got 0"),
        (lambda p: p.update(nvidia={}), "plugins.nvidia: unknown plugin nvidia (alumet-agent 0.9.5 refuses to start)"),
        (lambda p: p["rapl"].update(enabled="no"), "plugins.rapl.enabled: expected true or false, got 'no'"),
    ]
    + [
        (lambda p, key=key: p["energy-attribution"]["formulas"]["attributed_energy"].pop(key),
         f"plugins.energy-attribution.formulas.attributed_energy: missing key {key}")
        for key in ("expr", "ref", "per_resource", "per_consumer", "retention_time")
    ]
    + [
        (lambda p: p["energy-attribution"]["formulas"]["attributed_energy"].update(ref="cpu_usage"),
         "plugins.energy-attribution.formulas.attributed_energy.ref: 'cpu_usage' is not a per_resource timeseries"),
        (lambda p: p["energy-attribution"]["formulas"]["attributed_energy"]["per_consumer"]["cpu_usage"].pop("metric"),
         "plugins.energy-attribution.formulas.attributed_energy.per_consumer.cpu_usage: missing key metric"),
    ],
)
def test_each_rule_names_the_key_path(mutate, expected: str) -> None:  # type: ignore[no-untyped-def]
    errors = _errors_after(mutate)
    assert any(e.startswith(expected) for e in errors), errors


def test_a_disabled_plugin_is_not_checked_and_switches_are_not_keys() -> None:
    doc = {"plugins": {"perf": {"enabled": False, "bogus": 1}, "csv": {"enable": True, **_doc()["plugins"]["csv"]}}}
    assert alumet_schema.validate(doc) == []
    assert alumet_schema.enabled_plugins(doc) == ["csv"]


# humantime 2.3.0 (src/duration.rs): the value in nanoseconds, or refused.
DURATIONS: list[tuple[object, int | None]] = [
    ("1s", 10**9), ("500ms", 5 * 10**8), ("1m 30s", 90 * 10**9), ("1m30s", 90 * 10**9), ("2h", 7200 * 10**9),
    ("10 sec", 10 * 10**9), ("1min", 60 * 10**9), ("1.5s", 15 * 10**8), ("0.5us", 500), ("1.25h", 4500 * 10**9),
    ("0", 0), (" 2 hours ", 7200 * 10**9), ("1 0s", 10 * 10**9), ("1\u00b5s", 1000), ("1wk", 604800 * 10**9),
    ("1M", 2_630_016 * 10**9), ("2yrs", 2 * 31_557_600 * 10**9), ("1nanos", 1),
    ("", None), ("1", None), ("s", None), ("1 parsec", None), ("-1s", None), (5, None), (1.5, None),
    ("1.s", None), ("1.5ns", None), ("1.0000000001s", None), ("1\u03bcs", None), ("1s+2s", None), ("1e3s", None),
    ("00", None), ("18446744073709551616s", None), ("1 hours min", None),
]


@pytest.mark.parametrize(("value", "nanoseconds"), DURATIONS)
def test_durations_are_read_as_humantime_2_3_reads_them(value: object, nanoseconds: int | None) -> None:
    assert alumet_schema.is_duration(value) is (nanoseconds is not None)
    if nanoseconds is not None:
        assert alumet_schema.parse_duration(str(value)) == nanoseconds


# ---- the CLI ------------------------------------------------------------------------------------

@pytest.mark.processes
def test_config_render_prints_the_golden_file() -> None:
    result = cli("config", "render", "--profile", "rapl-perf")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (GOLDEN / "rapl-perf.toml").read_text(encoding="utf-8")


@pytest.mark.processes
def test_config_render_writes_atomically_and_validate_accepts_it(tmp_path: Path) -> None:
    out = tmp_path / "alumet-config.toml"
    out.write_text("old")
    result = cli("config", "render", "--profile", "nvml", "--set", "nvml_mode=minimal", "-o", str(out), "--force")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert tomllib.loads(out.read_text())["plugins"]["nvml"]["mode"] == "minimal"
    assert [p.name for p in tmp_path.iterdir()] == ["alumet-config.toml"]  # no temporary file left
    checked = cli("config", "validate", str(out))
    assert checked.returncode == 0 and "valid for alumet-agent 0.9.5" in checked.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--profile", "gpu"],
         "unknown profile 'gpu' (known: energy-attribution, energy-attribution-exec, rapl, rapl-perf, nvml, procfs)"),
        (["--profile", "rapl", "--set", "colour=red"], "--set colour: not a parameter of profile rapl"),
        (["--set", "poll_interval=fast"], '--set poll_interval: expected a duration such as "1s" or "500ms"'),
    ],
)
@pytest.mark.processes
def test_config_render_bad_input_is_one_line_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "out.toml"
    result = cli("config", "render", *args, "-o", str(out))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"alumet-setup: error: {message}")
    assert result.stderr.count("\n") == 1
    assert not out.exists()


@pytest.mark.processes
def test_config_validate_lists_every_error_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[plugins.csv]\noutput_path = "x.csv"\n\n[plugins.gpu]\n')
    result = cli("config", "validate", str(bad))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert f"{bad}: plugins.csv: missing key csv_late_delimiter" in lines
    assert f"{bad}: plugins.gpu: unknown plugin gpu (alumet-agent 0.9.5 refuses to start)" in lines


@pytest.mark.processes
def test_config_validate_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = cli("config", "validate", str(tmp_path / "absent.toml"))
    assert result.returncode == 2 and result.stderr.startswith("alumet-setup: error: ")


@pytest.mark.processes
def test_the_role_filter_renders_every_profile_byte_for_byte_as_render_does(tmp_path: Path) -> None:
    """The alumet_config role writes what its filter plugin returns: real ansible-playbook, the filter loaded
    through the role's link (roles/alumet_config/filter_plugins), so the modules beside its target."""
    templates = str(ROOT / "templates")
    # Values are data: a TOML-hostile and a Jinja-looking string reach the file as they were typed.
    hostile = {"alumet_config_csv_delimiter": "\U0001f600",
               "alumet_config_output_path": '{{ 6 * 7 }} "q" \\ \u2028.csv'}
    plays = [{"name": "Render", "hosts": "localhost", "gather_facts": False,
              "vars": {"role_vars": {name: profiles.variables(profile) for name, profile in profiles.PROFILES.items()}},
              "tasks": [
                  {"name": "Render every profile", "loop": sorted(profiles.PROFILES), "ansible.builtin.copy": {
                      "content": f"{{{{ (item | alumet_config_render({templates!r}, role_vars[item])).text }}}}",
                      "dest": f"{tmp_path}/{{{{ item }}}}.toml"}},
                  {"name": "Render hostile values", "ansible.builtin.copy": {
                      "content": f"{{{{ ('rapl' | alumet_config_render({templates!r}, hostile)).text }}}}",
                      "dest": str(tmp_path / "hostile.toml")}}]}]
    (tmp_path / "render.yml").write_text(yaml.safe_dump(plays))
    quoted = {key: yaml.safe_dump(value, default_style='"').strip() for key, value in hostile.items()}
    (tmp_path / "hostile.yml").write_text("hostile:\n" + "".join(
        f"  {key}: !unsafe {text}\n" for key, text in quoted.items()))
    ansible = Path(sys.executable).with_name("ansible-playbook")
    env = {**os.environ, "ANSIBLE_FILTER_PLUGINS": str(ROOT / "roles" / "alumet_config" / "filter_plugins")}
    run = subprocess.run([str(ansible), "-i", "localhost,", "-c", "local", "-e",
                          f"ansible_python_interpreter={sys.executable}", "-e", f"@{tmp_path / 'hostile.yml'}",
                          str(tmp_path / "render.yml")],
                         capture_output=True, text=True, timeout=300, check=False, env=env)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    for name in profiles.PROFILES:
        assert (tmp_path / f"{name}.toml").read_text(encoding="utf-8") == profiles.render(name), name
    csv = tomllib.loads((tmp_path / "hostile.toml").read_text(encoding="utf-8"))["plugins"]["csv"]
    assert csv["csv_delimiter"] == "\U0001f600"
    assert csv["output_path"] == hostile["alumet_config_output_path"]


# ---- TOML values and the role's renderer (alumet_setup/hostside/config_filter.py) ------------------------------

UNICODE_SAMPLES = ["\U0001f600", "é", "日本", "\U00010348", '"', "\\", "\x00", "\x1f", "\x7f", "\t", "\n", "\u2028",
                   "\ufeff", "{{ 6 * 7 }}", "${HOME}", "'", "a\"b\\c\U0001f600"]


@pytest.mark.parametrize("text", UNICODE_SAMPLES)
def test_toml_value_writes_any_unicode_as_valid_toml(text: str) -> None:
    literal = profiles.toml_value(text)
    assert "\n" not in literal and tomllib.loads(f"k = {literal}\n")["k"] == text
    assert "\\ud8" not in literal.lower()  # never a JSON surrogate pair, which TOML refuses


@given(st.text(alphabet=st.characters(exclude_categories=("Cs",))))
def test_toml_value_round_trips_every_string(text: str) -> None:
    assert tomllib.loads(f"k = {profiles.toml_value(text)}\n")["k"] == text


def test_toml_value_refuses_what_utf_8_cannot_hold() -> None:
    with pytest.raises(profiles.ProfileError, match="lone surrogate"):
        profiles.toml_value("\ud83d")
    assert [profiles.toml_value(v) for v in (True, False, 7)] == ["true", "false", "7"]


def role_vars(profile: str, **overrides: object) -> dict[str, object]:
    return profiles.variables(profiles.get_profile(profile)) | {f"alumet_config_{k}": v for k, v in overrides.items()}


@pytest.mark.parametrize(("overrides", "message"), [
    ({"poll_interval": "99999999999999999999999999999s"},
     "alumet_config_poll_interval: expected a duration such as \"1s\" or \"500ms\", got "
     "'99999999999999999999999999999s' (humantime 2.3.0: number is too large)"),
    ({"flush_interval": "1.5ns"}, "alumet_config_flush_interval: expected a duration"),
    ({"csv_delimiter": ";;"}, "alumet_config_csv_delimiter: expected a string of exactly one character"),
    ({"csv_delimiter": "\ud83d"}, "alumet_config_csv_delimiter: the value is not UTF-8 text"),
    ({"csv_late_delimiter": ""}, "alumet_config_csv_late_delimiter: expected a string of exactly one character"),
    ({"force_flush": "maybe"}, "alumet_config_force_flush: expected true or false, got 'maybe'"),
    ({"output_path": 5}, "alumet_config_output_path: expected a string, got 5"),
])
def test_the_role_renderer_refuses_bad_values_naming_the_variable(overrides: dict, message: str) -> None:
    with pytest.raises(profiles.ProfileError, match=re.escape(message)):
        profiles.render_role("rapl", ROOT / "templates", role_vars("rapl", **overrides))


def test_the_role_renderer_writes_what_config_render_writes() -> None:
    for name in profiles.PROFILES:
        assert profiles.render_role(name, ROOT / "templates", role_vars(name)) == profiles.render(name)
    text = profiles.render_role("rapl", ROOT / "templates", role_vars("rapl", csv_delimiter="\U0001f600",
                                                                      force_flush="false"))
    assert text == profiles.render("rapl", {"csv_delimiter": "\U0001f600", "force_flush": False})
    assert tomllib.loads(text)["plugins"]["csv"]["csv_delimiter"] == "\U0001f600"


@pytest.mark.parametrize("form", ["link", "copy"])
def test_the_filter_plugin_loads_in_every_form(tmp_path: Path, form: str) -> None:
    """Through the role's link (checkout, collection): the modules beside the target; as a copy (the
    wheel's _bundled/roles has no links): the installed alumet_setup package."""
    link = ROOT / "roles" / "alumet_config" / "filter_plugins" / "alumet_config_render.py"
    assert link.is_symlink() and link.resolve() == (ROOT / "alumet_setup" / "hostside" / "config_filter.py").resolve()
    path = link
    if form == "copy":
        path = tmp_path / "alumet_config_render.py"
        shutil.copyfile(link, path)
    spec = importlib.util.spec_from_file_location(f"ansible_filter_{form}", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    filters = module.FilterModule().filters()
    assert filters["alumet_config_variables"]("rapl") == profiles.role_variables("rapl")
    assert filters["alumet_config_render"]("rapl", str(ROOT / "templates"), role_vars("rapl")) == \
        {"text": profiles.render("rapl"), "error": ""}
    refused = filters["alumet_config_render"]("rapl", str(ROOT / "templates"), role_vars("rapl", csv_delimiter="ab"))
    assert refused["text"] == "" and "alumet_config_csv_delimiter" in refused["error"]
    assert filters["alumet_config_variables"]("bogus") == []


def test_procfs_flushes_every_4s_as_upstream_and_the_setting_reaches_groups_and_events() -> None:
    """Upstream's procfs default is 4s for the watcher groups and the events (plugins/procfs/src/lib.rs); the
    service runs the watcher, so a setting the groups never read would have no effect there."""
    def flushes(values: dict[str, str] | None = None) -> tuple[str, str]:
        processes = tomllib.loads(profiles.render("energy-attribution", values))["plugins"]["procfs"]["processes"]
        return processes["groups"][0]["flush_interval"], processes["events"]["flush_interval"]
    assert flushes() == ("4s", "4s")
    assert flushes({"process_flush_interval": "7s"}) == ("7s", "7s")
    assert flushes({"flush_interval": "9s"}) == ("4s", "4s")  # rapl, perf and nvml only
