"""Lay out the ``hwbed`` package as it installs, from symlinks: ``python .ci/package_tree.py DIR``.

pyproject.toml maps folders into the package (``[tool.setuptools.package-dir]``: ``attacks/`` is
``hwbed.attacks``, ...). Tools that find modules by walking a package's folder instead of
importing it (import-linter's grimp, mypy) see only ``hwbed/`` through the editable install;
``DIR/hwbed`` holds the whole package, so ``PYTHONPATH=DIR lint-imports`` and mypy with
``mypy_path = DIR`` check every module under its import name.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def main(out: Path) -> None:
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    tree = out / "hwbed"
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    for entry in (ROOT / package_dir["hwbed"]).iterdir():
        if entry.name != "__pycache__":
            (tree / entry.name).symlink_to(os.path.relpath(entry, tree))
    for name, folder in sorted(package_dir.items()):
        parent, _, leaf = name.rpartition(".")
        if not parent or Path(package_dir.get(parent, "")) / leaf == Path(folder):
            continue  # the root, or already where its parent's folder puts it
        link = tree.joinpath(*name.split(".")[1:])
        link.symlink_to(os.path.relpath(ROOT / folder, link.parent))


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
