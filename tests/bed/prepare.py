#!/usr/bin/env python3
"""Build or refresh everything the test bed needs; each part is cached and rebuilt on recipe change."""

from __future__ import annotations

import images
import rust_mirror
import standin
from images import ROOT


def main() -> None:
    images.main([])  # all images; never parse the caller's argv (pytest)
    rust_mirror.build()
    standin.build()
    # Per-platform apt archive caches, bind-mounted by molecule: debs are kept, installs stay real.
    for name in images.IMAGES:
        (ROOT / ".cache" / "apt" / name / "partial").mkdir(parents=True, exist_ok=True)


if __name__ == "__main__":
    main()
