"""Check dependencies are declared (`@check(..., needs=...)`), validated and run needs first."""

from __future__ import annotations

import pytest

from alumet_setup import doctor
from alumet_setup.doctor.findings import (
    REGISTRY,
    CheckSpec,
    Context,
    Finding,
    RegistryError,
    Status,
    check,
    dependency_order,
    ok,
    validate,
)
from alumet_setup.targets.hosts import LocalHost


def spec(check_id: str, *needs: str, log: list[str] | None = None) -> CheckSpec:
    def run(ctx: Context) -> Finding:
        if log is not None:
            log.append(check_id)
        for need in needs:
            ctx.finding(need)
        return ok(check_id)

    return CheckSpec(check_id, check_id, check_id.split(".")[0], run, needs)


def test_a_cycle_is_refused_and_named() -> None:
    registry = {s.id: s for s in (spec("system.a", "system.b"), spec("system.b", "system.c"),
                                  spec("system.c", "system.a"))}
    with pytest.raises(RegistryError, match=r"cycle: system\.a -> system\.b -> system\.c -> system\.a"):
        validate(registry)


def test_an_unknown_need_is_refused() -> None:
    registry = {"system.a": spec("system.a", "system.nope")}
    with pytest.raises(RegistryError, match=r"check system\.a needs system\.nope, which is not registered"):
        validate(registry)


def test_a_check_that_needs_itself_is_refused_at_registration() -> None:
    with pytest.raises(RegistryError, match="needs itself"):
        check("system.zz_self", "self", needs=("system.zz_self",))
    assert "system.zz_self" not in REGISTRY


def test_the_real_checks_validate_and_their_needs_come_first() -> None:
    ids = doctor.check_ids()  # load_all validates
    order = dependency_order(ids)
    assert sorted(order) == sorted(ids)
    for check_id in ids:
        assert all(order.index(need) < order.index(check_id) for need in REGISTRY[check_id].needs), check_id
    # The one dependency a comment used to guard: the probe must not need the paranoid check.
    assert "kernel.perf_probe" in REGISTRY["kernel.perf_event_paranoid"].needs
    assert "kernel.perf_event_paranoid" not in REGISTRY["kernel.perf_probe"].needs


def test_run_order_puts_needs_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """One worker, a check registered before the one it needs: the need still starts first."""
    doctor.check_ids()
    log: list[str] = []
    monkeypatch.setitem(REGISTRY, "system.zz_late", spec("system.zz_late", "system.zz_early", log=log))
    monkeypatch.setitem(REGISTRY, "system.zz_early", spec("system.zz_early", log=log))
    monkeypatch.setattr(doctor, "WORKERS", 1)
    results = doctor.run_checks(LocalHost(), only=["system.zz_late", "system.zz_early"])
    assert log == ["system.zz_early", "system.zz_late"]
    assert [r.id for r in results] == ["system.zz_late", "system.zz_early"]  # display: registry order


def test_reading_an_undeclared_check_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    doctor.check_ids()

    def sneaky(ctx: Context) -> Finding:
        return ok(ctx.finding("system.os").detail)

    monkeypatch.setitem(REGISTRY, "system.zz_sneaky", CheckSpec("system.zz_sneaky", "sneaky", "system", sneaky))
    monkeypatch.setitem(REGISTRY, "system.zz_open", CheckSpec("system.zz_open", "open", "system", sneaky,
                                                              ("system.os",)))
    ctx = Context(LocalHost())
    refused = ctx.finding("system.zz_sneaky")
    assert refused.status is Status.ERROR
    assert refused.detail == "UndeclaredNeed: check system.zz_sneaky reads system.os without declaring it in needs"
    assert ctx.finding("system.zz_open").status is Status.OK


@pytest.mark.processes
def test_no_real_check_reads_an_undeclared_one() -> None:
    """Every check on this machine, and with --probe: none hides a dependency."""
    for options in (None, doctor.Options(probe=True)):
        for result in doctor.run_checks(LocalHost(), options):
            assert "UndeclaredNeed" not in result.finding.detail, (result.id, result.finding.detail)


@pytest.mark.processes
def test_display_order_does_not_depend_on_which_module_was_imported_first() -> None:
    """A test (or any caller) importing one check module early registered its checks first, and the
    report's "not here" line came out in another order than README's example (a CI failure)."""
    import subprocess
    import sys

    script = ("import alumet_setup.doctor.checks.{first}\n"
              "from alumet_setup.doctor.checks import load_all\nfrom alumet_setup.doctor.findings import REGISTRY\n"
              "load_all(); print(' '.join(REGISTRY))")
    orders = {subprocess.run([sys.executable, "-c", script.format(first=first)], check=True, capture_output=True,
                             text=True).stdout for first in ("agent_probe", "nvml", "config")}
    assert len(orders) == 1, orders
    assert orders.pop().split()[0].startswith("system.")
