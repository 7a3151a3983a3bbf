#!/usr/bin/env python3
"""Writes the files rendered from charts/sluicegate:

  manifests/install.yaml                 default values, namespace sluicegate-system,
                                         plus the Namespace: `kubectl apply -f` installs all
  tests/fixtures/chart/all-features.yaml the chart with ci/all-features-values.yaml,
                                         a snapshot that tests/manifests.rs checks strictly

With --check nothing is written, and the exit status is 1 when a committed
file differs from what the chart renders now.

Needs helm-python-sdk (pip install helm-python-sdk); no helm binary.
"""

from __future__ import annotations

import argparse
import difflib
import sys

import sluicegate_chart as sc


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="fail if a committed file is stale")
    args = parser.parse_args()

    try:
        files = sc.generated_files()
    except sc.CheckError as e:
        print(f"render-manifests: {e}", file=sys.stderr)
        return 1
    stale = 0
    for path, text in files.items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale += 1
            print(
                f"render-manifests: {sc.rel(path)} is stale; run scripts/render-manifests.py", file=sys.stderr
            )
            diff = difflib.unified_diff(
                (current or "").splitlines(keepends=True),
                text.splitlines(keepends=True),
                fromfile=f"{sc.rel(path)} (committed)",
                tofile=f"{sc.rel(path)} (rendered)",
            )
            sys.stderr.writelines(list(diff)[:60])
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {sc.rel(path)}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
