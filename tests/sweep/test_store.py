"""The result store: atomic cell files, schema check, content keys, loading as DataFrames."""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time

import numpy as np
import pytest

from hwbed.store import SCHEMA, Store, StoreError, cell_key, hwbed_version, load, load_cells

MANIFEST = {
    "model": "resnet20-xnor",
    "attack": "pgd",
    "params": {"steps": 10, "rel": True},
    "eps": 2.0,
    "images": [0, 1, 2],
    "card": {"data": {"name": "digits"}},
}
EXAMPLES = {
    "success": [True, False, True],
    "queries": [10, 20, 30],
    "distortion": [0.5, math.inf, 0.25],
}


def snapshot(folder) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: its bytes and mtime (to prove nothing was touched)."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_create_then_open(tmp_path):
    store = Store(tmp_path / "s")
    info = json.loads((tmp_path / "s" / "store.json").read_text())
    assert info["schema"] == SCHEMA and info["hwbed"] == hwbed_version() and info["created"]
    assert store.keys() == [] and (tmp_path / "s" / "cells").is_dir()
    store.write("k1", MANIFEST, EXAMPLES)
    assert Store(tmp_path / "s", create=False).keys() == ["k1"]


def test_refuses_what_is_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="no result store here"):
        Store(tmp_path / "missing", create=False)
    assert not (tmp_path / "missing").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a result store .* not empty"):
        Store(tmp_path / "busy")
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="not a folder"):
        Store(tmp_path / "file")
    Store(tmp_path / "empty-ok")  # a missing folder is created, and so is an empty one
    (tmp_path / "empty").mkdir()
    Store(tmp_path / "empty")


@pytest.mark.parametrize("schema", [2, 0, "1"])
def test_incompatible_schema_is_refused_in_one_line_touching_nothing(tmp_path, schema):
    store = Store(tmp_path / "s")
    store.write("k1", MANIFEST, EXAMPLES)
    meta = tmp_path / "s" / "store.json"
    meta.write_text(json.dumps({"schema": schema, "hwbed": "9.9.9", "created": "x"}))
    before = snapshot(tmp_path / "s")
    with pytest.raises(StoreError) as err:
        Store(tmp_path / "s")
    line = str(err.value)
    assert "\n" not in line and str(tmp_path / "s") in line
    assert repr(schema) in line and "9.9.9" in line and f"schema {SCHEMA}" in line
    assert snapshot(tmp_path / "s") == before
    with pytest.raises(StoreError):
        load(tmp_path / "s")
    meta.write_text("{not json")
    with pytest.raises(StoreError, match="store.json unreadable"):
        Store(tmp_path / "s")


def test_write_read_roundtrip_and_readable_file(tmp_path):
    store = Store(tmp_path)
    assert store.write(
        "k1",
        {**MANIFEST, "n": np.int64(3)},
        {**EXAMPLES, "margin": np.array([1.5, -2.0, math.nan])},
    )
    record = store.read("k1")
    assert record["status"] == "ok" and record["error"] is None and record["key"] == "k1"
    assert record["manifest"]["n"] == 3 and record["examples"]["distortion"][1] == math.inf
    assert math.isnan(record["examples"]["margin"][2])
    text = (tmp_path / "cells" / "k1.json").read_text()
    assert '  "queries": [10, 20, 30],\n' in text  # one line per per-example column
    assert store.has("k1") and not store.has("k2")
    with pytest.raises(KeyError):
        store.read("k2")


def test_failed_cells(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(StoreError, match="error message goes with status 'failed'"):
        store.write("k1", {}, {}, status="failed")
    assert store.write(
        "k1",
        {"job": "j"},
        {},
        status="failed",
        error="RuntimeError: boom",
        traceback="Traceback ...",
    )
    store.write("k2", MANIFEST, EXAMPLES)
    assert not store.has("k1") and store.keys() == ["k1", "k2"]
    assert store.keys("failed") == ["k1"] and store.keys("ok") == ["k2"]
    assert store.failed() == {"k1": "RuntimeError: boom"}
    assert store.read("k1")["traceback"] == "Traceback ..."
    # a failed result never replaces a finished one; a finished one replaces a failed one
    assert not store.write("k2", {}, {}, status="failed", error="late")
    assert store.has("k2")
    assert store.write("k1", MANIFEST, EXAMPLES) and store.has("k1")


def test_bad_records_are_refused_and_nothing_is_written(tmp_path):
    store = Store(tmp_path)
    bad = [
        (("k1", MANIFEST, {"a": [1, 2], "b": [1]}), "differ in length"),
        (("k1", MANIFEST, {"a": 3}), "not a list"),
        (("k1", MANIFEST, {"key": [1]}), "bad example column"),
        (("k1", {"x": object()}, {}), "not JSON-able"),
        (("../k1", MANIFEST, {}), "bad cell key"),
        (("", MANIFEST, {}), "bad cell key"),
    ]
    for args, message in bad:
        with pytest.raises(StoreError, match=message):
            store.write(*args)
    with pytest.raises(StoreError, match="status"):
        store.write("k1", {}, {}, status="done")
    assert list((tmp_path / "cells").iterdir()) == []


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    store = Store(tmp_path)
    store.write("k1", {"v": 1}, {})

    def crash(src, dst):
        raise OSError("killed between write and rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="killed"):
        store.write("k1", {"v": 2}, {})
    with pytest.raises(OSError, match="killed"):
        store.write("k2", {"v": 2}, {})
    monkeypatch.undo()
    assert store.read("k1")["manifest"] == {"v": 1}  # the old state, whole
    assert store.keys() == ["k1"] and not store.has("k2")
    assert sorted(p.name for p in (tmp_path / "cells").iterdir()) == ["k1.json"]


def test_a_dead_writers_temp_file_is_ignored_then_cleaned(tmp_path):
    store = Store(tmp_path)
    store.write("k1", MANIFEST, EXAMPLES)
    tmp = tmp_path / "cells" / ".k2.json.abc123.tmp"
    tmp.write_text('{"key": "k2", "status": "ok", "manif')  # a writer killed mid-file
    assert store.keys() == ["k1"] and not store.has("k2")
    assert len(load(tmp_path)) == 3 and list(load_cells(tmp_path)["key"]) == ["k1"]
    assert store.clean() == 0 and tmp.exists()  # young: may be another sweep's write
    old = time.time() - 3600
    os.utime(tmp, (old, old))
    assert store.clean() == 1 and not tmp.exists()


def test_concurrent_writers_and_a_reader_never_see_a_torn_file(tmp_path):
    store = Store(tmp_path)
    store.write("k", {"writer": -1}, {"x": [0] * 500})
    seen, errors = set(), []

    def write(w: int) -> None:
        for i in range(40):
            store.write("k", {"writer": w, "i": i}, {"x": [w * 1000 + i] * 500})

    def read() -> None:
        while any(t.is_alive() for t in writers):
            try:
                record = store.read("k")
            except Exception as err:  # a torn file would land here
                errors.append(err)
                return
            assert set(record["examples"]["x"]) == {
                max(0, record["manifest"]["writer"]) * 1000 + record["manifest"].get("i", 0)
            }
            seen.add(record["manifest"]["writer"])

    writers = [threading.Thread(target=write, args=(w,)) for w in (1, 2)]
    reader = threading.Thread(target=read)
    for t in (*writers, reader):
        t.start()
    for t in (*writers, reader):
        t.join()
    assert errors == [] and seen
    assert store.keys() == ["k"] and store.read("k")["manifest"]["i"] == 39
    assert sorted(p.name for p in (tmp_path / "cells").iterdir()) == ["k.json"]


def test_cell_key_is_stable_canonical_and_content_derived():
    content = {
        "attack": "pgd",
        "eps": 0.5,
        "params": {"steps": 10, "rel": True},
        "seed": 0,
        "norm": None,
    }
    canonical = '{"attack":"pgd","eps":0.5,"norm":null,"params":{"rel":true,"steps":10},"seed":0}'
    assert cell_key(content) == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert len(cell_key(content)) == 16
    reordered = {
        "seed": 0,
        "norm": None,
        "params": {"rel": True, "steps": 10},
        "eps": 0.5,
        "attack": "pgd",
    }
    assert cell_key(reordered) == cell_key(content)
    assert cell_key({**content, "params": {"steps": 11, "rel": True}}) != cell_key(content)
    assert cell_key({**content, "eps": 0.5000000000000001}) != cell_key(content)  # repr: exact
    assert cell_key({**content, "seed": 0.0}) == cell_key(content)  # 0 == 0.0 in Python too
    assert cell_key({**content, "seed": False}) != cell_key(content)
    assert cell_key({"eps": (1, 2)}) == cell_key({"eps": [1, 2]})
    with pytest.raises(TypeError, match="ndarray"):
        cell_key({"eps": np.array([1.0])})


def test_load_one_row_per_example_with_flattened_manifest(tmp_path):
    store = Store(tmp_path)
    store.write("b2", {**MANIFEST, "attack": "fgsm"}, EXAMPLES)
    store.write("a1", MANIFEST, {k: v[:2] for k, v in EXAMPLES.items()})
    store.write("c3", {"job": "j"}, {}, status="failed", error="RuntimeError: x")
    df = load(tmp_path)
    assert list(df["key"]) == ["a1", "a1", "b2", "b2", "b2"]
    assert list(df.columns[:1]) == ["key"]
    for column in (
        "model",
        "attack",
        "params.steps",
        "params.rel",
        "eps",
        "images",
        "card.data.name",
        "success",
        "queries",
        "distortion",
    ):
        assert column in df.columns, column
    assert "params" not in df.columns and "card" not in df.columns
    assert list(df["attack"]) == ["pgd", "pgd", "fgsm", "fgsm", "fgsm"]
    assert df["params.steps"].tolist() == [10] * 5 and df["images"][0] == "[0, 1, 2]"
    assert df["success"].tolist() == [True, False, True, False, True]
    assert df["distortion"].tolist()[3] == math.inf
    cells = load_cells(tmp_path)
    assert list(cells["key"]) == ["a1", "b2", "c3"]
    assert list(cells["status"]) == ["ok", "ok", "failed"]
    assert list(cells["n_examples"]) == [2, 3, 0]
    assert cells["error"].tolist()[2] == "RuntimeError: x" and cells["job"].tolist()[2] == "j"
    empty = load(Store(tmp_path / "empty").path)
    assert len(empty) == 0 and list(empty.columns) == ["key"]
