"""install/uninstall orchestration (play.py) and the exit-code policy it shares with doctor (exits.py)."""

from __future__ import annotations

import pytest

from alumet_setup import play, runner
from alumet_setup.exits import exit_code
from alumet_setup.settings import SettingError, select_steps


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
    options = dict(hosts=(), inventory=None, user=None, skip=(), check=True, diff=False, settings=(),
                   ask_become_pass=False, forks=1, verbose=0)
    with pytest.raises(play.BadInput, match="unknown step nope"):
        play.play("install", only=("nope",), **options)  # type: ignore[arg-type]
    with pytest.raises(play.BadInput, match="exclude each other"):
        play.play("install", only=("sysctl",), build_host="localhost", build_on_each=True,
                  **options)  # type: ignore[arg-type]
