"""Model registry: every model trains one step, specs, names, local-only weights."""
from __future__ import annotations

import math

import pytest
import timm
import timm.models._builder
import torch
import torch.nn.functional as F

from dfdc.models import MODELS, ModelOutput, ModelSpec, create_model, list_models

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
EXPECTED_SPECS = {  # name: (mean, std, head)
    "efficientnet_b0": (*IMAGENET, ("backbone.classifier",)),
    "efficientnet_b7": (*IMAGENET, ("backbone.classifier",)),
    "tf_efficientnet_b7_ns": (*IMAGENET, ("backbone.classifier",)),
    "xception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), ("backbone.fc",)),
    "seresnext50_32x4d": (*IMAGENET, ("backbone.fc",)),
    "regnetx_002": (*IMAGENET, ("backbone.head.fc",)),
}


pytestmark = pytest.mark.usefixtures("one_thread", "no_download")



def test_list_models_sorted_and_complete():
    names = list_models()
    assert names == sorted(MODELS)
    frames = {f"efficientnet_b{i}" for i in range(8)} | {
        "tf_efficientnet_b7_ns", "xception", "seresnext50_32x4d",
        "resnet18", "mobilenetv3_small_100", "efficientnet_lite0", "regnetx_002",
    }
    clips = {"r3d_18", "mc3_18", "r2plus1d_18", "s3d", "r3d_mini", "i3d",
             "ntech_efficientnet_b0", "ntech_tf_efficientnet_b7_ns",
             "lstm_resnet18", "lstm_regnetx_002", "lstm_mobilenetv3_small_100", "lstm_efficientnet_b0",
             "lstm_efficientnet_b6", "lstm_tf_efficientnet_b7_ns"}
    foundation = {f"clip_vit_{tower}_{mode}" for tower in ("l14", "b16", "tiny")
                  for mode in ("ln", "probe", "effort", "gend")}
    wsdan = {"wsdan_xception", "wsdan_efficientnet_b3", "wsdan_resnet18"}
    assert set(names) == frames | clips | foundation | wsdan


# CLIP ViT-L/14 and B/16 towers take 5-10 s each to build on a CPU; tests/models/test_foundation.py builds and
# steps them (and the tiny tower of the same code runs here)
SWEEP = [n for n in list_models() if not n.startswith(("clip_vit_l14", "clip_vit_b16"))]


@pytest.mark.parametrize("name", SWEEP)
def test_every_model_trains_one_step_through_its_spec(name):
    """The registry sweep: each model eats what its spec says, gives (B,) logits, finite loss and gradients."""
    torch.manual_seed(0)
    model = create_model(name, input_size=64, drop_rate=0.2).train()
    spec = model.spec
    assert isinstance(spec, ModelSpec) and spec.size == 64 and spec.input in ("frame", "clip")
    shape = (2, 64, 64, 3) if spec.input == "frame" else (2, spec.clip_len, 64, 64, 3)
    x = spec.prepare(torch.randint(0, 256, shape, dtype=torch.uint8))  # (B, 3, H, W) or (B, 3, T, H, W)
    out = model(x)
    assert isinstance(out, ModelOutput) and out.logits.shape == (2,)
    loss = F.binary_cross_entropy_with_logits(out.logits, torch.tensor([0.0, 1.0]))
    assert math.isfinite(loss.item())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]  # a frozen backbone has none
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert len(spec.mean) == len(spec.std) == 3
    assert all(0.0 < m < 1.0 for m in spec.mean) and all(0.0 < s < 1.0 for s in spec.std)
    heads = [n for n, _ in model.named_parameters() if spec.is_head(n)]
    assert heads and len(heads) < len(list(model.parameters()))  # a head, and a backbone
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    if name in EXPECTED_SPECS:
        assert (spec.mean, spec.std, spec.head) == EXPECTED_SPECS[name]


def test_single_image_batch_gives_one_logit():
    model = create_model("mobilenetv3_small_100").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).logits.shape == (1,)


def test_the_spec_says_the_trained_input_size():
    spec = create_model("mobilenetv3_small_100", input_size=380).spec
    assert spec.size == 380 and spec.mean == IMAGENET[0] and spec.input == "frame"


def test_param_groups_split_backbone_and_head():
    model = create_model("resnet18")
    groups = {g["name"]: g for g in model.param_groups(lr=0.1, weight_decay=0.0, backbone_lr_scale=0.1)}
    assert groups["backbone"]["lr"] == pytest.approx(0.01) and groups["head"]["lr"] == 0.1
    assert {id(p) for p in groups["head"]["params"]} == {id(model.backbone.fc.weight), id(model.backbone.fc.bias)}
    frozen = model.param_groups(lr=0.1, weight_decay=0.0, backbone_lr_scale=0.0)
    assert [g["name"] for g in frozen] == ["head"]
    assert not model.backbone.conv1.weight.requires_grad and model.backbone.fc.weight.requires_grad


def test_drop_rates_reach_timm():
    model = create_model("efficientnet_b0", drop_rate=0.3, drop_path_rate=0.2)
    assert model.backbone.drop_rate == 0.3
    probs = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    assert probs and 0.0 < max(probs) <= 0.2


def test_xception_has_dropout_but_no_drop_path():
    assert create_model("xception", drop_rate=0.3).backbone.drop_rate == 0.3
    with pytest.raises(ValueError, match="drop_path_rate"):
        create_model("xception", drop_path_rate=0.1)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        create_model("efficientnet_b9")
    assert "efficientnet_b9" in str(err.value)
    assert ", ".join(list_models()) in str(err.value)


@pytest.mark.parametrize("missing", ["nope.pth", "weights/nope"])
def test_missing_weights_file(tmp_path, monkeypatch, missing):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        create_model("resnet18", pretrained=missing)
    assert missing in str(err.value) and "resnet18" in str(err.value) and "'hub'" in str(err.value)
    with pytest.raises(FileNotFoundError, match="nope"):
        create_model("resnet18", pretrained=tmp_path / "nope")


@pytest.mark.parametrize("pretrained, message", [("imagenet", "neither an existing file nor 'hub'"),
                                                 (True, "ambiguous: pass 'hub'")])
def test_non_file_pretrained_refused(tmp_path, monkeypatch, pretrained, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=message):
        create_model("resnet18", pretrained=pretrained)


def test_local_weights_load_exactly(tmp_path):
    torch.manual_seed(1)
    source = create_model("mobilenetv3_small_100").eval()
    path = tmp_path / "source.pth"
    torch.save(source.state_dict(), path)

    torch.manual_seed(2)
    fresh = create_model("mobilenetv3_small_100")
    torch.manual_seed(2)
    loaded = create_model("mobilenetv3_small_100", pretrained=str(path)).eval()

    want, got = source.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert not torch.equal(fresh.state_dict()["backbone.conv_stem.weight"], want["backbone.conv_stem.weight"])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(source(x).logits, loaded(x).logits)


def test_weights_with_other_head_load_all_but_head(tmp_path):
    torch.manual_seed(3)
    imagenet = timm.create_model("mobilenetv3_small_100", pretrained=False)  # 1000-class head
    state = imagenet.state_dict()
    path = tmp_path / "checkpoint.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)

    torch.manual_seed(4)
    model = create_model("mobilenetv3_small_100", pretrained=path)
    got = model.backbone.state_dict()
    body = [k for k in state if not k.startswith("classifier.")]
    assert len(body) == len(state) - 2
    assert all(torch.equal(state[k], got[k]) for k in body)
    assert state["classifier.weight"].shape == (1000, 1024)
    assert got["classifier.weight"].shape == (1, 1024)


def test_weights_missing_a_body_key_fail(tmp_path):
    state = create_model("mobilenetv3_small_100").state_dict()
    del state["backbone.conv_stem.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(RuntimeError, match="conv_stem.weight"):
        create_model("mobilenetv3_small_100", pretrained=path)


def test_a_dfdc_checkpoint_serves_as_pretrained_weights(tiny_checkpoint):
    from dfdc.models.checkpoint import load

    want = load(tiny_checkpoint).weights
    got = create_model("resnet18", input_size=32, pretrained=tiny_checkpoint).state_dict()
    assert all(torch.equal(got[k], v) for k, v in want.items())
