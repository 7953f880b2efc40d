#!/usr/bin/env python3
"""Build or refresh everything the test bed needs; each part is cached and rebuilt on recipe change."""

from __future__ import annotations

import time

import images
import rust_mirror
import sshd
import standin
from images import ROOT


def main() -> None:
    seconds = {}
    for part, build in (("container images", lambda: images.main([])),  # never parse the caller's argv (pytest)
                        ("sshd images", lambda: [sshd.image(name) for name in images.IMAGES]),
                        ("Rust mirror", rust_mirror.build), ("stand-in Alumet source", standin.build)):
        start = time.monotonic()
        build()
        seconds[part] = time.monotonic() - start
    print("test bed: " + ", ".join(f"{part} {s:.0f} s" for part, s in seconds.items()))
    # Per-platform apt archive caches, bind-mounted by molecule: debs are kept, installs stay real.
    for name in images.IMAGES:
        (ROOT / ".cache" / "apt" / name / "partial").mkdir(parents=True, exist_ok=True)


if __name__ == "__main__":
    main()
