"""CAM view: heat-map scaling and Q3 by hand, CAM exactness (mean + bias = logit) on float
and XNOR twins, a hand-built head, the BNN-PYNQ refusal and one DeepFool study."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

from hwbed.attacks.deepfool import DeepFool
from hwbed.attacks.twin import Twin
from hwbed.models.zoo import build_model
from hwbed.report.cam import (
    cam_study,
    class_activation_maps,
    fc_parameters,
    heatmap_255,
    q3,
)

RAMP = np.arange(16, dtype=np.float64).reshape(4, 4)


def test_q3_of_a_ramp_by_hand():
    heat = 17.0 * RAMP  # 0, 17, ..., 255
    # linear (type 7): p = 0.75 * (16 - 1) = 11.25 -> v11 + 0.25 (v12 - v11) = 17 * 11.25
    assert q3(heat) == pytest.approx(191.25, abs=1e-12)
    both = q3(np.stack([heat, heat[::-1, ::-1].T]))  # the order of the pixels does not matter
    np.testing.assert_allclose(both, [191.25, 191.25], atol=1e-12)
    # 5 pixels: p = 3 exactly -> the fourth smallest value
    assert q3(np.array([[9.0, 1.0, 7.0, 3.0, 5.0]])) == 7.0


def test_heatmap_min_max_scaling_by_hand():
    cam = np.array([[[2.0, 4.0], [6.0, 10.0]]])
    np.testing.assert_allclose(heatmap_255(cam, 2), [[[0.0, 63.75], [127.5, 255.0]]], atol=1e-12)
    np.testing.assert_allclose(heatmap_255(-cam, 2), 255.0 - heatmap_255(cam, 2), atol=1e-12)
    np.testing.assert_allclose(heatmap_255(RAMP - 3.5, (4, 4)), 17.0 * RAMP, atol=1e-12)
    assert q3(heatmap_255(RAMP, 4)) == pytest.approx(191.25)
    flat = heatmap_255(np.full((2, 3, 3), -4.2), 6)  # a constant map -> 0
    assert flat.shape == (2, 6, 6) and not flat.any()


def test_heatmap_upsamples_bilinearly_by_hand():
    # 2x2 -> 4x4, align_corners=False: source coords -0.25 (clamped), 0.25, 0.75, 1.25
    # (clamped), so each axis mixes with weights t = 0, .25, .75, 1 and v = 2 ty + tx in [0, 3]
    t = np.array([0.0, 0.25, 0.75, 1.0])
    want = 85.0 * (2 * t[:, None] + t[None, :])
    got = heatmap_255(np.array([[0.0, 1.0], [2.0, 3.0]]), 4)
    np.testing.assert_allclose(got, want, atol=1e-12)


class TinyHead:
    """A fake network: features(x) = x ([N, 2, 2, 2]), fc with known weights."""

    def __init__(self):
        self.fc = nn.Linear(2, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.0, 0.5]]))
            self.fc.bias.copy_(torch.tensor([0.1, 0.2, 0.3]))

    def features(self, x):
        return x


def test_cam_of_a_hand_built_head():
    f = torch.zeros(2, 2, 2, 2)
    f[0, 0, 0, 0], f[0, 1, 1, 1] = 1.0, 2.0  # mean [0.25, 0.5] -> logits [1.35, 0.45, 0.55]
    f[1, 0, 1, 0], f[1, 1, 0, 1] = 4.0, 1.0  # mean [1, 0.25] -> logits [1.6, 2.95, 0.425]
    model = TinyHead()
    want = {
        0: [[[1, 0], [0, 4]], [[0, 2], [4, 0]]],
        1: [[[3, 0], [0, -2]], [[0, -1], [12, 0]]],
        2: [[[0, 0], [0, 1]], [[0, 0.5], [0, 0]]],
    }
    for c, maps in want.items():
        np.testing.assert_allclose(class_activation_maps(model, f, c), maps)
    default = class_activation_maps(model, f)  # predicted: class 0, then class 1
    np.testing.assert_allclose(default, [want[0][0], want[1][1]])
    np.testing.assert_allclose(class_activation_maps(model, f, [2, 0]), [want[2][0], want[0][1]])
    w, b = fc_parameters(model)
    assert torch.equal(w, model.fc.weight.detach()) and torch.equal(b, model.fc.bias.detach())


def _exact(twin: Twin, x: np.ndarray) -> None:
    xf = torch.from_numpy(x).float() / 255.0
    with torch.no_grad():
        logits = twin(xf).double()
    bias = twin.model.fc.bias.detach().double()
    for c in range(twin.num_classes):
        cam = torch.from_numpy(class_activation_maps(twin, xf, c)).double()
        np.testing.assert_allclose(
            cam.mean(dim=(1, 2)) + bias[c], logits[:, c], rtol=1e-6, atol=1e-5
        )
    pred = logits.argmax(1)
    cam = torch.from_numpy(class_activation_maps(twin, x)).double()  # uint8 in, predicted c
    np.testing.assert_allclose(
        cam.mean(dim=(1, 2)) + bias[pred], logits.gather(1, pred[:, None])[:, 0], atol=1e-5
    )


def test_cam_mean_plus_bias_is_the_logit_float(float_ckpt, digits_test):
    twin = Twin.from_checkpoint(float_ckpt)
    assert type(twin.model.fc) is nn.Linear
    _exact(twin, digits_test[0])


def test_cam_mean_plus_bias_is_the_logit_xnor(xnor_ckpt, digits_test):
    twin = Twin.from_checkpoint(xnor_ckpt)
    assert twin.binary_activations  # the features come after binary activations
    w, _ = fc_parameters(twin)
    scale = twin.model.fc.quant_weight().scale.detach()
    ints = w / scale  # the effective 8-bit weight, not the float shadow weight
    assert torch.allclose(ints, ints.round(), atol=1e-3) and ints.abs().max() <= 128
    _exact(twin, digits_test[0])


@pytest.mark.parametrize(
    "spec, shape, name", [("cnv-w1a1", (3, 32, 32), "CNV"), ("tfc-w1a1", (1, 8, 8), "FC")]
)
def test_bnn_pynq_nets_have_no_cam(spec, shape, name):
    model = build_model(spec, *shape, 10)
    x = torch.rand(1, *shape)
    with pytest.raises(ValueError, match=f"undefined for {name}:"):
        class_activation_maps(model, x)
    twin = Twin(model, shape, 10, name=f"twin:{spec}")
    with pytest.raises(ValueError, match=f"undefined for twin:{spec}.*global-average-pool"):
        class_activation_maps(twin, x)
    with pytest.raises(ValueError, match=f"twin:{spec}"):  # before any attack runs
        cam_study(twin, np.zeros((1, *shape), np.uint8), [0])


def test_cam_study_on_three_digits(float_ckpt, digits_test):
    x, y = digits_test[0][:3], digits_test[1][:3]
    twin = Twin.from_checkpoint(float_ckpt)
    table, fig = cam_study(twin, x, y, iterations=(1, 5), seed=0)
    assert list(table.columns[:6]) == ["image", "label", "stage", "iterations", "pred", "q3"]
    assert list(table["stage"].unique()) == ["clean", "deepfool@1", "deepfool@5"]
    assert len(table) == 9 and table["q3"].between(0, 255).all()
    by = {s: g.sort_values("image") for s, g in table.groupby("stage")}
    xf = torch.from_numpy(x).float() / 255.0
    np.testing.assert_array_equal(by["clean"]["pred"], twin.predict(xf).numpy())
    np.testing.assert_array_equal(by["clean"]["label"], y)
    for i in (1, 5):  # the adversarials DeepFool(steps=i) returns on its own
        adv = DeepFool("l2", steps=i)(twin, x, y, seed=0).adversarial[0]
        pred = twin.predict(torch.from_numpy(adv)).numpy()
        stage = by[f"deepfool@{i}"]
        np.testing.assert_array_equal(stage["pred"], pred)
        heat = heatmap_255(class_activation_maps(twin, adv, pred), 8)
        np.testing.assert_allclose(stage["q3"], q3(heat), atol=1e-3)
        l2 = np.linalg.norm((adv - xf.numpy()).reshape(3, -1), axis=1)
        np.testing.assert_allclose(stage["l2"], l2, atol=1e-5)
    axes = [a for a in fig.axes if a.get_label() != "<colorbar>"]
    assert len(axes) == 3 * 4 and len(fig.axes) == 13
    titles = [a.get_title() for a in axes]
    row = table[(table["image"] == 2) & (table["stage"] == "deepfool@5")].iloc[0]
    assert f"deepfool@5: pred {row['pred']}, Q3 {row['q3']:.0f}" in titles
    assert fig.axes[-1].get_ylabel() == "CAM intensity [0–255]"
    fig.savefig(io.BytesIO(), format="png")
