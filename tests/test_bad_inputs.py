"""Bad inputs to every CLI: exit status 2, one ``error:`` line naming the culprit, no traceback.

Each case runs its CLI's ``main`` in-process through :func:`hwbed.cli.run` (what ``python -m``
does) on a fresh copy of a small workspace: a tfc-w1a1 build folder, a finished training run,
a result store, corrupt copies of them, grids, folding files and a token. Every file that
existed before must be byte for byte the same afterwards: a refused command damages nothing.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from hwbed.cli import run

SPEC, SHAPE = "tfc-w1a1", (1, 8, 8)
TOKEN = "t" * 40
GOOD_GRID = 'name = "g"\nimages = 4\n[[attacks]]\nattack = "fgsm"\nepsilons = [1]\n'
BAD_KEY_GRID = 'name = "g"\nimages = 4\n[[attacks]]\nattack = "fgsm"\nepsilon = [1]\n'


def _edit_graph(folder: Path, edit) -> None:
    doc = json.loads((folder / "graph.json").read_text())
    edit(doc)
    (folder / "graph.json").write_text(json.dumps(doc))


def _tensor(doc: dict, label: str) -> dict:
    """The tensor whose builder name ends in ``_<label>`` (``t<i>_<label>``)."""
    return next(t for t in doc["tensors"] if t["name"].endswith(f"_{label}"))


def _thresholded(doc: dict) -> dict:
    """The first node with a thresholds param (a TFC graph starts with its Flatten)."""
    return next(n for n in doc["nodes"] if "thresholds" in n["params"])


def _variant(ws: Path, name: str, edit=None) -> Path:
    folder = ws / name
    shutil.copytree(ws / "build", folder)
    if edit is not None:
        _edit_graph(folder, edit)
    return folder


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, random_build) -> Path:
    from hwbed.models.training import TrainConfig, train
    from hwbed.store import Store

    ws = tmp_path_factory.mktemp("bad-inputs") / "ws"
    random_build(ws / "build", SPEC, SHAPE)
    blob = (ws / "build" / "model.pt").read_bytes()
    (ws / "truncated.pt").write_bytes(blob[: len(blob) // 3])
    (ws / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    (ws / "empty").mkdir()
    (ws / "notes.txt").write_text("not a graph\n")
    (ws / "token").write_text(TOKEN)
    (ws / "good.toml").write_text(GOOD_GRID)
    (ws / "badkey.toml").write_text(BAD_KEY_GRID)
    (ws / "truncated-grid.json").write_text('{"name": "g", "attacks": [')
    (ws / "truncated-folding.json").write_text('{"Defaults": {}, "MVAU_hls_0": {"PE": ')
    (ws / "random-folding.json").write_bytes(np.random.default_rng(1).bytes(512))

    for name, file in (("trunc-graph", "graph.json"), ("trunc-npz", "graph.npz")):
        path = _variant(ws, name) / file
        path.write_bytes(path.read_bytes()[:300])
    _variant(ws, "bad-op", lambda d: d["nodes"][0].__setitem__("op", 5))
    _variant(ws, "bad-dtype", lambda d: d["tensors"][1].__setitem__("dtype", "INT99"))
    _variant(ws, "no-param-shape", lambda d: _thresholded(d)["params"]["thresholds"].pop("shape"))
    _variant(ws, "bad-input-shape", lambda d: d["tensors"][0].__setitem__("shape", [8, 8]))
    _variant(ws, "bad-meta", lambda d: d.__setitem__("meta", []))
    _variant(ws, "narrow", lambda d: _tensor(d, "last fc").__setitem__("dtype", "INT2"))
    _variant(ws, "gone-ckpt", lambda d: d["meta"].__setitem__("checkpoint", str(ws / "gone.pt")))
    nodes = json.loads((ws / "build" / "graph.json").read_text())["nodes"]
    mvaus = [n["name"] for n in nodes if n["name"].startswith("MVAU")][:3]
    (ws / "huge-folding.json").write_text(
        json.dumps({"Defaults": {}, **{n: {"PE": 64, "SIMD": 64} for n in mvaus}})
    )
    train(
        TrainConfig(
            model=SPEC, data="digits", limit=32, epochs=1, out=str(ws / "trained"), progress=False
        )
    )
    Store(ws / "store")
    (ws / "report").mkdir()
    (ws / "report" / "index.html").write_text("<p>an earlier report</p>\n")
    return ws


@dataclass(frozen=True)
class Case:
    id: str
    cli: str
    argv: tuple[str, ...]
    culprit: tuple[str, ...]
    """Substrings the error line must hold ({ws} is the workspace)."""
    alone: bool = True
    """stderr holds nothing but the error line (the build also logs its steps)."""
    forbid: str | None = None
    code: int = 2


def case(id, cli, argv, *culprit, alone=None, forbid=None, code=2):
    alone = cli != "hwbed.build" if alone is None else alone
    return Case(id, cli, tuple(argv.split()), culprit, alone, forbid, code)


OUT = "--out {ws}/build --no-progress"
DRY = "--store {ws}/store --dry-run --no-progress"
SERVE = "--backend reference --port 0 --token-file {ws}/token"

# fmt: off
CASES = [
    # python -m hwbed.verify
    case("verify-missing-folder", "hwbed.verify", "{ws}/nonexistent_dir", "{ws}/nonexistent_dir",
         forbid="nonexistent_dir.json"),
    case("verify-empty-folder", "hwbed.verify", "{ws}/empty", "{ws}/empty"),
    case("verify-missing-checkpoint", "hwbed.verify", "{ws}/missing.pt", "{ws}/missing.pt"),
    case("verify-truncated-checkpoint", "hwbed.verify", "{ws}/truncated.pt", "{ws}/truncated.pt"),
    case("verify-random-checkpoint", "hwbed.verify", "{ws}/random.pt", "{ws}/random.pt"),
    case("verify-not-a-graph", "hwbed.verify", "{ws}/notes.txt", "{ws}/notes.txt"),
    case("verify-truncated-graph", "hwbed.verify", "{ws}/trunc-graph", "trunc-graph/graph.json"),
    case("verify-truncated-npz", "hwbed.verify", "{ws}/trunc-npz", "trunc-npz/graph.npz"),
    case("verify-bad-field", "hwbed.verify", "{ws}/bad-op", "Flatten_0", "'op'"),
    case("verify-bad-dtype", "hwbed.verify", "{ws}/bad-dtype", "INT99"),
    case("verify-param-lacks-shape", "hwbed.verify", "{ws}/no-param-shape", "thresholds"),
    case("verify-bad-input-shape", "hwbed.verify", "{ws}/bad-input-shape", "pixels"),
    case("verify-bad-meta", "hwbed.verify", "{ws}/bad-meta", "meta"),
    case("verify-narrow-accumulator", "hwbed.verify", "{ws}/narrow", "MVAU_hls_3", "INT2"),
    case("verify-graph-names-missing-checkpoint", "hwbed.verify", "{ws}/gone-ckpt",
         "gone.pt"),
    case("verify-bad-data", "hwbed.verify", "{ws}/build --data nonsense", "--data nonsense"),
    case("verify-data-does-not-fit", "hwbed.verify", "{ws}/build --data synthetic",
         "--data synthetic", "(3, 8, 8)"),
    case("verify-bad-n", "hwbed.verify", "{ws}/build --n 0", "--n 0"),
    # python -m hwbed.cost
    case("cost-bad-spec", "hwbed.cost", "resnet20 resnet21", "resnet21"),
    case("cost-bad-data", "hwbed.cost", "resnet20 --data nonsense", "--data nonsense"),
    case("cost-missing-checkpoint", "hwbed.cost", "x --checkpoint {ws}/missing.pt",
         "{ws}/missing.pt"),
    case("cost-random-checkpoint", "hwbed.cost", "x --checkpoint {ws}/random.pt",
         "{ws}/random.pt"),
    # python -m hwbed.train
    case("train-bad-data", "hwbed.train", f"--model {SPEC} --data nonsense --out {{ws}}/trained",
         "nonsense"),
    case("train-bad-spec", "hwbed.train", "--model resnet20-bogus --out {ws}/trained", "bogus"),
    case("train-missing-init", "hwbed.train",
         f"--model {SPEC} --init {{ws}}/missing.pt --limit 8 --out {{ws}}/new", "{ws}/missing.pt"),
    case("train-random-init", "hwbed.train",
         f"--model {SPEC} --init {{ws}}/random.pt --limit 8 --out {{ws}}/new", "{ws}/random.pt"),
    case("train-resume-random-checkpoint", "hwbed.train",
         f"--model {SPEC} --limit 8 --epochs 1 --out {{ws}}/trained-random", "model.pt"),
    case("train-settings-mismatch", "hwbed.train",
         f"--model {SPEC} --data digits --limit 32 --epochs 1 --lr 0.5 --out {{ws}}/trained",
         "lr"),
    # python -m hwbed.build
    case("build-unknown-target", "hwbed.build",
         f"--target nonsense --checkpoint {{ws}}/build/model.pt {OUT}", "nonsense"),
    case("build-missing-checkpoint", "hwbed.build", f"--checkpoint {{ws}}/missing.pt {OUT}",
         "{ws}/missing.pt"),
    case("build-random-checkpoint", "hwbed.build", f"--checkpoint {{ws}}/random.pt {OUT}",
         "{ws}/random.pt"),
    case("build-bad-spec", "hwbed.build", f"--model resnet20-bogus --weights random {OUT}",
         "bogus"),
    case("build-bad-data", "hwbed.build", f"--model {SPEC} --weights random --data nonsense {OUT}",
         "nonsense"),
    case("build-missing-folding", "hwbed.build",
         f"--checkpoint {{ws}}/build/model.pt --folding {{ws}}/missing.json {OUT}",
         "{ws}/missing.json"),
    case("build-truncated-folding", "hwbed.build",
         f"--checkpoint {{ws}}/build/model.pt --folding {{ws}}/truncated-folding.json {OUT}",
         "{ws}/truncated-folding.json"),
    case("build-random-folding", "hwbed.build",
         f"--checkpoint {{ws}}/build/model.pt --folding {{ws}}/random-folding.json {OUT}",
         "{ws}/random-folding.json"),
    case("build-quantize-quantized-checkpoint", "hwbed.build",
         f"--checkpoint {{ws}}/build/model.pt --quantize w8a8 {OUT}",
         "{ws}/build/model.pt", "tfc-w1a1 is already quantized"),
    case("build-quantize-malformed", "hwbed.build", f"--model resnet20 --quantize w8 {OUT}",
         "--quantize", "'w8'"),
    case("build-quantize-out-of-range", "hwbed.build", f"--model resnet20 --quantize w9a8 {OUT}",
         "w9a8", "1..8"),
    case("build-quantize-binary", "hwbed.build", f"--model resnet20 --quantize xnor {OUT}",
         "w<W>a<A>", "'xnor'"),
    case("build-quantize-without-network", "hwbed.build", f"--quantize w8a8 {OUT}",
         "--checkpoint"),
    case("build-quantize-random-weights", "hwbed.build",
         f"--model resnet20 --quantize w8a8 --weights random {OUT}", "--weights random"),
    case("build-quantize-kd-without-teacher", "hwbed.build",
         f"--model resnet20-kd --quantize w8a8 {OUT}", "teacher", "--checkpoint"),
    case("build-finetune-without-quantize", "hwbed.build",
         f"--model {SPEC} --weights random --finetune-epochs 2 {OUT}", "--quantize"),
    case("build-does-not-fit", "hwbed.build",
         "--checkpoint {ws}/build/model.pt --target pynq-z1 --folding {ws}/huge-folding.json "
         "--out {ws}/new-build --stop-step estimate --no-progress",
         "pynq-z1", "LUT",
         code=1),  # hwbed.build: "built, but the design does not fit the board"
    # python -m hwbed.attack
    case("attack-missing-checkpoint", "hwbed.attack",
         f"--checkpoint {{ws}}/missing.pt --build {{ws}}/build {DRY}", "{ws}/missing.pt"),
    case("attack-random-checkpoint", "hwbed.attack",
         f"--checkpoint {{ws}}/random.pt --build {{ws}}/build {DRY}", "{ws}/random.pt"),
    case("attack-spec-mismatch", "hwbed.attack",
         f"--checkpoint {{ws}}/build/model.pt --model resnet20 --build {{ws}}/build {DRY}",
         "{ws}/build/model.pt", "resnet20"),
    case("attack-missing-build", "hwbed.attack", f"--build {{ws}}/nonexistent_dir {DRY}",
         "{ws}/nonexistent_dir"),
    case("attack-truncated-graph", "hwbed.attack", f"--build {{ws}}/trunc-graph {DRY}",
         "trunc-graph/graph.json"),
    case("attack-bad-grid-key", "hwbed.attack",
         f"--build {{ws}}/build --grid {{ws}}/badkey.toml {DRY}", "badkey.toml", "'epsilon'"),
    case("attack-truncated-grid", "hwbed.attack",
         f"--build {{ws}}/build --grid {{ws}}/truncated-grid.json {DRY}", "truncated-grid.json"),
    case("attack-missing-grid", "hwbed.attack",
         f"--build {{ws}}/build --grid {{ws}}/missing.toml {DRY}", "{ws}/missing.toml"),
    case("attack-unknown-preset", "hwbed.attack", f"--build {{ws}}/build --preset nonsense {DRY}",
         "nonsense"),
    case("attack-bad-data", "hwbed.attack",
         f"--build {{ws}}/build --grid {{ws}}/good.toml --data nonsense {DRY}", "nonsense"),
    case("attack-unknown-executable", "hwbed.attack",
         f"--build {{ws}}/build --grid {{ws}}/good.toml --executable bogus {DRY}", "bogus"),
    case("attack-store-is-a-file", "hwbed.attack",
         "--build {ws}/build --grid {ws}/good.toml --store {ws}/notes.txt --no-progress",
         "{ws}/notes.txt"),
    # python -m hwbed.report
    case("report-missing-store", "hwbed.report.cli", "{ws}/missing-store --out {ws}/report",
         "{ws}/missing-store"),
    case("report-not-a-store", "hwbed.report.cli", "{ws}/build --out {ws}/report", "{ws}/build"),
    case("report-store-is-a-file", "hwbed.report.cli", "{ws}/notes.txt --out {ws}/report",
         "{ws}/notes.txt"),
    # python -m hwbed.fpga.deploy.server
    case("server-missing-graph", "hwbed.fpga.deploy.server",
         f"--graph {{ws}}/nonexistent_dir {SERVE}", "{ws}/nonexistent_dir"),
    case("server-truncated-graph", "hwbed.fpga.deploy.server",
         f"--graph {{ws}}/trunc-graph {SERVE}", "trunc-graph/graph.json"),
    case("server-missing-token", "hwbed.fpga.deploy.server",
         "--graph {ws}/build --backend reference --port 0 --token-file {ws}/missing-token",
         "{ws}/missing-token"),
]
# fmt: on


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_bad_input(case: Case, workspace, tmp_path, capsys, monkeypatch):
    ws = tmp_path / "ws"
    shutil.copytree(workspace, ws)
    shutil.copytree(ws / "trained", ws / "trained-random")
    (ws / "trained-random" / "model.pt").write_bytes((ws / "random.pt").read_bytes())
    if case.cli.endswith("server"):  # a case that starts anyway must not serve forever
        from hwbed.fpga.deploy.server import QueryServer

        monkeypatch.setattr(QueryServer, "serve_forever", lambda self: None)
    before = _hashes(ws)
    main = importlib.import_module(case.cli).main

    code = run(main, [a.format(ws=ws) for a in case.argv])

    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert "Traceback" not in err, err
    assert len(errors) == 1, err
    assert code == case.code, err
    assert lines[-1] == errors[0], err
    if case.alone:
        assert lines == errors, err
    for culprit in case.culprit:
        assert culprit.format(ws=ws) in errors[0], errors[0]
    if case.forbid:
        assert case.forbid not in errors[0], errors[0]
    after = _hashes(ws)
    damaged = [name for name, digest in before.items() if after.get(name) != digest]
    assert not damaged, f"{case.cli} changed or removed {damaged}"
