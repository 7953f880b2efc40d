"""alumet_schema refuses what alumet-agent v0.9.5 refuses and accepts what it accepts.

Each rule names its upstream source in docs/alumet-upstream.md ("Schema rules").
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from alumet_setup.hostside import alumet_schema, profiles

ROOT = Path(__file__).resolve().parents[2]


def doc(profile: str = "energy-attribution") -> dict[str, Any]:
    return tomllib.loads(profiles.render(profile))


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "alumet_setup", *args], capture_output=True, text=True,
                          timeout=60, check=False, cwd=ROOT, env=env)


# ---- enabled / enable: the agent removes only one of them (core/alumet/src/agent/config.rs) --------------

def test_enabled_and_enable_together_reach_a_strict_plugin_and_are_refused() -> None:
    config = doc("rapl")
    config["plugins"]["rapl"].update(enabled=True, enable=True)
    assert alumet_schema.validate(config) == [
        "plugins.rapl: both enabled and enable: the agent removes only enabled, and rapl refuses the key enable "
        "it is then given"]


def test_enable_alone_is_the_switch_and_enabled_wins_when_both_are_there() -> None:
    config = doc("rapl")
    config["plugins"]["rapl"]["enable"] = True
    assert alumet_schema.validate(config) == []
    config["plugins"]["rapl"].update(enabled=False, enable="not read")  # disabled: never initialised
    assert alumet_schema.validate(config) == []
    assert alumet_schema.enabled_plugins(config) == ["csv"]


def test_energy_attribution_does_not_deny_unknown_keys_so_both_switches_pass() -> None:
    config = doc()
    config["plugins"]["energy-attribution"].update(enabled=True, enable=False)
    assert alumet_schema.validate(config) == []
    assert "energy-attribution" in alumet_schema.enabled_plugins(config)  # `enabled` is the one read


# ---- exe_regex: serde_regex.rs unwraps Regex::new (plugins/procfs/src/serde_regex.rs) --------------------

@pytest.mark.parametrize(("pattern", "problem"), [
    # regex-syntax 0.8's own words: the crate itself judges (paula, docs/alumet-upstream.md)
    ("(?=python)", "look-around, including look-ahead and look-behind, is not supported"),
    ("(?<!x)y", "look-around, including look-ahead and look-behind, is not supported"),
    ("(a)\\1", "backreferences are not supported"),
    ("(?P<a>x)(?P=a)", "unrecognized flag"),
    ("(?>ab)", "unrecognized flag"),
    ("(?(1)a|b)", "unrecognized flag"),
    ("a\\Z", "unrecognized escape sequence"),
    ("java{", "unclosed counted repetition"),
    ("x{,3}", "repetition quantifier expects a valid decimal"),
    ("[a-", "unclosed character class"),
    ("(unclosed", "unclosed group"),
    ("a{4294967296}", "decimal literal invalid"),
    # what Python's re accepts and Rust refuses (issue 24)
    ("(?a)\\w+", "unrecognized flag"),
    ("[[a]", "unclosed character class"),  # "[" opens a nested class in Rust
    ("\\p{Klingon}", "Unicode property not found"),
    ("(" * 251 + "a" + ")" * 251, "exceed the maximum number of nested parentheses/brackets (250)"),
    ("\\w{1000}", "Compiled regex exceeds size limit of 10485760 bytes."),
    ("\\N{DIGIT ONE}", "unrecognized escape sequence"),
])
def test_exe_regex_rust_refuses_is_refused(pattern: str, problem: str) -> None:
    config = doc()
    config["plugins"]["procfs"]["processes"]["groups"][0]["exe_regex"] = pattern
    errors = alumet_schema.validate(config)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"plugins.procfs.processes.groups[0].exe_regex: invalid regex {pattern!r}: {problem}")
    assert errors[0].endswith("(the agent panics on it)")


@pytest.mark.parametrize("pattern", [
    "", ".*", "^/usr/bin/(python|java)[0-9.]*$", "\\(?=literal", "[(?=]", "a**", "(?<name>x)", "\\p{Greek}+",
    "\\x{41}{2}", "a\\z", "(?U)a+", "[[:alpha:]]", "\\bword\\b", "(?i)stress-ng", "a{2}", "a{2,}", "a{2,5}",
    "\\\\1",
    # what Python's re refuses and Rust accepts (issue 24)
    "^*/usr/bin/x", "/usr/bin/(?i)java", "(?i)a(?-i)B", "(" * 250 + "a" + ")" * 250, "\\w{100}",
])
def test_exe_regex_rust_accepts_is_accepted(pattern: str) -> None:
    assert alumet_schema.rust_regex_problem(pattern) is None


# ---- perf events: plugins/perf/src/events.rs parse_hardware / parse_software / parse_cache ---------------

@pytest.mark.parametrize(("key", "name", "message"), [
    ("hardware_events", "REF_CYCLES", "invalid hardware event in config: 'REF_CYCLES'"),
    ("hardware_events", "cycles", "invalid hardware event in config: 'cycles'"),
    ("software_events", "CPU_CLOCK", "invalid software event in config: 'CPU_CLOCK'"),  # refused upstream on purpose
    ("software_events", "DUMMY", "invalid software event in config: 'DUMMY'"),
    ("cache_events", "LL_READ", "invalid cache event in config: 'LL_READ'"),
    ("cache_events", "L2_READ_MISS", "invalid cache event in config: 'L2_READ_MISS'"),
    ("cache_events", "LL_READ_MISS_X", "invalid cache event in config: 'LL_READ_MISS_X'"),
    ("hardware_events", "cpu_cycle\u017f", "invalid hardware event in config: 'cpu_cycle\u017f'"),  # not ASCII
])
def test_perf_event_names_outside_upstreams_lists_are_refused(key: str, name: str, message: str) -> None:
    config = doc("rapl-perf")
    config["plugins"]["perf"][key] = [name]
    errors = alumet_schema.validate(config)
    assert len(errors) == 1 and errors[0].startswith(f"plugins.perf.{key}: {message}"), errors


def test_every_name_of_upstreams_lists_is_accepted_in_any_case() -> None:
    config = doc("rapl-perf")
    perf = config["plugins"]["perf"]
    perf["hardware_events"] = [*sorted(alumet_schema.PERF_HARDWARE_EVENTS), "ref_cpu_cycles"]
    perf["software_events"] = [*sorted(alumet_schema.PERF_SOFTWARE_EVENTS), "page_faults"]
    perf["cache_events"] = [f"{c}_{o}_{r}" for c in alumet_schema.PERF_CACHE_IDS for o in alumet_schema.PERF_CACHE_OPS
                            for r in alumet_schema.PERF_CACHE_RESULTS] + ["l1d_read_access"]
    assert len(perf["hardware_events"]) == 11 and len(perf["software_events"]) == 9 and len(perf["cache_events"]) == 43
    assert alumet_schema.validate(config) == []


# ---- energy-attribution: formulas name metrics some enabled plugin registers (formula/prepared.rs) ---------

def test_a_formula_naming_a_metric_no_enabled_plugin_produces_is_refused() -> None:
    config = doc()
    config["plugins"]["procfs"]["processes"]["enabled"] = False  # no cpu_percent any more
    assert alumet_schema.validate(config) == [
        "plugins.energy-attribution.formulas.attributed_energy.per_consumer.cpu_usage.metric: could not find metric "
        "'cpu_percent': no enabled plugin produces it"]


def test_formula_metrics_follow_the_plugins_switches_and_their_sub_tables() -> None:
    config = doc()
    config["plugins"]["rapl"]["enabled"] = False
    errors = alumet_schema.validate(config)
    assert errors == ["plugins.energy-attribution.formulas.attributed_energy.per_resource.cpu_energy.metric: could not "
                      "find metric 'rapl_consumed_energy': no enabled plugin produces it"]
    config = doc()
    series = config["plugins"]["energy-attribution"]["formulas"]["attributed_energy"]["per_consumer"]
    series["mem"] = {"metric": "mem_available"}  # procfs memory: MemAvailable, in snake case
    series["sw"] = {"metric": "nvml_sm_utilization"}
    assert [e.split(": ")[1] for e in alumet_schema.validate(config)] == ["could not find metric 'nvml_sm_utilization'"]


def test_a_plugin_we_do_not_model_may_produce_the_metric_so_nothing_is_refused() -> None:
    config = doc()
    config["plugins"]["procfs"]["processes"]["enabled"] = False
    config["plugins"]["cgroups"] = {"poll_interval": "5s"}
    assert alumet_schema.produced_metrics(config) is None
    assert alumet_schema.validate(config) == []


def test_an_empty_formulas_table_is_valid_upstream() -> None:
    config = doc()
    config["plugins"]["energy-attribution"]["formulas"] = {}
    assert alumet_schema.validate(config) == []


# ---- formula expressions: compiled by evalexpr 11.3.1's build_operator_tree at start (formula/prepared.rs) --

EVALEXPR_CASES = json.loads((ROOT / "tests/fixtures/evalexpr/integration-11.3.1.json").read_text(encoding="utf-8"))


def with_expr(expr: str) -> dict[str, Any]:
    config = doc()
    config["plugins"]["energy-attribution"]["formulas"]["attributed_energy"]["expr"] = expr
    return config


def test_the_issues_unclosed_parenthesis_is_refused_with_evalexprs_reason() -> None:
    assert alumet_schema.validate(with_expr("cpu_energy * (cpu_usage / 100.0")) == [
        "plugins.energy-attribution.formulas.attributed_energy.expr: evalexpr cannot compile "
        "'cpu_energy * (cpu_usage / 100.0': Found an unmatched opening parenthesis '('."]


@pytest.mark.parametrize(("expr", "reason"), [
    ("cpu_energy * cpu_usage / 100.0)", "Found an unmatched closing parenthesis ')'."),
    ("cpu_energy & cpu_usage", "Found a partial token '&' that should not be followed by ' '."),
    ("cpu_energy | cpu_usage", "Found a partial token '|' that should not be followed by ' '."),
    ("2 cpu_energy", "Tried to append a node to a leaf node."),
    ("2 (cpu_usage)", "Found an opening parenthesis that is preceded by something that does not take any arguments "
                      "on the right, or found a closing parenthesis that is succeeded by something that does not take "
                      "any arguments on the left."),
    ('cpu_energy * "x', "Found an unmatched double quote '\"'"),
    ('"a\\n"', "Illegal escape sequence: \\n"),
    ("cpu_energy /* the share", "Error: unmatched inline comment"),
])
def test_what_evalexpr_refuses_to_build_is_refused(expr: str, reason: str) -> None:
    assert alumet_schema.evalexpr_build_error(expr) == reason
    assert [e.split(": ", 2)[2] for e in alumet_schema.validate(with_expr(expr))] == [reason]


@pytest.mark.parametrize("expr", [
    "cpu_energy * (cpu_usage / 100.0)", "max(cpu_energy, 0.0) * min(cpu_usage, 100) / 1e2",
    "if(cpu_usage > 50 && !(cpu_usage >= 99.5) || cpu_usage == 0, cpu_energy, 0.0)", "cpu_energy * 2.5E-3",
    "cpu.energy_total * cpu_usage % 7 ^ 2", "math::ln(cpu_energy) // a comment", "cpu_energy /* x */ * 1",
    "cpu_energy (cpu_usage)",  # a name before a value is a function call
    "-cpu_energy * -(cpu_usage)", "0xff * cpu_energy", "cpu_energy\n*\tcpu_usage",
    # built, then refused only when evaluated: the agent starts (variables are bound at each evaluation)
    "", "cpu_energy +", "unknown_variable * 2",
])
def test_what_evalexpr_builds_is_accepted(expr: str) -> None:
    assert alumet_schema.evalexpr_build_error(expr) is None
    assert alumet_schema.validate(with_expr(expr)) == []


def test_a_hostile_expression_is_judged_quickly_or_left_unchecked() -> None:
    import time

    start = time.monotonic()
    assert alumet_schema.evalexpr_build_error("-" * 999 + "1") is None
    assert alumet_schema.evalexpr_build_error("(" * 1001) is None  # too long: not checked, never refused
    assert alumet_schema.evalexpr_build_error("(" * 999) == "Found an unmatched opening parenthesis '('."
    assert time.monotonic() - start < 5


def test_evalexprs_own_test_expressions_are_built_or_refused_as_it_does() -> None:
    refused, accepted = EVALEXPR_CASES["refused"], EVALEXPR_CASES["accepted"]
    assert len(refused) == 11 and len(accepted) == 332
    assert {e for e in refused if alumet_schema.evalexpr_build_error(e) is None} == set()
    assert [e for e in accepted if alumet_schema.evalexpr_build_error(e) is not None] == []


# ---- metrics registered twice with another type or unit stop the agent (core/alumet/src/metrics/registry.rs) --

def test_a_formula_named_like_a_procfs_metric_of_another_type_is_refused() -> None:
    config = doc()
    formulas = config["plugins"]["energy-attribution"]["formulas"]
    formulas["memory_usage"] = formulas.pop("attributed_energy")
    assert alumet_schema.validate(config) == [
        "plugins.energy-attribution.formulas.memory_usage: metric 'memory_usage' (f64, J) is also registered by "
        "plugins.procfs.processes as (u64, B): the agent stops at start (This metric has already been registered: "
        "memory_usage); rename one of them"]


def test_a_meminfo_entry_named_like_a_procfs_process_metric_is_refused() -> None:
    config = doc()
    config["plugins"]["procfs"]["memory"]["metrics"] = ["MemTotal", "cpu_percent"]
    assert alumet_schema.validate(config) == [
        "plugins.procfs.processes: metric 'cpu_percent' (f64, %) is also registered by "
        "plugins.procfs.memory.metrics as (u64, B): the agent stops at start (This metric has already been "
        "registered: cpu_percent); rename one of them"]


def test_the_same_metric_with_the_same_type_and_unit_is_one_metric() -> None:
    config = doc()
    # u64 bytes both: memory_usage (processes), network_bytes; a formula's f64 joules: rapl's metric
    config["plugins"]["procfs"]["memory"]["metrics"] = ["MemTotal", "memory_usage", "MemTotal", "network_bytes"]
    formulas = config["plugins"]["energy-attribution"]["formulas"]
    formulas["rapl_consumed_energy"] = formulas["attributed_energy"]
    assert alumet_schema.metric_conflicts(config) == []
    assert alumet_schema.validate(config) == []


def test_conflicts_across_plugins_name_both_sides() -> None:
    config = doc()
    config["plugins"]["nvml"] = {"mode": "minimal"}
    formulas = config["plugins"]["energy-attribution"]["formulas"]
    formulas["nvml_energy_consumption"] = formulas["attributed_energy"]  # nvml's is f64 in mJ
    config["plugins"]["procfs"]["memory"]["metrics"] = ["kernel_cpu_time"]  # procfs kernel's is u64 in ms
    assert [e.split(" as (")[0] for e in alumet_schema.metric_conflicts(config)] == [
        "plugins.procfs.memory.metrics: metric 'kernel_cpu_time' (u64, B) is also registered by plugins.procfs.kernel",
        "plugins.nvml: metric 'nvml_energy_consumption' (f64, mJ) is also registered by "
        "plugins.energy-attribution.formulas.nvml_energy_consumption"]
    config["plugins"]["procfs"]["kernel"]["enabled"] = False
    assert len(alumet_schema.metric_conflicts(config)) == 1


def test_meminfo_entries_must_be_ascii_or_the_agent_panics() -> None:
    config = doc()
    config["plugins"]["procfs"]["memory"]["metrics"] = ["MemTotal", "M\u00e9mFree"]
    assert alumet_schema.validate(config) == [
        "plugins.procfs.memory.metrics: entries must be ASCII (the agent panics otherwise), got 'M\u00e9mFree'"]


@pytest.mark.parametrize(("entry", "metric"), [
    ("MemTotal", "mem_total"), ("SReclaimable", "s_reclaimable"), ("NFS_Unstable", "nfs_unstable"),
    ("Committed_AS", "committed_as"), ("A", "A"), ("Hugepagesize", "hugepagesize"),
])
def test_meminfo_metric_names_are_upstreams_snake_case(entry: str, metric: str) -> None:
    assert alumet_schema.meminfo_metric_name(entry) == metric


# ---- ${VAR}: substituted in the whole text before parsing (core/alumet/src/agent/config.rs) ---------------

def test_env_substitution_is_the_agents() -> None:
    env = {"DIR": "/var/lib/alumet"}
    assert alumet_schema.substitute_env('a = "${DIR}/x" # ${DIR}', env) == 'a = "/var/lib/alumet/x" # /var/lib/alumet'
    assert alumet_schema.substitute_env("\\${NOT_A_VAR} ${DIR}", env) == "${NOT_A_VAR} /var/lib/alumet"
    with pytest.raises(ValueError, match="the environment variable NOPE does not exist"):
        alumet_schema.substitute_env("# only a comment ${NOPE}", env)
    with pytest.raises(ValueError, match="wrong use of the substitution syntax"):
        alumet_schema.substitute_env("a = '${DIR'", env)


def test_an_unset_variable_fails_validation_and_a_set_one_is_substituted() -> None:
    text = profiles.render("rapl").replace('"alumet-output.csv"', '"${ALUMET_TEST_OUT}/out.csv"')
    assert alumet_schema.validate_text(text, {}) == [
        "env var substitution failed: the environment variable ALUMET_TEST_OUT does not exist (the agent "
        "substitutes ${...} anywhere in the file, comments included; write \\${ for a literal)"]
    assert alumet_schema.validate_text(text, {"ALUMET_TEST_OUT": "/tmp"}) == []


# ---- how the agent runs: only exec/watch publish StartConsumerMeasurement --------------------------------

@pytest.mark.parametrize("name", list(profiles.PROFILES))
def test_each_profile_declares_how_it_runs_and_its_measurements_fit(name: str) -> None:
    profile = profiles.PROFILES[name]
    text = profiles.render(name)
    runs = next(line for line in text.splitlines() if line.startswith("# Meant to run as: "))
    assert runs.removeprefix("# Meant to run as: ").split(" (")[0] == ", ".join(profile.runs)
    event_only = alumet_schema.event_only_measurements(tomllib.loads(text))
    # A profile meant for the service measures everything it enables under `run`; an exec-only one does not.
    assert bool(event_only) is ("service" not in profile.runs)


def test_the_default_profile_is_the_services_with_upstreams_watcher_shape() -> None:
    assert profiles.PROFILES[profiles.DEFAULT_PROFILE].runs == ("service",)
    processes = doc(profiles.DEFAULT_PROFILE)["plugins"]["procfs"]["processes"]
    assert processes["strategy"] == "watcher"
    # procfs's ProcessMonitoring::default(): one group matching every process, 2s/4s, quick memory.
    assert processes["groups"] == [{"exe_regex": "", "poll_interval": "2s", "flush_interval": "4s",
                                    "memory_mode": "quick"}]
    assert processes["refresh_interval"] == "2s"


def test_event_only_measurements_name_procfs_event_and_perf() -> None:
    assert [w.split(" ")[0] for w in alumet_schema.event_only_measurements(doc("energy-attribution-exec"))] == [
        "plugins.procfs.processes.strategy"]
    assert [w.split(" ")[0] for w in alumet_schema.event_only_measurements(doc("rapl-perf"))] == ["plugins.perf"]
    config = doc("energy-attribution-exec")
    del config["plugins"]["procfs"]["processes"]["strategy"]  # upstream's default is the watcher
    assert alumet_schema.event_only_measurements(config) == []


# ---- `config validate`: one line per problem, exit 1; --for service warns --------------------------------

@pytest.mark.processes
def test_validate_prints_one_line_per_problem_naming_key_and_rule(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    text = profiles.render("rapl-perf").replace('"LL_READ_MISS"', '"LL_READ"').replace('"1s"', '"1.5ns"', 1)
    config.write_text(text + '\n[plugins.gpu]\n')
    result = cli("config", "validate", str(config))
    assert result.returncode == 1 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 3, lines
    assert lines[0] == (f"{config}: plugins.rapl.poll_interval: expected a duration such as \"1s\" or \"500ms\", got "
                        "'1.5ns' (humantime 2.3.0: values below 1ns are not supported)")
    assert lines[1].startswith(f"{config}: plugins.perf.cache_events: invalid cache event in config: 'LL_READ'")
    assert lines[2] == f"{config}: plugins.gpu: unknown plugin gpu (alumet-agent 0.9.5 refuses to start)"
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.processes
def test_validate_for_service_warns_about_exec_only_measurements(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(profiles.render("energy-attribution-exec"))
    plain = cli("config", "validate", str(config))
    assert plain.returncode == 0 and "warning" not in plain.stdout
    service = cli("config", "validate", "--for", "service", str(config))
    assert service.returncode == 0
    assert service.stdout.splitlines() == [
        f'{config}: warning: plugins.procfs.processes.strategy = "event" measures only the program of alumet-agent '
        'exec/watch: under run (the service) no process is measured; use strategy = "watcher"',
        f"{config}: valid for alumet-agent 0.9.5 (service)"]
    config.write_text(profiles.render("energy-attribution"))
    assert "warning" not in cli("config", "validate", "--for", "service", str(config)).stdout


@pytest.mark.processes
def test_validate_substitutes_from_the_environment_of_the_run_it_is_for(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(profiles.render("rapl").replace('"alumet-output.csv"', '"${ALUMET_TEST_OUT}/o.csv"'))
    env = {"PATH": "/usr/bin:/bin", "ALUMET_TEST_OUT": "/tmp"}
    assert cli("config", "validate", str(config), env=env).returncode == 0
    for_service = cli("config", "validate", "--for", "service", str(config), env=env)
    assert for_service.returncode == 1
    assert "the environment variable ALUMET_TEST_OUT does not exist" in for_service.stdout
    config.write_text(profiles.render("rapl").replace('"alumet-output.csv"', '"${STATE_DIRECTORY}/o.csv"'))
    assert cli("config", "validate", "--for", "service", str(config), env=env).returncode == 0


@pytest.mark.processes
def test_validate_json_is_one_document_with_the_problems_and_the_same_exit_code(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    text = profiles.render("rapl-perf").replace('"LL_READ_MISS"', '"LL_READ"').replace('"1s"', '"1.5ns"', 1)
    config.write_text(text + '\n[plugins.gpu]\n')
    lines = cli("config", "validate", str(config)).stdout.splitlines()
    invalid = cli("config", "validate", "--json", str(config))
    assert invalid.returncode == 1 and invalid.stderr == ""
    document = json.loads(invalid.stdout)  # the whole of stdout
    assert document == {"file": str(config), "valid": False, "for": None, "alumet_version": "0.9.5",
                        "problems": [{"severity": "error", "message": line.removeprefix(f"{config}: ")}
                                     for line in lines]}
    # Valid for the service, with a warning: exit 0, the warning is a problem of severity warning.
    config.write_text(profiles.render("energy-attribution-exec"))
    valid = cli("config", "validate", "--json", "--for", "service", str(config))
    assert valid.returncode == 0 and valid.stderr == ""
    document = json.loads(valid.stdout)
    assert document["valid"] is True and document["for"] == "service"
    assert [p["severity"] for p in document["problems"]] == ["warning"]
    assert document["problems"][0]["message"].startswith('plugins.procfs.processes.strategy = "event"')
    # A file that cannot be read stays a usage error: one line on stderr, exit 2, nothing on stdout.
    missing = cli("config", "validate", "--json", str(tmp_path / "absent.toml"))
    assert missing.returncode == 2 and missing.stdout == "" and missing.stderr.count("\n") == 1


@pytest.mark.processes
def test_validate_bad_for_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(profiles.render("rapl"))
    result = cli("config", "validate", "--for", "daemon", str(config))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "daemon" in result.stderr


@pytest.mark.parametrize(("text", "problem"), [
    ("a = " + "{b = " * 340 + "1" + "}" * 340, "cannot recurse further"),  # the toml crate's own depth limit
    ("a = " + "[" * 520 + "1" + "]" * 520, "cannot recurse further"),
    ("a = " + "9" * 5000, "integer number overflowed"),
    ("a = 9223372036854775808", "integer 9223372036854775808 out of range"),  # the toml crate's i64
    ("a = [-9223372036854775809]", "integer -9223372036854775809 out of range"),
    (f"[{'.'.join(['t'] * 65)}]\nx = 1", "tables or arrays nested too deep"),  # parses: refused for whoever walks it
])
def test_parse_toml_has_one_exception_for_everything_the_agent_refuses(text: str, problem: str) -> None:
    with pytest.raises(tomllib.TOMLDecodeError) as caught:  # what every caller already catches
        alumet_schema.parse_toml(text)
    assert str(caught.value).startswith(problem) and "\n" not in str(caught.value)
    assert alumet_schema.validate_text(text)[0].startswith(f"not valid TOML: {problem}")


def test_parse_toml_keeps_what_tomllib_reads() -> None:
    text = f"[{'.'.join(['t'] * 60)}]\nx = [[1, {{a = 2}}]]\n"
    assert alumet_schema.parse_toml(text) == tomllib.loads(text)


# ---- values the agent's types or builders refuse at start (issue 24, classes 3 and 4) ----------------------

@pytest.mark.parametrize("interval", ["0", "0s", "0ms 0ns"])
@pytest.mark.parametrize(("profile", "table"), [("rapl", "rapl"), ("energy-attribution", "procfs.kernel"),
                                                ("energy-attribution", "procfs.processes.events")])
def test_a_zero_poll_interval_is_refused_where_the_trigger_builder_refuses_it(
        interval: str, profile: str, table: str) -> None:
    """The trigger builder refuses a zero poll_interval; rapl and procfs's kernel source unwrap it (a panic)."""
    config = doc(profile)
    node = config["plugins"]
    for key in table.split("."):
        node = node.setdefault(key, {})
    node["poll_interval"] = interval
    assert alumet_schema.validate(config) == [
        f'plugins.{table}.poll_interval: expected a duration above zero such as "1s" or "500ms", got {interval!r}']
    node["poll_interval"] = "1ns"
    assert alumet_schema.validate(config) == []


@pytest.mark.parametrize("key", ["pid", "ppid"])
def test_procfs_group_pid_and_ppid_are_u32(key: str) -> None:
    config = doc("energy-attribution")
    group = config["plugins"]["procfs"]["processes"]["groups"][0]
    group[key] = 4294967295
    assert alumet_schema.validate(config) == []
    group[key] = 4294967296
    assert alumet_schema.validate(config) == [
        f"plugins.procfs.processes.groups[0].{key}: expected an integer from 0 to 4294967295, got 4294967296"]


@pytest.mark.parametrize("text", [
    'a = "\\e"',                       # TOML 1.1 escapes
    'a = "\\x41"',
    "a = { b = 1,\n  c = 2, }",           # multi-line inline table, trailing comma
    "a = 9223372036854775807",
    "a = -9223372036854775808",
])
def test_parse_toml_reads_toml_1_1_as_the_agent_does(text: str) -> None:
    """The agent's toml crate is TOML 1.1 (docs/alumet-upstream.md); tomllib (TOML 1.0) refuses the first three."""
    assert alumet_schema.parse_toml(text)["a"] is not None


# ---- what alumet.service can write (issue 24 class 9) ---------------------------------------------------------

@pytest.mark.parametrize(("output", "writable"), [
    ("alumet-output.csv", True), ("out/x.csv", True), ("/var/lib/alumet/x.csv", True),
    ("/var/log/alumet-output.csv", False),  # upstream's packaged unit writes there, as root and unsandboxed
    ("/tmp/x.csv", False), ("../x.csv", False), ("/var/lib/alumet-other/x.csv", False),
])
def test_the_service_writes_its_csv_only_under_its_state_directory(output: str, writable: bool) -> None:
    config = doc("rapl")
    config["plugins"]["csv"]["output_path"] = output
    problems = alumet_schema.service_write_problems(config)
    assert (problems == []) is writable, problems
    assert all("ProtectSystem=strict" in p for p in problems)


@pytest.mark.processes
def test_config_validate_for_service_refuses_an_output_the_service_cannot_write(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(profiles.render("rapl", {"output_path": "/var/log/alumet-output.csv"}))
    service = cli("config", "validate", "--for", "service", str(config))
    assert service.returncode == 1 and "can write only under /var/lib/alumet" in service.stdout, service
    assert cli("config", "validate", "--for", "exec", str(config)).returncode == 0


# ---- every plugin of the binary (agent/src/bin/main.rs): its default_config() and its strictness ---------
# Each plugin's `default_config()` as the agent writes it into a new configuration file (every plugin enabled),
# read from the plugin's Config::default() at v0.9.5; durations as humantime_serde prints them, None omitted.
# Runtime values (the host's name, the Grid'5000 site) are stand-ins. energy-attribution has none (Ok(None)).
UPSTREAM_DEFAULTS: dict[str, str | None] = {
    "csv": 'output_path = "alumet-output.csv"\nforce_flush = true\nuse_unit_display_name = true\n'
           'append_unit_to_metric_name = true\ncsv_delimiter = ";"\ncsv_late_delimiter = ","',
    "prometheus-exporter": 'host = "0.0.0.0"\nprefix = ""\nsuffix = "_alumet"\nport = 9091\n'
                           'add_attributes_to_labels = true',
    "influxdb": 'host = "http://localhost:8086"\ntoken = "FILL ME"\norg = "FILL ME"\nbucket = "FILL ME"\n'
                'attributes_as = "field"',
    "mongodb": 'host = "localhost"\nport = 27017\ndatabase = "FILL ME"\ncollection = "FILL ME"\n'
               'username = "FILL ME"\npassword = "FILL ME"',
    "relay-client": 'client_name = "node-1"\nrelay_server = "[::1]:50051"\nbuffer_max_length = 4096\n'
                    'buffer_timeout = "30s"\n[retry]\nmax_times = 8\ninitial_delay = "500ms"\nmax_delay = "4s"',
    "relay-server": 'address = "[::]:50051"',
    "opentelemetry": 'collector_host = "http://localhost:4317"\nprefix = ""\nsuffix = "_alumet"\n'
                     'use_unit_display_name = true\nadd_attributes_to_labels = true',
    "aggregation": 'interval = "1m"\nfunction = "Sum"\nmetrics = []',
    "energy-attribution": None,
    "energy-estimation-tdp": 'poll_interval = "5s"\ntdp = 100.0\nnb_vcpu = 1.0\nnb_cpu = 1.0',
    "elasticsearch": 'server_url = "http://localhost:9200"\nallow_insecure = false\nindex_prefix = "alumet"\n'
                     'metric_unit_as_index_suffix = false\n[auth.basic]\nuser = "TODO"\npassword = "TODO"',
    "kwollect-input": 'site = "cluster"\nhostname = "node"\nmetrics = ["metric"]\nlogin = "login"\n'
                      'password = "password"\nutc_offset = 2',
    "kwollect-output": 'url = "https://api.grid5000.fr/stable/sites/grenoble/metrics"\nhostname = "node-1"\n'
                       'append_unit_to_metric_name = true\nuse_unit_display_name = true',
    "filter": "",
    "energy-to-carbon": 'mode = "world_avg"',
    "socket-control": 'socket_path = "alumet-control.sock"',
    "k8s": 'k8s_api_url = "http://127.0.0.1:8080"\ntoken_retrieval = "auto"\npoll_interval = "5s"\n'
           'annotate_foreign_measurements = false\nannotate_containers = false',
    "slurm": 'poll_interval = "1s"\nignore_non_jobs = true\njobs_monitoring_level = "job"\n'
             'add_source_in_pause_state = false\nannotate_foreign_measurements = false',
    "oar": 'oar_version = "oar3"\npoll_interval = "1s"\njobs_only = true\nannotate_foreign_measurements = false',
    "cgroups": 'poll_interval = "5s"',
    "grace-hopper": 'poll_interval = "1s"\nroot_path = "/sys/class/hwmon"',
    "rapl": 'poll_interval = "1s"\nflush_interval = "5s"\nno_perf_events = false',
    "perf": 'poll_interval = "1s"\nflush_interval = "5s"\nhardware_events = ["REF_CPU_CYCLES", "CACHE_MISSES", '
            '"BRANCH_MISSES"]\nsoftware_events = []\ncache_events = ["LL_READ_MISS"]',
    "procfs": '[kernel]\nenabled = true\npoll_interval = "5s"\n'
              '[memory]\nenabled = true\npoll_interval = "5s"\nmetrics = ["MemTotal", "MemFree", "MemAvailable", '
              '"Cached", "SwapCached", "Active", "Inactive", "Mapped"]\n'
              '[network]\nenabled = true\npoll_interval = "5s"\n'
              '[processes]\nenabled = true\nstrategy = "watcher"\nrefresh_interval = "2s"\n'
              '[[processes.groups]]\nexe_regex = ""\npoll_interval = "2s"\nflush_interval = "4s"\n'
              'memory_mode = "quick"\n'
              '[processes.events]\npoll_interval = "1s"\nflush_interval = "4s"\nmemory_mode = "quick"',
    "nvml": 'poll_interval = "1s"\nflush_interval = "5s"\nskip_failed_devices = true\nmode = "full"',
    "process-to-cgroup-bridge": 'processes_metrics = ["some_metric_to_bridge", "another_metric_to_bridge"]\n'
                                'merge_similar_cgroups = true\nkeep_processed_measurements = true',
    "jetson": 'poll_interval = "1s"\nflush_interval = "5s"',
    "amd-gpu": 'poll_interval = "1s"\nflush_interval = "5s"\nskip_failed_devices = true',
    "quarch": 'quarch_ip = "1.2.3.4"\nquarch_port = 9760\nqis_port = 9780\njava_bin = "path_to_java"\n'
              'qis_jar_path = "path_to_qis"\npoll_interval = "150ms"\nflush_interval = "1s 500ms"',
}
# The plugins whose Config has #[serde(deny_unknown_fields)] at v0.9.5 (git grep deny_unknown_fields plugins/).
STRICT = {"csv", "prometheus-exporter", "influxdb", "mongodb", "relay-client", "relay-server", "opentelemetry",
          "socket-control", "grace-hopper", "rapl", "perf", "procfs", "nvml", "jetson", "amd-gpu", "quarch"}


def test_every_plugin_of_the_binary_is_modelled_or_said_to_be_unjudged_with_a_reason() -> None:
    assert set(UPSTREAM_DEFAULTS) == alumet_schema.PLUGINS
    assert set(alumet_schema.PLUGIN_SCHEMAS) | set(alumet_schema.UNJUDGED_PLUGINS) == alumet_schema.PLUGINS
    assert not set(alumet_schema.PLUGIN_SCHEMAS) & set(alumet_schema.UNJUDGED_PLUGINS)
    assert all(reason.strip() for reason in alumet_schema.UNJUDGED_PLUGINS.values())
    assert {n for n, s in alumet_schema.PLUGIN_SCHEMAS.items() if s.strict} == STRICT


def test_the_agents_own_default_configuration_with_every_plugin_is_valid() -> None:
    text = "".join(f"[plugins.{name}]\n" + "\n".join(
        line if not line.startswith("[") else f"[{'[' if line.startswith('[[') else ''}plugins.{name}."
        + line.lstrip("[") for line in body.splitlines()) + "\n"
        for name, body in UPSTREAM_DEFAULTS.items() if body is not None)
    config = alumet_schema.parse_toml(text)
    assert set(config["plugins"]) == alumet_schema.PLUGINS - {"energy-attribution"}
    assert alumet_schema.validate(config) == []


@pytest.mark.parametrize("name", sorted(UPSTREAM_DEFAULTS))
def test_upstreams_default_config_of_each_plugin_is_valid(name: str) -> None:
    body = UPSTREAM_DEFAULTS[name]
    if body is None:  # the plugin writes no default section; its schema still exists
        assert name in alumet_schema.PLUGIN_SCHEMAS
        return
    assert alumet_schema.validate({"plugins": {name: tomllib.loads(body)}}) == []


@pytest.mark.parametrize("name", sorted(STRICT))
def test_a_strict_plugin_refuses_an_unknown_key(name: str) -> None:
    section = tomllib.loads(UPSTREAM_DEFAULTS[name] or "")
    section["socket"] = "x"
    assert alumet_schema.validate({"plugins": {name: section}}) == [f"plugins.{name}: unknown key socket"]


@pytest.mark.parametrize("name", sorted(alumet_schema.PLUGINS - STRICT - {"energy-attribution"}))
def test_a_plugin_that_does_not_deny_unknown_keys_ignores_them(name: str) -> None:
    section = tomllib.loads(UPSTREAM_DEFAULTS[name] or "")
    section["socket"] = "x"
    assert alumet_schema.validate({"plugins": {name: section}}) == []


def test_socket_control_needs_its_socket_path_and_nothing_else() -> None:
    assert alumet_schema.validate({"plugins": {"socket-control": {}}}) == [
        "plugins.socket-control: missing key socket_path"]
    assert alumet_schema.validate({"plugins": {"socket-control": {"socket_path": "s", "path": "t"}}}) == [
        "plugins.socket-control: unknown key path"]
    assert alumet_schema.validate({"plugins": {"socket-control": {"socket_path": 1}}}) == [
        "plugins.socket-control.socket_path: expected a string, got 1"]


@pytest.mark.parametrize(("name", "key", "value", "problem"), [
    ("k8s", "token_retrieval", "token", "expected one of 'kubectl', 'file', 'auto', got 'token'"),
    ("k8s", "token_retrieval", {"file": "/t", "kubectl": {}}, "expected 'kubectl' or 'file' or 'auto' or a "
                                                             "table with one key of kubectl, file, got a table"),
    ("k8s", "poll_interval", "0s", 'expected a duration above zero such as "1s" or "500ms", got \'0s\''),
    ("slurm", "jobs_monitoring_level", "sub_step", "expected one of 'job', 'step', 'substep', 'task', got "
                                                   "'sub_step'"),
    ("oar", "oar_version", "3", "expected one of 'oar2', 'oar3', got '3'"),
    ("prometheus-exporter", "port", 65536, "expected an integer from 0 to 65535, got 65536"),
    ("kwollect-input", "utc_offset", 2**31, "expected an integer from -2147483648 to 2147483647, got 2147483648"),
    ("energy-estimation-tdp", "tdp", "100", "expected a number, got '100'"),
    ("elasticsearch", "auth", {"basic": {"user": "u"}}, None),
    ("aggregation", "function", "sum", "expected one of 'Sum', 'Mean', got 'sum'"),
])
def test_the_other_plugins_keys_are_typed_as_upstream_reads_them(name: str, key: str, value: Any,
                                                                   problem: str | None) -> None:
    section = tomllib.loads(UPSTREAM_DEFAULTS[name] or "")
    section[key] = value
    errors = alumet_schema.validate({"plugins": {name: section}})
    if problem is None:  # a missing field of the variant
        assert errors == [f"plugins.{name}.{key}.basic: missing key password"]
    else:
        assert errors == [f"plugins.{name}.{key}: {problem}"]


def test_k8s_token_retrieval_takes_a_method_name_or_one_method_table() -> None:
    for value in ("kubectl", {"file": "/var/run/token"}, {"kubectl": {"namespace": "alumet"}}):
        section = {**tomllib.loads(UPSTREAM_DEFAULTS["k8s"] or ""), "token_retrieval": value}
        assert alumet_schema.validate({"plugins": {"k8s": section}}) == []


def test_filter_refuses_include_and_exclude_together() -> None:
    assert alumet_schema.validate({"plugins": {"filter": {"include": ["a"], "exclude": ["b"]}}}) == [
        "plugins.filter: include and exclude together: the filter plugin refuses both"]


def test_a_plugin_that_cannot_be_judged_is_named_by_config_validate(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from alumet_setup.cli import cli as command

    monkeypatch.delitem(alumet_schema.PLUGIN_SCHEMAS, "socket-control")
    monkeypatch.setitem(alumet_schema.UNJUDGED_PLUGINS, "socket-control", "a stand-in reason")
    file = tmp_path / "c.toml"
    file.write_text('[plugins.socket-control]\nsocket_path = "s"\nunknown = 1\n[plugins.cgroups]\nenabled = false\n')
    result = CliRunner().invoke(command, ["config", "validate", str(file)])
    assert result.exit_code == 0
    assert f"{file}: warning: plugins.socket-control: not judged: a stand-in reason" in result.output.splitlines()
    assert "cgroups" not in result.output  # disabled: never read by the agent
