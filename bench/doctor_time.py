#!/usr/bin/env python3
"""Median wall time of `alumet-setup doctor` beside Python start-up baselines, on this machine.

Usage: python bench/doctor_time.py [--runs N] [--doctor PATH]
Goal (issue 2): doctor at most 3x the `import click` baseline. Run with the project's venv python.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

# An installed tool has its bytecode compiled (pip does it); a shell with PYTHONDONTWRITEBYTECODE=1
# would make every run recompile every module and time the compiler instead.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def median_seconds(argv: list[str], runs: int) -> float:
    subprocess.run(argv, capture_output=True, check=False, env=ENV)  # warm caches, write bytecode once
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=False, env=ENV)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    default_doctor = shutil.which("alumet-setup", path=os.path.dirname(sys.executable)) or "alumet-setup"
    parser.add_argument("--doctor", default=default_doctor, help="the alumet-setup executable to time")
    args = parser.parse_args()

    rows = [
        ("python3 -c pass", [sys.executable, "-c", "pass"]),
        ('python3 -c "import click"', [sys.executable, "-c", "import click"]),
        ("alumet-setup doctor", [args.doctor, "doctor"]),
        ("alumet-setup doctor --json", [args.doctor, "doctor", "--json"]),
    ]
    results = {name: median_seconds(argv, args.runs) for name, argv in rows}
    baseline = results['python3 -c "import click"']
    print(f"median of {args.runs} runs, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    for name, seconds in results.items():
        print(f"  {name:28} {seconds * 1000:7.1f} ms  {seconds / baseline:5.2f}x import click")
    ratio = results["alumet-setup doctor"] / baseline
    print(f"doctor / import click = {ratio:.2f} (goal <= 3.00): {'met' if ratio <= 3 else 'NOT met'}")


if __name__ == "__main__":
    main()
