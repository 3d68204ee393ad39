"""Pretrained weights: the hub path through timm's and torchvision's caches, and its offline failures.

Nothing here downloads: every test either finds the weights in a cache it built,
or shows that an offline machine gets a clear message at once, with the
download functions patched to fail the test if they were reached.
"""
from __future__ import annotations

import socket
import time

import pytest
import timm
import torch

from dfdc.models import WeightsError, create_model
from dfdc.models import weights as weights_mod


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    """Empty Hugging Face and torch.hub caches under tmp_path."""
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    return tmp_path


@pytest.fixture()
def no_network(monkeypatch):
    """Every TCP connection fails at once, as on a machine without network; counts the attempts."""
    tries = []

    def refuse(address, *a, **kw):
        tries.append(address)
        raise OSError(f"no route to {address}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tries



def offline(monkeypatch):
    import huggingface_hub.constants as hf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)


def test_timm_hub_weights_offline_fail_at_once_naming_the_model(hub_cache, no_download, monkeypatch):
    offline(monkeypatch)
    t0 = time.perf_counter()
    with pytest.raises(WeightsError) as e:
        create_model("resnet18", pretrained="hub")
    assert time.perf_counter() - t0 < 5
    msg = str(e.value)
    assert msg.startswith("resnet18: pretrained: hub needs timm's weights timm/resnet18.a1_in1k")
    assert "HF_HUB_OFFLINE is set" in msg and "local weights file" in msg and str(hub_cache / "hf") in msg


def test_timm_hub_weights_without_network_fail_after_one_probe(hub_cache, no_download, no_network):
    with pytest.raises(WeightsError, match="huggingface.co cannot be reached.*local weights file"):
        create_model("resnet18", pretrained="hub")
    assert [host for host, _ in no_network] == ["huggingface.co"]
    with pytest.raises(WeightsError, match="github.com cannot be reached"):  # url-hosted weights (Cadene's Xception)
        create_model("xception", pretrained="hub")


def test_torchvision_weights_offline_messages(hub_cache, no_download, no_network, monkeypatch):
    name = "R3D_18_Weights.KINETICS400_V1"
    with pytest.raises(WeightsError) as e:
        weights_mod.torchvision_weights("r3d_18", name)
    assert f"r3d_18: pretrained: hub needs torchvision's weights {name}" in str(e.value)
    assert "download.pytorch.org cannot be reached" in str(e.value)
    offline(monkeypatch)
    with pytest.raises(WeightsError, match="HF_HUB_OFFLINE is set.*local weights file"):
        weights_mod.torchvision_weights("r3d_18", name)
    with pytest.raises(WeightsError, match="no weights 'R3D_18_Weights.NOPE'"):
        weights_mod.torchvision_weights("r3d_18", "R3D_18_Weights.NOPE")


def test_no_published_weights_is_an_error(hub_cache, no_download):
    with pytest.raises(WeightsError, match="timm publishes no weights for efficientnet_b7"):
        create_model("efficientnet_b7", pretrained="hub")


def test_hub_weights_come_from_the_torch_hub_cache(hub_cache, no_network, monkeypatch):
    """Url-hosted timm weights already in torch.hub's cache load through timm's own path, offline."""
    torch.manual_seed(5)
    published = timm.create_model("legacy_xception", pretrained=False)  # 1000 classes, as published
    cached = hub_cache / "torch" / "checkpoints" / "xception-43020ad28.pth"
    cached.parent.mkdir(parents=True)
    torch.save(published.state_dict(), cached)
    model = create_model("xception", pretrained="hub")
    want = published.state_dict()
    got = model.backbone.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want if not k.startswith("fc."))
    assert got["fc.weight"].shape == (1, 2048)  # the head is new
    assert no_network == []  # the cache answered: no connection was tried


def test_hub_weights_come_from_the_hugging_face_cache(hub_cache, no_network, monkeypatch):
    """HF-hosted timm weights already in the Hugging Face cache load through timm's path, offline."""
    from safetensors.torch import save_file

    offline(monkeypatch)
    torch.manual_seed(6)
    published = timm.create_model("resnet18", pretrained=False)
    commit = "0" * 40
    repo = hub_cache / "hf" / "models--timm--resnet18.a1_in1k"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    save_file(published.state_dict(), str(repo / "snapshots" / commit / "model.safetensors"))
    model = create_model("resnet18", pretrained="hub")
    want, got = published.state_dict(), model.backbone.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want if not k.startswith("fc."))
    assert no_network == []
