"""WS-DAN (\\WM/, 4th place): attention maps, attention crop and drop, centre loss, training and eval outputs,
weights."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import timm
import timm.models._builder
import torch
import torch.nn.functional as F

from dfdc.data.batch import Batch
from dfdc.models import WeightsError, create_model
from dfdc.models.wsdan import (
    HEAD,
    WSDAN,
    attention_crop,
    attention_drop,
    centre_loss,
    crop_boxes,
    mean_probability_logit,
    update_centres,
    wsdan,
)
from dfdc.train.step import forward_loss

pytestmark = pytest.mark.usefixtures("one_thread", "no_download")



def tent(size: int, cells: int, cell: int) -> torch.Tensor:
    """Bilinear (half-pixel) weight of low-resolution ``cell`` at each of ``size`` output pixels."""
    src = (torch.arange(size, dtype=torch.float64) + 0.5) * cells / size - 0.5
    return (1 - (src - cell).abs()).clamp_min(0)


def hot_spot(cells: int, row: int, col: int) -> torch.Tensor:
    m = torch.zeros(cells, cells)
    m[row, col] = 3.0  # any peak: maps are divided by their maximum
    return m


def batch_of(y: list[float], size: int = 64) -> Batch:
    x = torch.randint(0, 256, (len(y), size, size, 3), dtype=torch.uint8)
    return Batch(x=x, y=torch.tensor(y), idx=torch.arange(len(y), dtype=torch.int64))


@pytest.mark.parametrize("size, cells", [(64, 2), (96, 3)])
def test_attention_maps_have_the_configured_count_and_the_last_feature_map_size(size, cells):
    torch.manual_seed(0)
    model = wsdan("resnet18", input_size=size, attentions=5).eval()
    with torch.no_grad():
        logits, features, attention = model.describe(torch.randn(2, 3, size, size))
    assert attention.shape == (2, 5, cells, cells) and (attention >= 0).all()
    assert features.shape == (2, 5 * 512) and logits.shape == (2,)
    assert torch.allclose(features.norm(dim=1), torch.ones(2), atol=1e-5)

    default = create_model("wsdan_resnet18", input_size=size).train()
    out = default(torch.randn(2, 3, size, size))
    assert out.aux["attention"].shape == (2, 8, cells, cells)
    assert {k: tuple(v.shape) for k, v in out.aux.items() if k.endswith("logits")} == {
        "crop_logits": (2,), "drop_logits": (2,)}


def test_attention_drop_zeroes_the_hot_region_and_nothing_else():
    torch.manual_seed(1)
    images = torch.rand(3, 3, 32, 32) + 0.5  # no pixel is zero before the drop
    maps = torch.stack([hot_spot(4, 1, 2), hot_spot(4, 2, 1), torch.zeros(4, 4)])
    theta = torch.tensor([0.5, 0.25, 0.5])
    dropped = attention_drop(images, maps, theta)

    for i, (row, col) in enumerate([(1, 2), (2, 1)]):
        region = torch.outer(tent(32, 4, row), tent(32, 4, col)) > theta[i].item()  # (32, 32)
        assert 0 < region.sum() < 32 * 32 / 4
        assert (dropped[i][:, region] == 0).all()
        assert torch.equal(dropped[i][:, ~region], images[i][:, ~region])
    assert torch.equal(dropped[2], images[2])  # a map without attention drops nothing


def test_attention_crop_is_the_resized_bounding_box_of_the_hot_region():
    torch.manual_seed(2)
    images = torch.rand(2, 3, 32, 32)
    maps = torch.stack([hot_spot(4, 1, 2), hot_spot(4, 3, 0)])
    theta = torch.tensor([0.25, 0.5])
    crops = attention_crop(images, maps, theta)
    assert crops.shape == images.shape

    for i, (row, col) in enumerate([(1, 2), (3, 0)]):
        region = torch.outer(tent(32, 4, row), tent(32, 4, col)) > theta[i].item()
        rows, cols = region.any(1).nonzero()[:, 0], region.any(0).nonzero()[:, 0]
        box = images[i:i + 1, :, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.shape[-1] < 32 and box.shape[-2] < 32
        want = F.interpolate(box, size=(32, 32), mode="bilinear", align_corners=False)[0]
        assert torch.allclose(crops[i], want, atol=1e-6)

    whole = attention_crop(images, torch.zeros(2, 4, 4), 0.5)  # no attention: the whole image
    assert torch.allclose(whole, images, atol=1e-6)


def test_crop_boxes_pad_and_clamp():
    mask = torch.zeros(3, 32, 32, dtype=torch.bool)
    mask[0, 5:10, 10:21] = True
    mask[1, 0:2, 30:32] = True
    assert crop_boxes(mask).tolist() == [[5, 10, 10, 21], [0, 2, 30, 32], [0, 32, 0, 32]]
    assert crop_boxes(mask, padding=0.1).tolist() == [[2, 13, 7, 24], [0, 5, 27, 32], [0, 32, 0, 32]]


@pytest.mark.parametrize("beta", [5e-2, 0.0])
def test_centre_loss_falls_as_features_are_pulled_to_their_class_centre(beta):
    torch.manual_seed(3)
    free = F.normalize(torch.randn(8, 64), dim=1).requires_grad_()
    fake = torch.tensor([False, True] * 4)
    centres = torch.zeros(2, 64) if beta else torch.randn(2, 64)  # beta 0: fixed centres
    start = centres.clone()
    opt = torch.optim.SGD([free], lr=10.0)
    losses = []
    for _ in range(40):
        loss = centre_loss(F.normalize(free, dim=1), centres, fake)
        opt.zero_grad()
        loss.backward()
        opt.step()
        update_centres(centres, F.normalize(free, dim=1), fake, beta=beta)
        losses.append(loss.item())
    assert losses[-1] < losses[1] / 10 and losses[-1] < 1e-3
    assert sum(b > a + 1e-6 for a, b in itertools.pairwise(losses[1:])) <= 2  # monotone but for a wiggle
    f = F.normalize(free.detach(), dim=1)
    assert torch.allclose(f[fake], F.normalize(centres[1], dim=0).expand(4, -1), atol=0.05)
    assert torch.allclose(f[~fake], F.normalize(centres[0], dim=0).expand(4, -1), atol=0.05)
    assert torch.equal(centres, start) == (beta == 0)


def test_centre_update_steps_towards_the_class_mean():
    centres = torch.zeros(2, 3)
    feats = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    update_centres(centres, feats, torch.tensor([True, True]), beta=0.5)
    assert torch.equal(centres[0], torch.zeros(3))  # no real image in the batch
    assert torch.allclose(centres[1], torch.tensor([0.25, 0.25, 0.0]))
    update_centres(centres, feats[:1], torch.tensor([True]), beta=0.5)
    step = 0.5 * (feats[0] - F.normalize(torch.tensor([0.25, 0.25, 0.0]), dim=0))
    assert torch.allclose(centres[1], torch.tensor([0.25, 0.25, 0.0]) + step)
    assert centre_loss(feats, torch.tensor([[0.0, 2.0, 0.0], [3.0, 0.0, 0.0]]),
                       torch.tensor([True, False])).item() == pytest.approx(0.0)


@pytest.mark.parametrize("y", [[0.0, 1.0], [0.3, 0.8, 1.0]])
def test_a_training_step_has_every_term_finite_and_moves_the_centres(y):
    torch.manual_seed(4)
    model = create_model("wsdan_resnet18", input_size=64, drop_rate=0.5).train()
    assert model.feature_dropout == 0.5 and torch.equal(model.centres, torch.zeros_like(model.centres))
    total, terms = forward_loss(model, batch_of(y), [], np.random.default_rng(0), torch.device("cpu"))
    assert set(terms) == {"bce", "crop_bce", "drop_bce", "center"}
    assert all(isinstance(k, str) and math.isfinite(v) for k, v in terms.items())
    assert total.item() == pytest.approx(sum(terms.values()), rel=1e-5)
    assert terms["center"] == pytest.approx(1.0, abs=1e-4)  # unit features, centres still at zero
    total.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.attention.conv.weight.grad.abs().sum() > 0
    moved = model.centres.norm(dim=1)  # 0.05 * the norm of the class's mean unit feature
    assert moved[0].item() == pytest.approx(0.05, abs=1e-5)  # one real image
    assert 0 < moved[1].item() <= 0.05 + 1e-5

    state = model.state_dict()
    assert torch.equal(state["centres"], model.centres)  # the centres travel with the weights
    model.eval()
    with torch.no_grad():
        out = model(model.spec.prepare(batch_of(y).x))
    assert model.loss_terms(out, batch_of(y)) == {}
    assert torch.equal(model.centres, state["centres"])


def test_training_randomness_follows_torch_manual_seed():
    torch.manual_seed(5)
    model = create_model("wsdan_resnet18", input_size=64, drop_rate=0.5).train()
    x = torch.randn(3, 3, 64, 64)
    runs = []
    for _ in range(2):
        torch.manual_seed(6)
        with torch.no_grad():
            runs.append(model(x))
    assert all(torch.equal(runs[0].aux[k], runs[1].aux[k]) for k in ("crop_logits", "drop_logits"))
    assert torch.equal(runs[0].logits, runs[1].logits)


def test_eval_averages_the_probabilities_of_the_image_and_its_attention_crop():
    torch.manual_seed(7)
    model = create_model("wsdan_resnet18", input_size=96).eval()
    model.eval_theta = 0.9  # a tight crop, so the crop's prediction differs from the whole image's
    x = torch.randn(3, 3, 96, 96)
    with torch.no_grad():
        out = model(x)
        raw, _, _ = model.describe(x)
    assert torch.equal(out.aux["raw_logits"], raw)
    assert not torch.allclose(out.aux["crop_logits"], raw)
    mean = (torch.sigmoid(out.aux["raw_logits"]) + torch.sigmoid(out.aux["crop_logits"])) / 2
    assert torch.allclose(out.logits, torch.logit(mean), atol=1e-5)
    model.refine = False
    with torch.no_grad():
        assert torch.equal(model(x).logits, raw)


def test_mean_probability_logit_is_exact_for_extreme_logits():
    a, b = torch.tensor([40.0, 30.0, -200.0, 0.0]), torch.tensor([-40.0, 30.0, -100.0, 0.0])
    got = mean_probability_logit(a, b)
    assert torch.isfinite(got).all()
    assert torch.allclose(got, torch.tensor([0.0, 30.0, -100.0 - math.log(2.0), 0.0]), atol=1e-4)


def test_a_timm_file_of_the_backbone_loads_into_the_backbone(tmp_path):
    torch.manual_seed(8)
    imagenet = timm.create_model("resnet18", pretrained=False)  # 1000-class fc
    state = imagenet.state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)

    torch.manual_seed(9)
    model = create_model("wsdan_resnet18", input_size=64, pretrained=path)
    got = model.backbone.state_dict()
    body = [k for k in state if not k.startswith("fc.")]
    assert set(got) == set(body)
    assert all(torch.equal(state[k], got[k]) for k in body)
    assert model.logit.weight.shape == (1, 8 * 512)

    own = tmp_path / "wsdan.pth"
    model.centres.fill_(0.5)
    torch.save({"state_dict": model.state_dict()}, own)
    again = create_model("wsdan_resnet18", input_size=64, pretrained=own)
    want, have = model.state_dict(), again.state_dict()
    assert want.keys() == have.keys() and all(torch.equal(want[k], have[k]) for k in want)


def test_a_trained_frame_model_gives_its_backbone():
    torch.manual_seed(10)
    frame = create_model("resnet18", input_size=64)
    model = create_model("wsdan_resnet18", input_size=64)
    n = model.load_backbone(frame.state_dict(), "resnet18 checkpoint")
    assert n == len(model.backbone.state_dict())
    src = frame.state_dict()
    assert all(torch.equal(v, src[f"backbone.{k}"]) for k, v in model.backbone.state_dict().items())


def test_head_is_attention_classifier_and_centres():
    model = create_model("wsdan_resnet18", input_size=64)
    assert model.spec.head == HEAD and isinstance(model, WSDAN)
    groups = {g["name"]: g for g in model.param_groups(lr=0.1, weight_decay=0.0, backbone_lr_scale=0.0)}
    assert set(groups) == {"head"}
    head = {id(p) for p in groups["head"]["params"]}
    assert head == {id(p) for p in (*model.attention.parameters(), *model.logit.parameters())}
    assert not model.backbone.conv1.weight.requires_grad


def test_xception_has_no_drop_path():
    with pytest.raises(ValueError, match="drop_path_rate"):
        create_model("wsdan_xception", drop_path_rate=0.1)


def test_hub_weights_offline_fail_at_once_naming_the_model(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsError) as e:
        create_model("wsdan_resnet18", pretrained="hub")
    assert str(e.value).startswith("wsdan_resnet18: pretrained: hub needs timm's weights timm/resnet18")
    assert "HF_HUB_OFFLINE is set" in str(e.value)


def test_the_training_loop_doubles_the_centres_after_each_epoch(tiny_prep, tmp_path, monkeypatch):
    """\\WM/'s centre fixing runs through the model's end_epoch hook: two epochs, centres doubled twice."""
    from dfdc.config.train import AugmentParams, ModelParams
    from dfdc.models import checkpoint
    from dfdc.train.loop import TrainJob, train_model

    calls = []
    original = WSDAN.end_epoch

    def spy(self, epoch):
        before = self.centres.clone()
        original(self, epoch)
        calls.append((epoch, bool(torch.allclose(self.centres, 2 * before))))

    monkeypatch.setattr(WSDAN, "end_epoch", spy)
    p = ModelParams(arch="wsdan_resnet18", input_size=32, epochs=2, batch_size=8, drop_rate=0.5,
                    augment=AugmentParams(jpeg=False, noise=False, blur=False))
    crops = tiny_prep["crops"].groupby("video").head(2)  # two crops a video: the hook, not the learning
    train_model(TrainJob("ws", p, crops, tiny_prep["folds"], tiny_prep["crops_dir"], tmp_path / "ws"), progress=False)
    assert calls == [(0, True), (1, True)]
    assert checkpoint.load(tmp_path / "ws" / "last.pt").weights["centres"].abs().sum() > 0
