"""The result store: one folder of cells, each its own JSON file, written atomically.

Layout::

    STORE/store.json            {"schema": 1, "hwbed": "0.1.0", "created": "2025-...+00:00"}
    STORE/cells/<key>.json      one cell: {"key", "status", "error", "manifest", "examples"}
    STORE/cells/.<key>.*.tmp    a write in progress (or left by a killed writer; never read)

A cell's key is derived from its content (:func:`cell_key`), so a re-run skips finished cells
and a changed parameter is a new cell. A cell file holds the cell's manifest (what was run:
versions, model, attack, parameters, seed, image selection, summary) and its per-example
outcomes as columns (``{"success": [...], "queries": [...]}``, equal lengths), so reports can
take per-example worst cases and paired comparisons, not only means. Failed cells keep their
error's one-line message (``error``) and, where there is one, the traceback (``traceback``).

Why one JSON file per cell (not CSV + JSON, not Parquet):

- *Kill safety for free.* Each write goes to a unique temp file in ``cells/``, is fsynced and
  ``os.replace``\\ d onto ``<key>.json``: a rename is atomic on POSIX and Windows, so a reader
  sees the old state or the whole new file, a kill at any instant leaves one of the two, and
  two sweeps writing the same store (even the same cell) cannot interleave bytes. An appended
  CSV needs a lock and a torn-line repair after a kill; a Parquet dataset needs one file per
  write anyway (row groups cannot be appended in place) and pyarrow, which hwbed does not
  depend on (``pip show pyarrow``: not installed).
- *One record, two shapes.* A cell is a nested manifest (model card, attack parameters,
  restart traces) plus per-example columns; CSV needs two files per cell (or a manifest
  flattened into every row) and typed columns lost on the way (booleans, None, lists).
- *Readable and diffable* with any editor: the manifest is indented, each list of numbers
  (so each per-example column) is one line. The store writes what it is given: the
  sweep's cells turn NaN (an unknown distortion) into ``null`` before writing; other
  non-finite floats would be written as ``Infinity``/``NaN``, Python's JSON dialect, which
  :mod:`json` and pandas read back exactly and strict parsers (jq) refuse.
- The cost is one small file per cell and a parse per cell on :func:`load`: about 0.1 ms per
  kilobyte here, seconds for the whole study; convert the DataFrame to Parquet for sharing
  if ever needed (``load(dir).to_parquet``, with pyarrow installed).

Temp files left by a killed writer are ignored by every reader. They are removed by
:meth:`Store.clean`, which the sweep engine calls when a sweep starts; it only removes temp
files older than ten minutes, since a younger one may belong to a second sweep writing the same
store right now (a write takes milliseconds). Opening a store changes nothing: a store of an
incompatible schema is refused before anything is touched.

An ``ok`` cell is never replaced by a ``failed`` one: when two sweeps run the same cell and one
of them fails, the finished result stays (the check and the rename are not one atomic step;
the window is the few microseconds between them).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

SCHEMA = 1
"""The store format this hwbed reads and writes; another number is refused."""
STATUSES = ("ok", "failed")
STALE_S = 600.0
"""Age (s) after which :meth:`Store.clean` takes a temp file for a dead writer's."""
_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")
_TMP_SUFFIX = ".tmp"


class StoreError(ValueError):
    """A store that cannot be opened or a record that cannot be written; the message says why."""


def hwbed_version() -> str:
    """The installed hwbed's version (package metadata, else ``hwbed.__version__``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hwbed")
    except PackageNotFoundError:
        import hwbed

        return getattr(hwbed, "__version__", "0.1.0")


def cell_key(content: dict[str, Any]) -> str:
    """A cell's key: the first 16 hex digits of the sha256 of its canonical JSON.

    Canonical: keys sorted, no whitespace, tuples as lists, floats by ``repr`` (exact) except
    integral ones, which are written as integers so that keys agree with Python equality
    (``{"eps": 2} == {"eps": 2.0}``, and a grid written either way hits the same cells).
    Booleans stay distinct from 0/1. Any change to any value gives a new key.
    """
    if not isinstance(content, dict):
        raise TypeError(f"cell content must be a dict, got {type(content).__name__}")
    text = json.dumps(
        _canonical(content),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if value is None or isinstance(value, (str, int, float)):
        return value
    raise TypeError(
        f"cell content holds a {type(value).__name__} ({value!r}); "
        "use JSON types (dict, list, str, int, float, bool, None)"
    )


def check_key(key: str) -> str:
    """``key`` if it can name a cell file (1-128 letters, digits, '_' or '-'), else StoreError."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise StoreError(f"bad cell key {key!r}: 1-128 letters, digits, '_' or '-'")
    return key


class Store:
    """A result store folder (see the module docstring for the layout and guarantees).

    ``Store(path)`` opens the store at ``path`` or creates one in a missing or empty folder;
    ``create=False`` only opens. A folder that is not a store (no ``store.json``) and not empty
    is refused, and so is a store of another schema; neither is touched.
    """

    def __init__(self, path: str | os.PathLike, create: bool = True) -> None:
        self.path = Path(path)
        self.cells = self.path / "cells"
        meta = self.path / "store.json"
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"{self.path}: not a folder")
        if not meta.is_file():
            if not create:
                raise StoreError(f"{self.path}: no result store here (no store.json)")
            busy = (
                [p.name for p in self.path.iterdir() if not _is_tmp(p.name)]
                if self.path.is_dir()
                else []
            )
            if busy and not meta.is_file():  # (a sweep starting beside us may just have made it)
                raise StoreError(
                    f"{self.path}: not a result store (no store.json) and not "
                    "empty; give a new or empty folder"
                )
            if not busy:
                info = {
                    "schema": SCHEMA,
                    "hwbed": hwbed_version(),
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                }
                try:
                    self.path.mkdir(parents=True, exist_ok=True)
                    _atomic_write(self.path, "store.json", json.dumps(info, indent=1) + "\n")
                except OSError as err:
                    raise StoreError(f"{self.path}: cannot create the store: {err}") from None
        self.info = self._check(meta)
        try:
            self.cells.mkdir(exist_ok=True)
        except OSError as err:
            raise StoreError(f"{self.path}: cannot write the store: {err}") from None

    def _check(self, meta: Path) -> dict[str, Any]:
        try:
            info = json.loads(meta.read_text())
            schema = info["schema"]
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise StoreError(
                f"{self.path}: not a result store (store.json unreadable: {type(err).__name__})"
            ) from None
        if schema != SCHEMA:
            raise StoreError(
                f"{self.path}: store schema {schema!r} (written by hwbed "
                f"{info.get('hwbed', '?')}) is not this hwbed's ({hwbed_version()}, "
                f"schema {SCHEMA}); use a new store folder"
            )
        return info

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    def _file(self, key: str) -> Path:
        return self.cells / f"{check_key(key)}.json"

    def write(
        self,
        key: str,
        manifest: dict[str, Any],
        examples: dict[str, list],
        *,
        status: str = "ok",
        error: str | None = None,
        traceback: str | None = None,
    ) -> bool:
        """Write cell ``key`` atomically (whole file or nothing); True if written.

        ``examples`` maps column names to equal-length lists (or 1-d arrays), one entry per
        example.
        ``status="failed"`` needs ``error`` (one line) and may keep a ``traceback``; a failed
        record does not replace an ``ok`` one (False is returned and the file is kept).
        """
        path = self._file(key)
        if status not in STATUSES:
            raise StoreError(f"cell {key}: status {status!r} is not one of {STATUSES}")
        if (status == "failed") != (error is not None):
            raise StoreError(f"cell {key}: an error message goes with status 'failed' only")
        if not isinstance(manifest, dict) or not isinstance(examples, dict):
            raise StoreError(f"cell {key}: manifest and examples must be dicts")
        columns = {}
        for name, values in examples.items():
            if not isinstance(name, str) or name == "key":
                raise StoreError(f"cell {key}: bad example column name {name!r}")
            values = values.tolist() if hasattr(values, "tolist") else values  # numpy
            if not isinstance(values, (list, tuple)):
                raise StoreError(
                    f"cell {key}: example column {name!r} is a {type(values).__name__}, not a list"
                )
            columns[name] = values
        lengths = {name: len(values) for name, values in columns.items()}
        if len(set(lengths.values())) > 1:
            raise StoreError(f"cell {key}: example columns differ in length {lengths}")
        record: dict[str, Any] = {
            "key": key,
            "status": status,
            "error": error,
            "manifest": manifest,
        }
        if traceback is not None:
            record["traceback"] = traceback
        record["examples"] = columns
        try:
            text = _render(record) + "\n"
        except (TypeError, ValueError) as err:
            raise StoreError(f"cell {key}: not JSON-able: {err}") from None
        if status == "failed" and self.has(key):
            return False
        _atomic_write(self.cells, path.name, text)
        return True

    def read(self, key: str) -> dict[str, Any]:
        """The record of cell ``key`` (KeyError if absent)."""
        path = self._file(key)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise KeyError(key) from None
        try:
            record = json.loads(text)
        except ValueError as err:
            raise StoreError(f"{path}: not a cell record ({err})") from None
        if not isinstance(record, dict) or record.get("status") not in STATUSES:
            raise StoreError(f"{path}: not a cell record (no status)")
        return record

    def has(self, key: str) -> bool:
        """True when cell ``key`` is finished (status ``ok``); failed cells are re-run."""
        try:
            return self.read(key)["status"] == "ok"
        except KeyError:
            return False

    def keys(self, status: str | None = None) -> list[str]:
        """The stored cells' keys, sorted; only those of ``status`` ("ok"/"failed") if given."""
        if status is not None and status not in STATUSES:
            raise StoreError(f"status {status!r} is not one of {STATUSES}")
        keys = sorted(
            p.name[:-5]
            for p in self.cells.iterdir()
            if p.name.endswith(".json") and not p.name.startswith(".")
        )
        if status is None:
            return keys
        return [k for k in keys if self.read(k)["status"] == status]

    def finished(self) -> Iterator[tuple[str, dict[str, Any], dict[str, list]]]:
        """(key, flattened manifest, per-example columns) of every ``ok`` cell holding examples,
        in key order: what :func:`load` and the report read."""
        for key in self.keys():
            record = self.read(key)
            examples = record["examples"]
            if record["status"] == "ok" and examples and len(next(iter(examples.values()))):
                yield key, _flatten(record["manifest"]), examples

    def failed(self) -> dict[str, str]:
        """Failed cells: key -> error message."""
        return {k: self.read(k)["error"] for k in self.keys("failed")}

    def clean(self, older_than: float = STALE_S) -> int:
        """Remove temp files of dead writers (older than ``older_than`` s); how many."""
        now = time.time()
        removed = 0
        for folder in (self.path, self.cells):
            for p in folder.iterdir():
                if not _is_tmp(p.name):
                    continue
                with suppress(FileNotFoundError):
                    if now - p.stat().st_mtime > older_than:
                        p.unlink()
                        removed += 1
        return removed


def _is_tmp(name: str) -> bool:
    return name.startswith(".") and name.endswith(_TMP_SUFFIX)


def _plain(value: Any) -> Any:
    """numpy (and torch) scalars and arrays as Python values, for :func:`json.dumps`."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def _render(value: Any, depth: int = 0) -> str:
    """JSON, indented by one space a level, with each list of scalars on one line."""
    pad = " " * (depth + 1)
    if isinstance(value, dict) and value:
        items = [
            f"{pad}{json.dumps(k if isinstance(k, str) else json.dumps(k))}: "
            f"{_render(v, depth + 1)}"
            for k, v in value.items()
        ]
    elif isinstance(value, (list, tuple)) and any(
        isinstance(v, (dict, list, tuple)) for v in value
    ):
        items = [pad + _render(v, depth + 1) for v in value]
    else:
        return json.dumps(value, default=_plain)
    ends = "{}" if isinstance(value, dict) else "[]"
    return ends[0] + "\n" + ",\n".join(items) + "\n" + " " * depth + ends[1]


def _atomic_write(folder: Path, name: str, text: str) -> None:
    """Write ``folder/name`` through a unique temp file, fsync and rename (all or nothing)."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=_TMP_SUFFIX)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a store is meant to be shared
        os.replace(tmp, folder / name)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if os.name == "posix":  # make the rename itself durable (a power cut after it)
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted columns; lists (and empty dicts) as JSON strings."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{name}."))
        elif isinstance(v, (list, tuple, dict)):
            out[name] = json.dumps(v, sort_keys=True)
        else:
            out[name] = v
    return out


def _frame(blocks) -> pd.DataFrame:
    """A DataFrame from (column -> values, length) blocks, missing columns as None."""
    import pandas as pd

    cols: dict[str, list] = {"key": []}
    n = 0
    for block, m in blocks:
        for name, values in block.items():
            cols.setdefault(name, [None] * n).extend(values)
        n += m
        for values in cols.values():
            values.extend([None] * (n - len(values)))
    return pd.DataFrame(cols)


def load(path: str | os.PathLike) -> pd.DataFrame:
    """One row per example of every ``ok`` cell, sorted by cell key then example.

    Columns: ``key``, the manifest's fields (nested dicts flattened with dots, e.g.
    ``params.steps``; lists as JSON strings), then the per-example columns (which win over a
    manifest field of the same name).
    """
    store = Store(path, create=False)

    def blocks():
        for key, manifest, examples in store.finished():
            m = len(next(iter(examples.values())))
            block = {"key": [key] * m}
            for name, v in manifest.items():
                block.setdefault(name, [v] * m)
            block.update({name: list(values) for name, values in examples.items()})
            yield block, m

    return _frame(blocks())


def load_cells(path: str | os.PathLike) -> pd.DataFrame:
    """One row per cell, failed ones included: ``key``, ``status``, ``error``,
    ``n_examples`` and the flattened manifest."""
    store = Store(path, create=False)

    def blocks():
        for key in store.keys():
            record = store.read(key)
            examples = record["examples"]
            row = {
                "key": key,
                "status": record["status"],
                "error": record["error"],
                "n_examples": len(next(iter(examples.values()))) if examples else 0,
            }
            for name, v in _flatten(record["manifest"]).items():
                row.setdefault(name, v)
            yield {k: [v] for k, v in row.items()}, 1

    return _frame(blocks())
