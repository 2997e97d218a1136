"""FGSM and PGD: agreement with torchattacks, traces, restarts, losses, BPDA and temperature."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hwbed.attacks import FGSM, PGD, AttackError, Twin, px, score_on
from hwbed.ir.executable import TorchTwin


def _float(x):
    return torch.from_numpy(x).float() / 255.0


def test_fgsm_equals_torchattacks(float_twin, correct_digits):
    ta = pytest.importorskip("torchattacks")
    x, y = correct_digits
    for k in (2, 8, 16):
        ours = FGSM()(float_twin, x, y, epsilons=[px(k)]).adversarial[0]
        ref = ta.FGSM(float_twin.model, eps=px(k))(_float(x), torch.from_numpy(y)).numpy()
        np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_without_random_start_equals_torchattacks(float_twin, correct_digits, norm):
    ta = pytest.importorskip("torchattacks")
    x, y = correct_digits
    eps, alpha = (px(8), px(2)) if norm == "linf" else (0.5, 0.1)
    pgd = PGD(norm, steps=10, abs_stepsize=alpha, random_start=False, keep="last")
    ours = pgd(float_twin, x, y, epsilons=[eps]).adversarial[0]
    cls = ta.PGD if norm == "linf" else ta.PGDL2
    ref = cls(float_twin.model, eps=eps, alpha=alpha, steps=10, random_start=False)(
        _float(x), torch.from_numpy(y)
    ).numpy()
    # sign(g) is identical; L2 steps differ by torchattacks' +1e-10 in the norm: ~1e-7
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)


def test_pgd_traces_and_iteration_accuracy(float_twin, correct_digits):
    x, y = correct_digits
    pgd = PGD("linf", steps=10, restarts=3, record_every=5)
    r = pgd(float_twin, x, y, epsilons=[px(4), px(32)])
    assert pgd.trace_steps.tolist() == [0, 5, 10]
    assert r.traces["loss"].shape == (2, 3, 3, len(y))
    assert r.traces["correct"].dtype == bool
    # the trace's correctness at the last step and the kept adversarial agree with the result
    any_broken = ~r.traces["correct"][:, :, -1].all(axis=1)
    assert (r.success >= any_broken).all()
    # accuracy over iterations: monotone, equal to the run's robust accuracy at the end
    acc = np.stack([r.accuracy_at(i) for i in range(11)], axis=1)
    assert (np.diff(acc, axis=1) <= 0).all()
    np.testing.assert_array_equal(acc[:, -1], r.robust_accuracy)
    assert r.robust_accuracy[1] <= r.robust_accuracy[0]
    assert r.robust_accuracy[1] < 0.25  # 32/255 L∞ breaks a float digits net
    assert (r.queries == 30).all()


def test_margin_loss_and_targeted_pgd(float_twin, correct_digits):
    x, y = correct_digits
    margin = PGD("linf", steps=20, loss="margin")(float_twin, x, y, epsilons=[px(32)])
    assert margin.robust_accuracy[0] < 0.25
    t = (y + 1) % 10
    tgt = PGD("linf", steps=30, targeted=True, loss="margin")(
        float_twin, x, y, epsilons=[px(64)], targets=t
    )
    assert tgt.targeted and np.mean(tgt.pred[0] == t) > 0.5
    np.testing.assert_array_equal(tgt.success[0], tgt.pred[0] == t)


def test_bpda_keeps_the_forward_exact_and_changes_the_gradient(xnor_ckpt, correct_digits):
    x, _ = correct_digits
    xf = _float(x)
    base = Twin.from_checkpoint(xnor_ckpt)
    assert len(base.binary_activations) > 0
    grads = {}
    for mode in (None, "identity", "tanh"):
        twin = base.variant(bpda=mode)
        xi = xf.clone().requires_grad_(True)
        logits = twin(xi)
        torch.testing.assert_close(logits, base(xf), rtol=0, atol=0)
        (grads[mode],) = torch.autograd.grad(logits[:, 0].sum(), xi)
    assert not torch.equal(grads[None], grads["tanh"])
    assert not torch.equal(grads["identity"], grads["tanh"])
    hot = base.variant(temperature=10.0)
    torch.testing.assert_close(hot(xf) * 10.0, base(xf))


def test_bpda_on_a_float_network_is_refused(float_twin):
    with pytest.raises(AttackError, match="no binary activations"):
        float_twin.variant(bpda="tanh")


def test_scored_on_the_uint8_boundary_stays_in_the_ball(float_twin, correct_digits):
    x, y = correct_digits
    exe = TorchTwin(float_twin.model, "twin-u8", (1, 8, 8), 10)
    for norm, eps in (("linf", [0, px(3), px(8)]), ("l2", [0.0, 0.3, 1.0])):
        r = PGD(norm, steps=10)(float_twin, x, y, epsilons=eps)
        s = score_on(r, exe)
        assert s.adversarial.dtype == np.uint8 and s.scored_on == "twin-u8"
        assert s.crafted_on == r.crafted_on
        assert (s.distortion[norm] <= np.asarray(eps)[:, None] * (1 + 1e-6)).all()
        np.testing.assert_array_equal(s.adversarial[0], np.broadcast_to(x, s.adversarial[0].shape))
        assert s.robust_accuracy[0] == s.clean_accuracy == 1.0
        # rounding moves each pixel by at most half a step: labels mostly survive it
        assert np.mean(s.pred == r.pred) > 0.8


@pytest.mark.parametrize("attack", [FGSM(), PGD("linf", steps=3), PGD("l2", steps=3)])
def test_same_seed_same_adversarials(float_twin, correct_digits, attack):
    x, y = correct_digits
    a = attack(float_twin, x, y, epsilons=[0.1], seed=3).adversarial
    b = attack(float_twin, x, y, epsilons=[0.1], seed=3).adversarial
    np.testing.assert_array_equal(a, b)
    if isinstance(attack, PGD):
        c = attack(float_twin, x, y, epsilons=[0.1], seed=4).adversarial
        assert not np.array_equal(a, c)


def test_bad_configuration():
    with pytest.raises(AttackError, match="needs a norm"):
        PGD(steps=3)
    with pytest.raises(AttackError, match="steps must be a positive integer"):
        PGD("linf", steps=0)
    with pytest.raises(AttackError, match="unknown loss 'dlr'"):
        FGSM(loss="dlr")


def test_bad_input(float_twin, correct_digits):
    x, y = correct_digits
    with pytest.raises(AttackError, match=r"labels\[0\] = 10 is outside 0..9"):
        FGSM()(float_twin, x, np.full_like(y, 10), epsilons=[0.1])
    with pytest.raises(AttackError, match="expected 32 labels"):
        FGSM()(float_twin, x, y[:3], epsilons=[0.1])
    with pytest.raises(AttackError, match="do not fit the model input"):
        FGSM()(float_twin, x[:, :, :4], y, epsilons=[0.1])
    exe = TorchTwin(float_twin.model, "twin-u8", (1, 8, 8), 10)
    with pytest.raises(AttackError, match="white-box attack.*got twin-u8"):
        FGSM()(exe, x, y, epsilons=[0.1])


@pytest.mark.parametrize("keep", ["first", "last"])
def test_snapshots_equal_shorter_runs(float_twin, correct_digits, keep):
    x, y = correct_digits
    eps = [px(8), px(32)]
    full = PGD("linf", steps=6, restarts=2, keep=keep)(float_twin, x, y, eps, snapshots=[2, 4])
    for i in (2, 4):
        short = PGD("linf", steps=i, restarts=2, keep=keep)(float_twin, x, y, eps)
        at = full.at(i, "steps")
        np.testing.assert_array_equal(at.adversarial, short.adversarial)
        np.testing.assert_array_equal(at.pred, short.pred)
        np.testing.assert_array_equal(at.first_success, short.first_success)
        np.testing.assert_array_equal(at.queries, short.queries)
        np.testing.assert_array_equal(at.robust_accuracy, short.robust_accuracy)
        assert at.params["steps"] == i and not at.snapshots and not at.traces
    with pytest.raises(AttackError, match="snapshot at iteration 9 > steps 6"):
        PGD("linf", steps=6)(float_twin, x, y, eps, snapshots=[9])


def test_an_image_already_misclassified_is_broken_at_every_eps(float_twin, digits_test):
    x, y = digits_test
    r = FGSM()(float_twin, x, y, epsilons=[0.0, px(4), px(8)])
    wrong = r.clean_pred != y
    assert wrong.any()
    assert r.success[:, wrong].all()
    expect = np.mean((r.clean_pred == y)[None] & (r.pred == y[None]), axis=1)
    np.testing.assert_array_equal(r.robust_accuracy, expect)
    assert r.robust_accuracy[0] == r.clean_accuracy
