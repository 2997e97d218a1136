"""What every benchmark writes: its JSON document under benchmarks/results/, and the machine.

Benchmarks run as scripts (``python benchmarks/<name>.py``), so this sibling module imports as
``results``.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any


def machine(note: str, **fields: Any) -> dict[str, Any]:
    """The machine a run measured: the CPU, the given fields, and how to read the numbers."""
    return {"cpu": platform.processor() or platform.machine(), **fields, "note": note}


def write_results(path: str | Path, doc: Any, indent: int = 1) -> Path:
    """Write ``doc`` as JSON to ``path`` (folders created) and say where."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=indent) + "\n")
    print(f"wrote {path}")
    return path
