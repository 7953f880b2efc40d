"""install/uninstall orchestration (play.py) and the exit-code policy it shares with doctor (exits.py)."""

from __future__ import annotations

import dataclasses

import pytest

from alumet_setup import play
from alumet_setup.exits import exit_code
from alumet_setup.playbook import runner
from alumet_setup.playbook.settings import SettingError, select_steps


@pytest.mark.parametrize(("unreachable", "ok", "code"), [
    (False, True, 0), (False, False, 1), (True, True, 2), (True, False, 2),
])
def test_one_exit_code_policy(unreachable: bool, ok: bool, code: int) -> None:
    assert exit_code(unreachable, ok) == code


def test_steps_are_checked_in_order_only_then_skip() -> None:
    assert select_steps(("sysctl,powercap",), ("config",)) == (["sysctl", "powercap"], ["config"])
    with pytest.raises(SettingError, match=r"^--only ',,': empty step name"):
        select_steps((",,",), ())
    with pytest.raises(SettingError, match=r"^unknown step nope, gone \(known: prereqs, "):
        select_steps(("sysctl,nope",), ("gone,nope",))
    with pytest.raises(SettingError, match=r"^step sysctl is both in --only and --skip$"):
        select_steps(("sysctl",), ("sysctl",))


def test_build_host_rules() -> None:
    assert play.build_settings(None, False, ["a", "b"]) == {}
    assert play.build_settings("b", False, ["a", "b"]) == {"alumet_agent_build_host": "b"}
    assert play.build_settings(None, True, ["a"]) == {"alumet_agent_build_once": False}
    with pytest.raises(play.BadInput, match=r"--build-host 'c' is not one of the hosts of this run \(a, b\)"):
        play.build_settings("c", False, ["a", "b"])
    with pytest.raises(play.BadInput, match="exclude each other"):
        play.build_settings("a", True, ["a"])


def test_bad_input_stops_play_before_anything_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the playbook ran")

    monkeypatch.setattr(runner, "run_playbook", never)
    with pytest.raises(play.BadInput, match="unknown step nope"):
        play.play(play.PlayRequest("install", only=("nope",), check=True))
    with pytest.raises(play.BadInput, match="exclude each other"):
        play.play(play.PlayRequest("install", only=("sysctl",), build_host="localhost", build_on_each=True))


def test_the_survey_decides_which_hosts_the_play_leaves_out(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """install's fast path, as play() wires it (the judging itself: test_uptodate.py; for real:
    tests/integration/test_remote.py)."""
    from pathlib import Path

    from alumet_setup import uptodate

    up_to_date: set[str] = set()
    surveyed: list[list[str]] = []
    steps_surveyed: list[list[str]] = []
    plays: list[dict] = []

    def survey(hosts: list, steps: list[str], digest: str) -> list[uptodate.Survey]:
        surveyed.append([name for name, _ in hosts])
        steps_surveyed.append(steps)
        assert len(digest) == 64
        return [uptodate.Survey(name, name in up_to_date, "up to date" if name in up_to_date else "why", 0.1)
                for name, _ in hosts]

    def run_playbook(run: runner.PlaybookRun, **_kwargs: object) -> runner.RunResult:
        plays.append(dict(run.extravars or {}))
        hosts = list(run.hosts)
        stats = {h: dict.fromkeys(runner.STATS_COLUMNS, 0) for h in hosts}
        return runner.RunResult(0, "successful", stats, Path("/nonexistent"), hosts=hosts)

    monkeypatch.setattr(uptodate, "survey", survey)
    monkeypatch.setattr(runner, "run_playbook", run_playbook)
    request = play.PlayRequest("install", hosts=("root@lab01", "root@lab02"))
    up_to_date.add("lab01")
    assert play.play(request) == 0
    assert plays[-1]["alumet_setup_up_to_date"] == ["lab01"] and len(plays[-1]["install_record_digest"]) == 64
    assert "lab01: up to date, left out (--full runs it)" in capsys.readouterr().out
    up_to_date.add("lab02")
    assert play.play(request) == 0 and len(plays) == 1
    assert "Nothing to run: every host is up to date" in capsys.readouterr().out
    assert play.play(dataclasses.replace(request, full=True)) == 0 and len(surveyed) == 2
    assert "alumet_setup_up_to_date" not in plays[-1] and plays[-1]["install_record_digest"]
    # A plain install: every default step, the opt-in service left out (written out, not computed).
    assert steps_surveyed[0] == ["prereqs", "rustup", "agent", "group", "sysctl", "hidepid", "powercap", "config",
                                 "capabilities"]
    # surveyed too: the unit file's sha256 and doctor's agent.service vouch for it
    assert play.play(dataclasses.replace(request, only=("service",))) == 0 and steps_surveyed[-1] == ["service"]


def test_the_inventory_is_parsed_once_per_command(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    """install (targets, groups expanded, the up-to-date survey's connection variables) and doctor (names
    checked, connection variables) each ask one parse of -i (Ansible's parser is most of doctor's start-up with
    an inventory); before, doctor parsed it twice and install up to five times."""
    from pathlib import Path

    from alumet_setup import cli, uptodate
    from alumet_setup.playbook import inventory

    path = Path(str(tmp_path)) / "hosts.ini"
    path.write_text("[lab]\nlab01 ansible_host=192.0.2.1 ansible_user=ops\nlab02 ansible_host=192.0.2.2\n")
    parses: list[str] = []
    load = inventory._load

    def counted(where: str) -> object:
        parses.append(where)
        return load(where)

    def survey(hosts: list, _steps: list[str], _digest: str) -> list[uptodate.Survey]:
        assert [(name, target.user) for name, target in hosts] == [("lab01", "ops"), ("lab02", None)]
        return [uptodate.Survey(name, True, "up to date", 0.1) for name, _ in hosts]

    def never(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the playbook ran: every host was up to date")

    monkeypatch.setattr(inventory, "_load", counted)
    monkeypatch.setattr(uptodate, "survey", survey)
    monkeypatch.setattr(runner, "run_playbook", never)
    assert play.play(play.PlayRequest("install", hosts=("lab",), inventory=str(path), check=True)) == 0
    assert parses == [str(path)]
    parses.clear()
    targets = cli._doctor_targets(("lab01", "lab"), str(path))
    assert [t.name for t in targets] == ["lab01", "lab02"] and parses == [str(path)]
