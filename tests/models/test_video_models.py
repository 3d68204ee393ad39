"""Video model families: 3D CNNs, the inflated I3D, NTech's temporal EfficientNet, frame backbone + LSTM."""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from dfdc.models import WeightsError, create_model, list_models
from dfdc.models.video3d import (
    I3D_TIME,
    TimePaddedConv3d,
    i3d_from_googlenet,
    inflate_2d,
    inflate_weight,
)

DEFAULTS = {  # name: (clip_len, frame_stride)
    "r3d_18": (16, 1), "mc3_18": (16, 1), "r2plus1d_18": (16, 1), "s3d": (16, 1), "r3d_mini": (8, 1), "i3d": (16, 1),
    "ntech_efficientnet_b0": (7, 2), "ntech_tf_efficientnet_b7_ns": (7, 2),
    "lstm_resnet18": (5, 1), "lstm_regnetx_002": (5, 1), "lstm_efficientnet_b0": (5, 1),
    "lstm_tf_efficientnet_b7_ns": (5, 1), "lstm_mobilenetv3_small_100": (5, 1), "lstm_efficientnet_b6": (5, 1),
}
KINETICS = ((0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989))


pytestmark = pytest.mark.usefixtures("one_thread")


def still_clip(frame: torch.Tensor, frames: int) -> torch.Tensor:
    """``(B, 3, H, W)`` -> ``(B, 3, T, H, W)``: the frame repeated ``frames`` times."""
    return frame.unsqueeze(2).repeat(1, 1, frames, 1, 1)


def close(got: torch.Tensor, want: torch.Tensor, rel: float = 1e-4) -> bool:
    return bool((got - want).abs().max() <= rel * want.abs().max().clamp_min(1e-6))


def randomise_norms(net: nn.Module, calibrate: tuple[int, ...] | None = None) -> None:
    """Give every batch norm non-trivial affine weights and statistics (so copying them is tested).

    With ``calibrate`` (an input shape) the statistics are those of random inputs of that shape, which keeps
    the activations of a random-init network alive; otherwise they are random.
    """
    g = torch.Generator().manual_seed(11)
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    with torch.no_grad():
        for m in norms:
            m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        if calibrate is not None:
            was = net.training
            for m in norms:
                m.reset_running_stats()
                m.momentum = None  # a cumulative average over the calibration batches
            net.train()
            for _ in range(2):
                net(torch.randn(calibrate, generator=g))
            net.train(was)


def perturb(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def test_clip_models_are_registered_with_their_defaults():
    names = set(list_models())
    assert set(DEFAULTS) <= names
    for name, (clip_len, stride) in DEFAULTS.items():
        if "b7" in name:
            continue  # the large variants' defaults are those of their b0 rows (checked in the sweep's spec)
        spec = create_model(name, input_size=64).spec
        assert spec.input == "clip" and (spec.clip_len, spec.frame_stride) == (clip_len, stride), name


def test_clip_len_and_stride_reach_the_spec():
    spec = create_model("r3d_mini", input_size=64, clip_len=12, frame_stride=3).spec
    assert (spec.clip_len, spec.frame_stride, spec.size) == (12, 3, 64)
    assert create_model("lstm_regnetx_002", clip_len=9).spec.clip_len == 9
    assert create_model("lstm_regnetx_002", frame_stride=4).spec.frame_stride == 4


@pytest.mark.parametrize("kw", [{"clip_len": 8}, {"frame_stride": 2}])
def test_a_frame_model_given_a_clip_length_refuses(kw):
    with pytest.raises(ValueError, match="resnet18 eats single crops"):
        create_model("resnet18", **kw)


def test_clips_shorter_than_the_time_stride_refused():
    with pytest.raises(ValueError, match="s3d needs clips of at least 5 frames"):
        create_model("s3d", clip_len=4)
    with pytest.raises(ValueError, match="i3d needs clips of at least 3 frames"):
        create_model("i3d", clip_len=2)
    with pytest.raises(ValueError, match="clip_len"):
        create_model("r3d_mini", clip_len=0)


def test_kinetics_specs_and_heads():
    spec = create_model("r3d_18", input_size=112).spec
    assert (spec.mean, spec.std, spec.head) == (*KINETICS, ("backbone.fc",))
    assert create_model("s3d").spec.head == ("backbone.classifier",)
    assert create_model("i3d").spec.mean == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="r3d_18 has no stochastic depth"):
        create_model("r3d_18", drop_path_rate=0.1)


def test_drop_rate_is_dropout_before_the_classifier():
    model = create_model("r3d_mini", input_size=32, clip_len=4, drop_rate=0.5)
    x = torch.randn(2, 3, 4, 32, 32)
    model.eval()
    with torch.no_grad():
        a, b = model(x).logits, model(x).logits
    assert torch.equal(a, b)
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        model.backbone.fc.weight.fill_(1.0)
        outs = {tuple(model(x).logits.tolist()) for _ in range(3)}
    assert len(outs) == 3
    assert create_model("s3d", drop_rate=0.3).backbone.classifier[0].p == 0.3


@pytest.mark.parametrize("name", ["r3d_18", "s3d"])
def test_a_torchvision_kinetics_state_dict_loads_all_but_the_classifier(tmp_path, name):
    torch.manual_seed(0)
    kinetics = getattr(torchvision.models.video, name)(weights=None, num_classes=400)
    state = kinetics.state_dict()
    path = tmp_path / f"{name}_kinetics.pth"
    torch.save(state, path)
    head = "fc" if name == "r3d_18" else "classifier.1"

    torch.manual_seed(1)
    fresh = create_model(name)
    torch.manual_seed(1)
    model = create_model(name, pretrained=path)
    got = model.state_dict()
    body = [k for k in state if not k.startswith(head + ".")]
    assert len(body) == len(state) - 2 and all(torch.equal(got["backbone." + k], state[k]) for k in body)
    assert state[f"{head}.weight"].shape[0] == 400
    assert got[f"backbone.{head}.weight"].shape[0] == 1
    assert torch.equal(got[f"backbone.{head}.weight"], fresh.state_dict()[f"backbone.{head}.weight"])


@pytest.mark.parametrize("name", ["r3d_18", "i3d"])
def test_offline_hub_fails_naming_the_model(monkeypatch, tmp_path, name):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty torch.hub cache
    with pytest.raises(WeightsError, match=f"{name}: pretrained: hub needs torchvision's weights"):
        create_model(name, pretrained="hub")


def test_r3d_mini_has_no_published_weights():
    with pytest.raises(WeightsError, match="r3d_mini: no published weights"):
        create_model("r3d_mini", pretrained="hub")


def test_r3d_mini_is_a_narrow_r3d():
    from torchvision.models.video.resnet import BasicBlock, Conv3DSimple

    net = create_model("r3d_mini").backbone
    widths = [getattr(net, f"layer{i}")[0].conv2[1].num_features for i in range(1, 5)]
    assert widths == [16, 32, 64, 128] and all(len(getattr(net, f"layer{i}")) == 1 for i in range(1, 5))
    assert isinstance(net.layer2[0], BasicBlock) and isinstance(net.layer2[0].conv1[0], Conv3DSimple)
    assert net.stem[0].kernel_size == (3, 7, 7)


def googlenet_2d(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = torchvision.models.googlenet(weights=None, aux_logits=False, transform_input=False, init_weights=True,
                                       num_classes=1)
    nn.init.normal_(net.fc.weight, std=1.0)  # an fc that reads the features (its init is nearly constant)
    randomise_norms(net, calibrate=(4, 3, 64, 64))
    return net.eval()


def test_i3d_on_a_still_clip_equals_its_2d_parent():
    net2d = googlenet_2d()
    model = i3d_from_googlenet(net2d, create_model("i3d", input_size=64, clip_len=8).spec).eval()
    frame = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = net2d(frame).squeeze(-1)
        assert not close(want[0], want[1], rel=1e-2)  # the logits depend on the input
        for frames in (3, 8):
            assert close(model(still_clip(frame, frames)).logits, want), frames
        moving = model(torch.randn(2, 3, 8, 64, 64)).logits
        assert not close(moving, want, rel=1e-2)
        net64, frame64 = net2d.double(), frame.double()
        model64 = i3d_from_googlenet(net64, model.spec).eval()
        assert model64.backbone.conv1.bn.running_var.dtype == torch.float64
        assert close(model64(still_clip(frame64, 5)).logits, net64(frame64).squeeze(-1), rel=1e-9)  # exact
    assert isinstance(net2d.conv1.conv, nn.Conv2d)  # the parent is left 2D


def test_i3d_inflation_follows_the_paper():
    net = create_model("i3d").backbone
    stem = net.conv1.conv
    assert isinstance(stem, TimePaddedConv3d) and stem.kernel_size == (7, 7, 7) and stem.stride == (2, 2, 2)
    assert stem.padding == (0, 3, 3) and stem.time_pad == (3, 3)
    assert net.conv2.conv.kernel_size == (1, 1, 1) and net.conv3.conv.kernel_size == (3, 3, 3)
    assert net.inception4a.branch2[1].conv.kernel_size == (3, 3, 3)
    assert net.inception4a.branch1.conv.kernel_size == (1, 1, 1)
    assert (net.maxpool1.kernel_size, net.maxpool1.stride) == ((1, 3, 3), (1, 2, 2))
    assert (net.maxpool2.kernel_size, net.maxpool2.stride) == ((1, 3, 3), (1, 2, 2))
    assert (net.maxpool3.kernel_size, net.maxpool3.stride) == ((3, 3, 3), (2, 2, 2))
    assert (net.maxpool4.kernel_size, net.maxpool4.stride) == ((2, 2, 2), (2, 2, 2))
    assert isinstance(net.inception3a.branch4[0], nn.MaxPool3d) and isinstance(net.conv1.bn, nn.BatchNorm3d)
    assert not any(isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d)) for m in net.modules())


def test_inflate_2d_copies_weights_and_stats():
    net2d = googlenet_2d(3)
    net3d = inflate_2d(net2d, time=I3D_TIME)
    w2, w3 = net2d.conv3.conv.weight, net3d.conv3.conv.weight
    assert w3.shape == (*w2.shape[:2], 3, *w2.shape[2:])
    assert torch.allclose(w3.sum(2), w2, atol=1e-6) and torch.equal(w3[:, :, 0], w3[:, :, 2])
    bn2, bn3 = net2d.inception5b.branch3[1].bn, net3d.inception5b.branch3[1].bn
    for key in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(getattr(bn2, key), getattr(bn3, key))
    assert bn3.eps == bn2.eps == 1e-3
    assert torch.equal(inflate_weight(torch.ones(1, 1, 1, 1), 4), torch.full((1, 1, 4, 1, 1), 0.25))


def test_time_padding_repeats_edge_frames():
    conv = inflate_2d(nn.Conv2d(1, 1, 3, padding=1, bias=False))
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 1, 1] = 1.0  # picks the previous frame
    x = torch.arange(1.0, 5.0).view(1, 1, 4, 1, 1).expand(1, 1, 4, 3, 3).contiguous()
    assert conv(x)[0, 0, :, 1, 1].tolist() == [1.0, 1.0, 2.0, 3.0]


def test_inflate_2d_refuses_layers_it_cannot_translate():
    from timm.layers import Conv2dSame

    with pytest.raises(TypeError, match="Conv2dSame"):
        inflate_2d(nn.Sequential(Conv2dSame(3, 4, 3)))
    with pytest.raises(TypeError, match="LayerNorm2d"):
        inflate_2d(nn.Sequential(timm.layers.LayerNorm2d(4)))


def test_a_2d_googlenet_file_is_inflated_on_load(tmp_path):
    net2d = googlenet_2d(5)
    torch.manual_seed(6)
    imagenet = torchvision.models.googlenet(weights=None, aux_logits=True, transform_input=False, init_weights=True)
    state = {**imagenet.state_dict(), **{k: v for k, v in net2d.state_dict().items() if not k.startswith("fc.")}}
    path = tmp_path / "googlenet.pth"
    torch.save(state, path)
    model = create_model("i3d", input_size=64, pretrained=path).eval()
    with torch.no_grad():
        model.backbone.fc.load_state_dict(net2d.fc.state_dict())
        frame = torch.randn(2, 3, 64, 64)
        assert close(model(still_clip(frame, 4)).logits, net2d(frame).squeeze(-1))


# pytorch-i3d's names of a few tensors and their shapes (piergiaj/pytorch-i3d, pytorch_i3d.py)
PYTORCH_I3D = {"Conv3d_1a_7x7.conv3d.weight": (64, 3, 7, 7, 7), "Conv3d_2c_3x3.bn.running_var": (192,),
               "Mixed_3b.b3b.conv3d.weight": (32, 192, 1, 1, 1), "Mixed_4f.b2b.conv3d.weight": (128, 32, 3, 3, 3),
               "Mixed_5c.b1b.conv3d.weight": (384, 192, 3, 3, 3), "Mixed_5c.b0.bn.bias": (384,)}


def to_pytorch_i3d(key: str) -> str:
    blocks = {"conv1": "Conv3d_1a_7x7", "conv2": "Conv3d_2b_1x1", "conv3": "Conv3d_2c_3x3",
              "inception3a": "Mixed_3b", "inception3b": "Mixed_3c", "inception4a": "Mixed_4b",
              "inception4b": "Mixed_4c", "inception4c": "Mixed_4d", "inception4d": "Mixed_4e",
              "inception4e": "Mixed_4f", "inception5a": "Mixed_5b", "inception5b": "Mixed_5c"}
    branches = {"branch1": "b0", "branch2.0": "b1a", "branch2.1": "b1b", "branch3.0": "b2a", "branch3.1": "b2b",
                "branch4.1": "b3b"}
    block, _, rest = key.removeprefix("backbone.").partition(".")
    for ours, theirs in branches.items():
        if rest.startswith(ours + "."):
            rest = theirs + rest[len(ours):]
    return f"{blocks[block]}.{rest.replace('conv.', 'conv3d.')}"


def test_a_pytorch_i3d_file_loads(tmp_path):
    torch.manual_seed(7)
    source = create_model("i3d", input_size=64)
    randomise_norms(source)
    state = {to_pytorch_i3d(k): v for k, v in source.state_dict().items()
             if not k.startswith("backbone.fc.") and not k.endswith("num_batches_tracked")}
    state["logits.conv3d.weight"] = torch.randn(400, 1024, 1, 1, 1)
    state["logits.conv3d.bias"] = torch.zeros(400)
    for key, shape in PYTORCH_I3D.items():
        assert tuple(state[key].shape) == shape, key
    path = tmp_path / "rgb_imagenet.pt"
    torch.save(state, path)
    loaded = create_model("i3d", input_size=64, pretrained=path)
    got, want = loaded.state_dict(), source.state_dict()
    body = [k for k in want if not k.startswith("backbone.fc.") and not k.endswith("num_batches_tracked")]
    assert all(torch.equal(got[k], want[k]) for k in body)


def test_ntech_on_a_still_clip_equals_the_2d_model_before_and_after_perturbing():
    torch.manual_seed(0)
    frame_model = create_model("efficientnet_b0", input_size=64)
    randomise_norms(frame_model, calibrate=(4, 3, 64, 64))
    frame_model.eval()
    torch.manual_seed(1)
    seq = create_model("ntech_efficientnet_b0", input_size=64)
    frame = torch.randn(2, 3, 64, 64)
    before = None
    for seed in (None, 3):
        if seed is not None:
            perturb(frame_model, seed)
        n = seq.load_backbone(frame_model.state_dict(), "efficientnet_b0")
        assert n == sum(1 for k in frame_model.state_dict() if not k.startswith("backbone.classifier."))
        seq.backbone.classifier.load_state_dict(frame_model.backbone.classifier.state_dict())
        seq.eval()
        with torch.no_grad():
            want = frame_model(frame).logits
            got = seq(still_clip(frame, 7)).logits
        assert close(got, want)
        if before is not None:
            assert not close(want, before, rel=1e-2)  # the perturbation changed the 2D model
        before = want


def test_ntech_temporal_convs_start_at_zero_and_mix_frames():
    torch.manual_seed(0)
    seq = create_model("ntech_efficientnet_b0", input_size=32).eval()
    n_blocks = sum(len(stage) for stage in seq.backbone.blocks)
    assert len(seq.temporal) == n_blocks
    assert all(t.conv.kernel_size == (3, 1, 1) and t.conv.groups == 1 for t in seq.temporal)
    assert all(not t.conv.weight.any() for t in seq.temporal)
    clip = torch.randn(1, 3, 7, 32, 32)
    with torch.no_grad():
        nn.init.normal_(seq.backbone.classifier.weight, std=1.0)
        frames = clip[0].transpose(0, 1)  # (T, 3, H, W)
        per_frame = seq.backbone(frames).squeeze(-1)
        assert not close(per_frame[0], per_frame[1], rel=1e-2)
        assert close(seq(clip).logits, per_frame.mean(0, keepdim=True))  # at init: the frames' mean logit
        for t in seq.temporal:
            t.conv.weight.normal_(0, 0.05)
        assert not close(seq(clip).logits, per_frame.mean(0, keepdim=True), rel=1e-2)


def test_ntech_takes_2d_files_and_its_own_checkpoints(tmp_path):
    torch.manual_seed(0)
    timm_state = timm.create_model("efficientnet_b0", num_classes=1000).state_dict()
    path = tmp_path / "imagenet.pth"
    torch.save(timm_state, path)
    seq = create_model("ntech_efficientnet_b0", pretrained=path)
    got = seq.state_dict()
    assert all(torch.equal(got["backbone." + k], v) for k, v in timm_state.items() if not k.startswith("classifier."))
    assert all(not t.conv.weight.any() for t in seq.temporal)

    with torch.no_grad():
        for t in seq.temporal:
            t.conv.weight.normal_()
    other = create_model("ntech_efficientnet_b0")
    assert other.load_backbone(seq.state_dict(), "ntech") == sum(1 for k in got if not k.startswith("backbone.cl"))
    assert all(torch.equal(a.conv.weight, b.conv.weight) for a, b in zip(other.temporal, seq.temporal))
    partial = {k: v for k, v in seq.state_dict().items() if k != "temporal.0.conv.weight"}
    with pytest.raises(ValueError, match=r"ntech-partial: .*1 missing \['temporal.0.conv.weight'\]"):
        other.load_backbone(partial, "ntech-partial")


def test_lstm_takes_a_frame_models_backbone_and_trains_only_its_head():
    torch.manual_seed(0)
    frame_model = create_model("resnet18", input_size=32)
    randomise_norms(frame_model)
    perturb(frame_model, 1)
    seq = create_model("lstm_resnet18", input_size=32, clip_len=3)
    own_backbone = [k for k in seq.state_dict() if k.startswith("backbone.")]
    assert seq.load_backbone(frame_model.state_dict(), "resnet18") == len(own_backbone)
    want = frame_model.state_dict()
    got = seq.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in own_backbone)
    assert set(want) - set(got) == {"backbone.fc.weight", "backbone.fc.bias"}

    groups = seq.param_groups(lr=0.01, weight_decay=0.0, backbone_lr_scale=0.0)
    assert [g["name"] for g in groups] == ["head"]
    trainable = {n for n, p in seq.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("lstm.", "logit.")) for n in trainable)
    assert {id(p) for p in groups[0]["params"]} == {id(p) for n, p in seq.named_parameters() if n in trainable}

    backbone_before = {k: v.clone() for k, v in seq.state_dict().items() if k.startswith("backbone.")}
    lstm_before = seq.lstm.weight_ih_l0.detach().clone()
    opt = torch.optim.SGD(groups, lr=0.1)
    seq.train()
    out = seq(torch.randn(4, 3, 3, 32, 32))
    F.binary_cross_entropy_with_logits(out.logits, torch.tensor([0.0, 1.0, 0.0, 1.0])).backward()
    opt.step()
    after = seq.state_dict()
    assert all(torch.equal(after[k], v) for k, v in backbone_before.items())  # weights and norm statistics
    assert not torch.equal(seq.lstm.weight_ih_l0, lstm_before)


def test_lstm_head_and_shapes():
    seq = create_model("lstm_regnetx_002", input_size=32)
    assert seq.spec.head == ("lstm", "logit") and seq.lstm.bidirectional and seq.lstm.num_layers == 2
    assert seq.lstm.input_size == seq.backbone.num_features and seq.logit.in_features == 2 * seq.lstm.hidden_size
    with torch.no_grad():
        assert seq.eval()(torch.randn(3, 3, 5, 32, 32)).logits.shape == (3,)


@pytest.mark.parametrize("arch, classifier", [("regnetx_002", "head.fc."), ("resnet18", "fc.")])
def test_lstm_loads_a_timm_file_without_its_classifier(tmp_path, arch, classifier):
    torch.manual_seed(0)
    state = timm.create_model(arch, num_classes=1000).state_dict()
    path = tmp_path / f"{arch}.pth"
    torch.save(state, path)
    torch.manual_seed(1)
    fresh = create_model(f"lstm_{arch}", input_size=32)
    torch.manual_seed(1)
    seq = create_model(f"lstm_{arch}", input_size=32, pretrained=path)
    got = seq.state_dict()
    body = [k for k in state if not k.startswith(classifier)]
    assert len(body) == len(state) - 2 and all(torch.equal(got["backbone." + k], state[k]) for k in body)
    head = [k for k in got if k.startswith(("lstm.", "logit."))]
    assert head and all(torch.equal(got[k], fresh.state_dict()[k]) for k in head)


def test_hub_weights_replace_the_kinetics_classifier(monkeypatch):
    from dfdc.models import video3d

    torch.manual_seed(0)
    kinetics = torchvision.models.video.r3d_18(weights=None, num_classes=400).state_dict()
    asked = []

    def published(model, weights):
        asked.append((model, weights))
        return kinetics

    monkeypatch.setattr(video3d, "torchvision_weights", published)
    got = create_model("r3d_18", pretrained="hub").state_dict()
    assert asked == [("r3d_18", "R3D_18_Weights.KINETICS400_V1")]
    assert all(torch.equal(got["backbone." + k], v) for k, v in kinetics.items() if not k.startswith("fc."))
    assert got["backbone.fc.weight"].shape == (1, 512)


def test_i3d_hub_inflates_the_imagenet_googlenet(monkeypatch):
    from dfdc.models import video3d

    net2d = googlenet_2d(8)
    torch.manual_seed(9)
    imagenet = torchvision.models.googlenet(weights=None, aux_logits=True, transform_input=False, init_weights=True)
    state = {**imagenet.state_dict(), **{k: v for k, v in net2d.state_dict().items() if not k.startswith("fc.")}}
    monkeypatch.setattr(video3d, "torchvision_weights", lambda model, weights: state)
    model = create_model("i3d", input_size=64, pretrained="hub").eval()
    with torch.no_grad():
        model.backbone.fc.load_state_dict(net2d.fc.state_dict())
        frame = torch.randn(2, 3, 64, 64)
        assert close(model(still_clip(frame, 4)).logits, net2d(frame).squeeze(-1))
