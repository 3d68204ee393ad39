"""CLIP detectors: only what is meant to train trains, the tower stays deterministic, weights load offline."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import timm
import timm.models._builder
import torch
from timm.data import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from timm.layers import LayerNorm
from timm.models.vision_transformer import VisionTransformer

from dfdc.data.batch import Batch
from dfdc.models import WeightsError, create_model
from dfdc.models.foundation import ClipDetector
from dfdc.models.registry import loss_names
from dfdc.train.step import forward_loss

TINY_DEPTH = 4
TINY_WIDTH = 192
HEAD = {"head.weight", "head.bias"}
TINY_NORMS = ({f"backbone.{n}.{p}" for n in ("norm_pre", "norm") for p in ("weight", "bias")}
              | {f"backbone.blocks.{i}.{n}.{p}" for i in range(TINY_DEPTH) for n in ("norm1", "norm2")
                 for p in ("weight", "bias")})


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def vit_l14() -> ClipDetector:
    """The GenD row at 224, from random init (300M parameters: built once)."""
    torch.manual_seed(0)
    return create_model("clip_vit_l14_ln", input_size=224)


def clip_tower(img_size: int, num_classes: int = 0) -> VisionTransformer:
    """timm's CLIP image tower (vit_base_patch16_clip_quickgelu_224's arguments) at the tiny rows' size."""
    return VisionTransformer(img_size=img_size, patch_size=16, embed_dim=TINY_WIDTH, depth=TINY_DEPTH, num_heads=3,
                             pre_norm=True, act_layer="quick_gelu", norm_layer=partial(LayerNorm, eps=1e-5),
                             num_classes=num_classes)


def trainable(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def group_names(model: torch.nn.Module, groups: list[dict]) -> dict[str, set[str]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {g["name"]: {names[id(p)] for p in g["params"]} for g in groups}


@pytest.mark.parametrize("name, expected", [("clip_vit_tiny_ln", TINY_NORMS | HEAD), ("clip_vit_tiny_probe", HEAD)])
def test_only_the_tuned_parameters_train(name, expected):
    model = create_model(name, input_size=64)
    norms = {f"backbone.{m}.{p}" for m, mod in model.backbone.named_modules() if isinstance(mod, torch.nn.LayerNorm)
             for p, _ in mod.named_parameters(recurse=False)}
    assert norms == TINY_NORMS
    assert trainable(model) == expected
    groups = model.param_groups(lr=1e-3, weight_decay=0.05, backbone_lr_scale=0.1)
    assert sum(len(g["params"]) for g in groups) == len(expected)
    by_name = {g["name"]: g for g in groups}
    assert group_names(model, groups) == {"head": HEAD, **({"backbone": TINY_NORMS} if expected != HEAD else {})}
    assert by_name["head"]["lr"] == 1e-3 and by_name["head"]["weight_decay"] == 0.05
    if "backbone" in by_name:
        assert by_name["backbone"]["lr"] == pytest.approx(1e-4) and by_name["backbone"]["weight_decay"] == 0.0


def test_backbone_lr_scale_zero_turns_ln_into_the_probe():
    model = create_model("clip_vit_tiny_ln", input_size=64)
    groups = model.param_groups(lr=1e-3, weight_decay=0.05, backbone_lr_scale=0.0)
    assert group_names(model, groups) == {"head": HEAD}
    assert trainable(model) == HEAD


def _batch(size: int) -> Batch:
    gen = torch.Generator().manual_seed(7)
    x = torch.randint(0, 256, (4, size, size, 3), dtype=torch.uint8, generator=gen)
    return Batch(x=x, y=torch.tensor([0.0, 1.0, 0.0, 1.0]), idx=torch.arange(4))


@pytest.mark.parametrize("name", ["clip_vit_tiny_ln", "clip_vit_tiny_probe", "clip_vit_tiny_effort",
                                  "clip_vit_tiny_gend"])
def test_a_training_step_changes_only_what_trains(name):
    torch.manual_seed(1)
    model = create_model(name, input_size=64, drop_rate=0.2).train()
    meant = trainable(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.param_groups(lr=1e-2, weight_decay=0.05), lr=1e-2)
    loss, terms = forward_loss(model, _batch(64), [], np.random.default_rng(0), torch.device("cpu"))
    assert torch.isfinite(loss) and "bce" in terms
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    after = model.state_dict()
    assert after.keys() == before.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == meant
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_the_tower_is_deterministic_in_train_mode():
    torch.manual_seed(2)
    model = create_model("clip_vit_tiny_probe", input_size=64, drop_rate=0.5).train()
    assert model.training and model.drop.training
    assert not any(m.training for m in model.backbone.modules())
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.features(x), model.features(x))
        logits = [model(x).logits for _ in range(4)]
    assert not all(torch.equal(logits[0], z) for z in logits[1:])  # the head's dropout does act
    model.eval().train()
    assert not model.backbone.training and model.drop.training
    quiet = create_model("clip_vit_tiny_ln", input_size=64).train()
    with torch.no_grad():
        assert torch.equal(quiet(x).logits, quiet(x).logits)


def test_stochastic_depth_is_refused():
    with pytest.raises(ValueError, match="drop_path_rate must be 0"):
        create_model("clip_vit_tiny_ln", drop_path_rate=0.1)


@pytest.mark.parametrize("size, tower", [(64, 64), (224, 224), (72, 80)])
def test_tiny_input_sizes(size, tower):
    model = create_model("clip_vit_tiny_ln", input_size=size).eval()
    assert model.spec.size == size and model.backbone.patch_embed.img_size == (tower, tower)
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.logits.shape == (2,) and torch.isfinite(out.logits).all()


def test_vit_l14_at_64_pads_to_its_patch_grid():
    with torch.device("meta"):
        model = create_model("clip_vit_l14_probe", input_size=64)
    assert model.spec.size == 64 and model.backbone.patch_embed.img_size == (70, 70)
    assert model.backbone.pos_embed.shape == (1, 1 + 5 * 5, 1024)


def test_vit_l14_builds_at_224_with_the_clip_spec(vit_l14):
    spec = vit_l14.spec
    assert spec.input == "frame" and spec.size == 224 and spec.head == ("head",)
    assert spec.mean == OPENAI_CLIP_MEAN and spec.std == OPENAI_CLIP_STD
    assert vit_l14.backbone.patch_embed.patch_size == (14, 14) and vit_l14.backbone.pos_embed.shape == (1, 257, 1024)
    assert vit_l14.head.in_features == 1024
    assert sum(p.numel() for p in vit_l14.parameters()) == 303_180_801
    assert sum(p.numel() for p in vit_l14.parameters() if p.requires_grad) == 102_400 + 1_025  # 50 LayerNorms, head
    with torch.no_grad():
        out = vit_l14.eval()(torch.randn(1, 3, 224, 224))
    assert out.logits.shape == (1,) and torch.isfinite(out.logits).all()


@pytest.mark.parametrize("name, total, trains", [
    ("clip_vit_l14_probe", 303_180_801, 1_025),
    ("clip_vit_b16_ln", 85_800_193, 39_936 + 769),
    ("clip_vit_b16_probe", 85_800_193, 769),
])
def test_trainable_parameter_counts(name, total, trains):
    with torch.device("meta"):
        model = create_model(name, input_size=224)
    assert sum(p.numel() for p in model.parameters()) == total
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trains
    groups = model.param_groups(lr=1e-3, weight_decay=0.0)
    assert sum(p.numel() for g in groups for p in g["params"]) == trains


def test_tiny_counts():
    counts = {n: sum(p.numel() for p in create_model(n, input_size=64).parameters() if p.requires_grad)
              for n in ("clip_vit_tiny_ln", "clip_vit_tiny_probe")}
    assert counts == {"clip_vit_tiny_ln": (2 + 2 * TINY_DEPTH) * 2 * TINY_WIDTH + TINY_WIDTH + 1,
                      "clip_vit_tiny_probe": TINY_WIDTH + 1}


@pytest.fixture()
def offline_hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache, HF_HUB_OFFLINE set, and timm's weight loading refused."""
    import huggingface_hub.constants as hf

    def refuse(*args, **kwargs):
        raise AssertionError("timm was asked to load pretrained weights")

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(timm.models._builder, "load_pretrained", refuse)
    return tmp_path


@pytest.mark.parametrize("name, hf_id", [("clip_vit_l14_ln", "timm/vit_large_patch14_clip_224.openai"),
                                         ("clip_vit_b16_probe", "timm/vit_base_patch16_clip_224.openai")])
def test_hub_weights_offline_fail_naming_the_model(offline_hub, name, hf_id):
    with pytest.raises(WeightsError) as e:
        create_model(name, pretrained="hub")
    msg = str(e.value)
    assert msg.startswith(f"{name}: pretrained: hub needs timm's weights {hf_id}")
    assert "HF_HUB_OFFLINE is set" in msg and "local weights file" in msg


@pytest.mark.parametrize("name", ["clip_vit_tiny_ln", "clip_vit_tiny_probe", "clip_vit_tiny_effort",
                                  "clip_vit_tiny_gend"])
def test_tiny_rows_have_no_published_weights(offline_hub, name):
    with pytest.raises(WeightsError, match=f"^{name}: no weights are published.*local weights file"):
        create_model(name, pretrained="hub")


def test_hub_weights_load_from_the_hugging_face_cache(tmp_path, monkeypatch):
    """timm's published layout (512-d projection head, 224 grid) in the cache loads offline at input 64."""
    import huggingface_hub.constants as hf
    from safetensors.torch import save_file

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(3)
    published = timm.create_model("vit_base_patch16_clip_quickgelu_224.openai", pretrained=False)
    assert published.head.weight.shape == (512, 768)
    commit = "0" * 40
    repo = tmp_path / "hf" / "models--timm--vit_base_patch16_clip_224.openai"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    save_file(published.state_dict(), str(repo / "snapshots" / commit / "model.safetensors"))
    model = create_model("clip_vit_b16_ln", input_size=64, pretrained="hub")
    want, got = published.state_dict(), model.backbone.state_dict()
    assert got.keys() == {k for k in want if not k.startswith("head.")}
    assert all(torch.equal(want[k], got[k]) for k in got if k != "pos_embed")
    assert got["pos_embed"].shape == (1, 1 + 4 * 4, 768)
    assert trainable(model) == {f"backbone.{k}" for k in got if "norm" in k} | HEAD


def test_a_local_timm_tower_file_loads(tmp_path):
    torch.manual_seed(4)
    tower = clip_tower(64, num_classes=8).eval()  # its own head is not this model's
    path = tmp_path / "tower.pth"
    torch.save(tower.state_dict(), path)
    torch.manual_seed(5)
    fresh = create_model("clip_vit_tiny_ln", input_size=64)
    torch.manual_seed(5)
    model = create_model("clip_vit_tiny_ln", input_size=64, pretrained=path).eval()
    want, got = tower.state_dict(), model.backbone.state_dict()
    assert got.keys() == {k for k in want if not k.startswith("head.")}
    assert all(torch.equal(want[k], got[k]) for k in got)
    assert torch.equal(model.head.weight, fresh.head.weight)  # the head stays at its initialisation
    assert trainable(model) == TINY_NORMS | HEAD
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.features(x), tower.forward_head(tower.forward_features(x), pre_logits=True))


def test_a_224_tower_file_loads_at_64_with_its_position_embedding_resampled(tmp_path):
    torch.manual_seed(6)
    tower = clip_tower(224)
    path = tmp_path / "tower224.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in tower.state_dict().items()}}, path)
    model = create_model("clip_vit_tiny_probe", input_size=64, pretrained=path)
    want, got = tower.state_dict(), model.backbone.state_dict()
    assert got["pos_embed"].shape == (1, 17, TINY_WIDTH) and want["pos_embed"].shape == (1, 197, TINY_WIDTH)
    assert torch.equal(got["pos_embed"][:, 0], want["pos_embed"][:, 0])  # the class token's entry is kept
    assert all(torch.equal(want[k], got[k]) for k in got if k != "pos_embed")


def _openai_layout(state: dict[str, torch.Tensor], projection: int) -> dict[str, torch.Tensor]:
    """A timm CLIP tower's tensors under OpenAI CLIP's names, with a text-tower key beside them."""
    swaps = [("patch_embed.proj", "conv1"), ("norm_pre", "ln_pre"), ("blocks.", "transformer.resblocks."),
             ("norm1", "ln_1"), ("norm2", "ln_2"), ("attn.qkv.", "attn.in_proj_"), ("attn.proj", "attn.out_proj"),
             ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")]
    out = {"token_embedding.weight": torch.zeros(10, 8), "visual.proj": torch.randn(TINY_WIDTH, projection)}
    for k, v in state.items():
        if k == "cls_token":
            out["visual.class_embedding"] = v.flatten()
            continue
        if k == "pos_embed":
            out["visual.positional_embedding"] = v[0]
            continue
        if k.startswith("norm."):
            k = "ln_post." + k.removeprefix("norm.")
        for a, b in swaps:
            k = k.replace(a, b)
        out["visual." + k] = v
    return out


def test_an_openai_clip_file_loads_through_timms_conversion(tmp_path):
    torch.manual_seed(7)
    tower = clip_tower(64)
    path = tmp_path / "openai.pt"
    torch.save(_openai_layout(tower.state_dict(), projection=64), path)
    model = create_model("clip_vit_tiny_ln", input_size=64, pretrained=path)
    want, got = tower.state_dict(), model.backbone.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(want[k], got[k]) for k in want)


def test_a_detector_checkpoint_round_trips(tmp_path):
    torch.manual_seed(8)
    source = create_model("clip_vit_tiny_ln", input_size=64)
    path = tmp_path / "detector.pth"
    torch.save(source.state_dict(), path)
    model = create_model("clip_vit_tiny_ln", input_size=64, pretrained=path)
    want, got = source.state_dict(), model.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(want[k], got[k]) for k in want)


def test_a_file_missing_a_tower_tensor_fails(tmp_path):
    state = clip_tower(64).state_dict()
    del state["blocks.1.norm1.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(RuntimeError, match="blocks.1.norm1.weight"):
        create_model("clip_vit_tiny_ln", input_size=64, pretrained=path)


def test_effort_at_init_is_the_frozen_tower_and_only_residuals_and_head_train():
    from dfdc.models.svd_residual import decomposed_state

    torch.manual_seed(9)
    model = create_model("clip_vit_tiny_effort", input_size=64).eval()
    reference = create_model("clip_vit_tiny_probe", input_size=64).eval()
    # the same tower weights in both: the probe's tower is the plain one Effort decomposed
    plain = {k.removeprefix("backbone."): v for k, v in reference.state_dict().items() if k.startswith("backbone.")}
    model.backbone.load_state_dict(decomposed_state(plain, model.backbone))
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.features(x), reference.features(x), atol=1e-4)
    residual = {f"backbone.blocks.{i}.attn.{n}.{f}" for i in range(TINY_DEPTH) for n in ("qkv", "proj")
                for f in ("u", "s", "v")}
    assert trainable(model) == residual | HEAD
    assert group_names(model, model.param_groups(lr=1e-3, weight_decay=0.05)) == {"backbone": residual, "head": HEAD}
    model.train()
    model.set_losses({"orthogonality": 1.0, "singular_values": 0.1})
    loss, terms = forward_loss(model, _batch(64), [], np.random.default_rng(0), torch.device("cpu"))
    assert set(terms) == {"bce", "orthogonality", "singular_values"}
    assert terms["orthogonality"] < 1e-4 and terms["singular_values"] < 1e-3  # zero at init
    loss.backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert got <= residual | HEAD and HEAD <= got and got & residual


def test_effort_trains_about_0_2m_parameters_on_vit_l14():
    with torch.device("meta"):
        model = create_model("clip_vit_l14_effort", input_size=224)
    trains = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trains == 24 * 4 * (2 * 1024 + 1) + 1_025  # q, k, v and out of 24 blocks: 196,704 (+ the head)


def test_effort_losses_are_switches_named_in_the_entry():
    from dfdc.config.base import ParamsError, from_dict
    from dfdc.config.train import TrainParams
    from dfdc.models.registry import loss_names

    assert loss_names("clip_vit_tiny_effort") == ("orthogonality", "singular_values", "uniformity", "alignment")
    assert loss_names("clip_vit_tiny_ln") == ("uniformity", "alignment") and loss_names("clip_vit_tiny_probe") == ()
    model = create_model("clip_vit_tiny_effort", input_size=64)
    assert model.loss_weights == {} and model.loss_terms(model(torch.zeros(1, 3, 64, 64)), None) == {}
    entry = {"arch": "clip_vit_tiny_ln", "inputs": "crops", "losses": {"orthogonality": 1.0}}
    with pytest.raises(ParamsError, match=r"p.yaml: train\.models\.c\.losses\.orthogonality: clip_vit_tiny_ln has "
                                          "no such loss term"):
        from_dict(TrainParams, {"models": {"c": entry}}, prefix="train", file="p.yaml")
    entry = {"arch": "clip_vit_tiny_effort", "inputs": "crops", "losses": {"orthogonality": -1.0}}
    with pytest.raises(ParamsError, match="must be finite and >= 0"):
        from_dict(TrainParams, {"models": {"c": entry}}, prefix="train", file="p.yaml")


def test_an_effort_checkpoint_and_a_plain_tower_file_load(tmp_path):
    torch.manual_seed(10)
    tower = clip_tower(64).eval()
    path = tmp_path / "tower.pth"
    torch.save(tower.state_dict(), path)
    model = create_model("clip_vit_tiny_effort", input_size=64, pretrained=path).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.features(x), tower.forward_head(tower.forward_features(x), pre_logits=True),
                              atol=1e-4)
    saved = tmp_path / "detector.pth"
    torch.save(model.state_dict(), saved)
    again = create_model("clip_vit_tiny_effort", input_size=64, pretrained=saved)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())


def test_gend_feature_losses_train_the_layernorms():
    torch.manual_seed(11)
    model = create_model("clip_vit_tiny_ln", input_size=64).train()
    model.set_losses({"uniformity": 0.5, "alignment": 0.1})
    loss, terms = forward_loss(model, _batch(64), [], np.random.default_rng(0), torch.device("cpu"))
    assert set(terms) == {"bce", "uniformity", "alignment"} and terms["uniformity"] < 0 <= terms["alignment"]
    model.zero_grad()
    total = sum(v for k, v in model.loss_terms(model(torch.randn(4, 3, 64, 64)), _batch(64)).items())
    total.backward()  # the feature losses alone reach the tower's LayerNorms and not the head
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters()
               if p.requires_grad and not n.startswith("head"))
    assert model.head.weight.grad is None


def test_gend_head_reads_the_normalised_class_token():
    """GenD as released: LayerNorm tuning, the head on the L2-normalised feature; the ln row reads it raw."""
    torch.manual_seed(4)
    gend = create_model("clip_vit_tiny_gend", input_size=64).eval()
    ln = create_model("clip_vit_tiny_ln", input_size=64).eval()
    ln.load_state_dict(gend.state_dict())
    assert trainable(gend) == trainable(ln) and loss_names("clip_vit_tiny_gend") == ("uniformity", "alignment")
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        out = gend(x)
        z = torch.nn.functional.normalize(out.aux["features"], dim=-1)
        assert torch.allclose(out.logits, gend.head(z).squeeze(-1), atol=1e-6)
        assert torch.allclose(ln(x).logits, ln.head(out.aux["features"]).squeeze(-1), atol=1e-5)
        scaled = gend.head(2 * z).squeeze(-1)
    assert not torch.allclose(scaled, out.logits)  # so the logit does not grow with the feature's norm
