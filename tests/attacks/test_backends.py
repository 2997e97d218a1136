"""The executable factory: every kind on one trained network, and its refusals."""

from __future__ import annotations

import numpy as np
import pytest

from hwbed.attacks import PGD, AttackError, px, score_on
from hwbed.attacks.backends import KINDS, make_executable


@pytest.fixture(scope="module")
def exes(xnor_ckpt):
    return {kind: make_executable(kind, xnor_ckpt) for kind in ("twin", "sim", "sim-reference")}


def test_exact_kinds_agree_bit_for_bit(exes, digits_test):
    x, _ = digits_test
    twin = exes["twin"](x)
    for kind in ("sim", "sim-reference"):
        exe = exes[kind]
        assert exe.bit_exact and exe.returns == "scores"
        np.testing.assert_array_equal(exe(x), twin)
    assert exes["twin"].name == "twin:resnet20-xnor"


@pytest.mark.integration
def test_onnx_kinds_emulate_the_twin(xnor_ckpt, digits_test):
    x, _ = digits_test
    twin = make_executable("twin", xnor_ckpt)(x[:4])
    ort = make_executable("ort", xnor_ckpt)
    assert not ort.bit_exact and ort.name == "ort:resnet20-xnor"
    np.testing.assert_allclose(ort(x[:4]), twin, atol=1e-4)
    qonnx = make_executable("qonnx", xnor_ckpt)
    np.testing.assert_allclose(qonnx(x[:2]), twin[:2], atol=1e-4)


def test_remote_kind_through_a_local_query_server(exes, digits_test, tmp_path):
    from hwbed.fpga.deploy.server import QueryServer

    x, _ = digits_test
    with QueryServer(exes["sim"], token="s3cret", port=0).start() as server:
        remote = make_executable(f"remote={server.url}", token="s3cret")
        assert remote.returns == "scores" and remote.bit_exact
        np.testing.assert_array_equal(remote(x[:8]), exes["twin"](x[:8]))
        (tmp_path / "deploy").mkdir()
        (tmp_path / "deploy" / "token").write_text("s3cret\n")
        assert make_executable("remote", tmp_path, url=server.url).queries == 0


def test_white_box_adversarials_scored_on_the_simulator(xnor_ckpt, exes, digits_test):
    from hwbed.attacks import Twin

    x, y = digits_test
    r = PGD("linf", steps=5)(Twin.from_checkpoint(xnor_ckpt), x[:16], y[:16], epsilons=[px(16)])
    on_sim = score_on(r, exes["sim"])
    on_twin = score_on(r, exes["twin"])
    # the simulator is the twin bit for bit, so the device verdict equals the twin's
    np.testing.assert_array_equal(on_sim.pred, on_twin.pred)
    assert on_sim.scored_on.startswith("dsp48-fast") and on_sim.crafted_on == r.crafted_on


def test_refusals_name_the_culprit(tmp_path):
    with pytest.raises(AttackError, match="unknown executable kind 'fpga'.*twin, sim"):
        make_executable("fpga", tmp_path)
    with pytest.raises(AttackError, match="no such build folder"):
        make_executable("sim", tmp_path / "missing")
    with pytest.raises(AttackError, match="no model.pt"):
        make_executable("twin", tmp_path)
    with pytest.raises(AttackError, match="needs url="):
        make_executable("remote")
    with pytest.raises(AttackError, match="no token"):
        make_executable("remote=http://127.0.0.1:9")
    with pytest.raises(AttackError, match="PYNQ board"):
        make_executable("finn", bitfile="x.bit", driver_dir=tmp_path)
    assert set(KINDS) == {"twin", "sim", "sim-reference", "ort", "qonnx", "remote", "finn"}
