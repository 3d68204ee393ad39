"""Effort's orthogonal subspace decomposition (Yan et al., ICML 2025) of a ViT's attention projections.

Each projection weight W (per square block of output rows: timm's fused ``qkv`` is three, q, k and v,
each decomposed on its own as Effort decomposes CLIP's separate projections) is split by SVD,
``W = U S Vᵀ``, into a frozen principal part ``U_r S_r V_rᵀ`` (the top ``r = width - rank`` singular
components) and a trainable residual ``u diag(s) v`` (the other ``rank``, 1 in the paper). The layer
computes ``x (W_main + u diag(s) v)ᵀ + b``: at initialisation exactly the pretrained layer, up to float
rounding. Its two optional losses:

* ``orthogonality``: ``½‖JᵤᵀJᵤ - I‖_F + ½‖JᵥJᵥᵀ - I‖_F`` for the joint bases ``Jᵤ = [U_r | u]`` and
  ``Jᵥ = [V_r; v]``. U_r is never stored: for a square block ``U_r`` and the initial ``u₀`` span the
  whole space, so ``‖U_rᵀu‖²`` is ``‖u‖²`` less the squared norm of u projected onto ``u₀`` (and likewise
  for v), and only ``u₀``, ``v₀`` are kept.
* ``singular_values``: ``|‖W_main + u diag(s) v‖²_F - ‖W‖²_F|``, the weight's energy kept.

Both are computed in float64 and are zero at initialisation to float precision.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def decompose(weight: Tensor, blocks: int, rank: int) -> dict[str, Tensor]:
    """Per square block of ``weight``'s rows: the frozen principal part (as one ``(out, in)`` matrix), the
    residual factors ``u (blocks, d, rank)``, ``s (blocks, rank)``, ``v (blocks, rank, d)`` and ``‖W‖²``."""
    out, width = weight.shape
    if out != blocks * width:
        raise ValueError(f"Effort decomposes square blocks: a {out}x{width} weight is not {blocks} of {width}x{width}")
    if not 0 < rank < width:
        raise ValueError(f"residual rank must be in [1, {width - 1}], got {rank}")
    w = weight.detach().double().reshape(blocks, width, width)
    u_full, s_full, vh_full = torch.linalg.svd(w)
    r = width - rank
    main = (u_full[:, :, :r] * s_full[:, None, :r]) @ vh_full[:, :r]
    return {"main": main.reshape(out, width), "u": u_full[:, :, r:], "s": s_full[:, r:], "v": vh_full[:, r:],
            "norm2": (w ** 2).sum(dim=(1, 2))}


class SVDResidualLinear(nn.Module):
    """A linear layer as a frozen principal part plus a trainable low-rank residual (module docstring)."""

    def __init__(self, linear: nn.Linear, blocks: int = 1, rank: int = 1) -> None:
        super().__init__()
        parts = decompose(linear.weight, blocks, rank)
        dtype = linear.weight.dtype
        self.blocks, self.rank = blocks, rank
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("main", parts["main"].to(dtype))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        self.u = nn.Parameter(parts["u"].to(dtype))
        self.s = nn.Parameter(parts["s"].to(dtype))
        self.v = nn.Parameter(parts["v"].to(dtype))
        self.register_buffer("u0", self.u.detach().clone())
        self.register_buffer("v0", self.v.detach().clone())
        self.register_buffer("norm2", parts["norm2"].to(dtype))

    def residual(self) -> Tensor:
        """``u diag(s) v`` per block, as one ``(out, in)`` matrix."""
        return ((self.u * self.s[:, None, :]) @ self.v).reshape(self.out_features, self.in_features)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.main + self.residual(), self.bias)

    def orthogonality(self) -> Tensor:
        """``½‖JᵤᵀJᵤ - I‖_F + ½‖JᵥJᵥᵀ - I‖_F`` summed over the blocks (float64)."""
        u, v, u0, v0 = self.u.double(), self.v.double(), self.u0.double(), self.v0.double()
        eye = torch.eye(self.rank, dtype=torch.float64, device=u.device)
        # ‖[U_r|u]ᵀ[U_r|u] - I‖² = 2‖U_rᵀu‖² + ‖uᵀu - I‖², with ‖U_rᵀu‖² = ‖u‖² - ‖P₀u‖², P₀ the projection
        # onto span(u₀) (through u₀'s own Gram matrix: the stored u₀ is orthonormal only to float32 rounding)
        cross_u = (u ** 2).sum(dim=(1, 2)) - _projected(u0.transpose(1, 2) @ u0, u0.transpose(1, 2) @ u)
        cross_v = (v ** 2).sum(dim=(1, 2)) - _projected(v0 @ v0.transpose(1, 2), v0 @ v.transpose(1, 2))
        gram_u = ((u.transpose(1, 2) @ u - eye) ** 2).sum(dim=(1, 2))
        gram_v = ((v @ v.transpose(1, 2) - eye) ** 2).sum(dim=(1, 2))
        term_u = 2 * cross_u.clamp(min=0) + gram_u
        term_v = 2 * cross_v.clamp(min=0) + gram_v
        return (0.5 * (term_u + 1e-30).sqrt() + 0.5 * (term_v + 1e-30).sqrt()).sum()

    def singular_values(self) -> Tensor:
        """``|‖W_main + u diag(s) v‖² - ‖W‖²|`` summed over the blocks (float64)."""
        w = (self.main.double() + self.residual().double()).reshape(self.blocks, -1, self.in_features)
        return ((w ** 2).sum(dim=(1, 2)) - self.norm2.double()).abs().sum()


def _projected(gram: Tensor, inner: Tensor) -> Tensor:
    """``trace(innerᵀ gram⁻¹ inner)`` per block: the squared norm of a basis projected onto another's span."""
    return (inner * torch.linalg.solve(gram, inner)).sum(dim=(1, 2))


def attention_projections(tower: nn.Module) -> list[tuple[str, nn.Module, str, int]]:
    """(qualified name, parent, attribute, blocks) of every attention projection of a timm ViT: ``qkv``
    (3 blocks: q, k, v) and ``proj`` (1)."""
    out = []
    for i, block in enumerate(getattr(tower, "blocks", [])):
        out.append((f"blocks.{i}.attn.qkv", block.attn, "qkv", 3))
        out.append((f"blocks.{i}.attn.proj", block.attn, "proj", 1))
    if not out:
        raise ValueError("no attention blocks found: Effort decomposes a timm ViT's blocks[i].attn.qkv / .proj")
    return out


def decompose_attention(tower: nn.Module, rank: int = 1) -> list[SVDResidualLinear]:
    """Replace every attention projection of ``tower`` by its :class:`SVDResidualLinear`; returns them."""
    layers = []
    for _, parent, name, blocks in attention_projections(tower):
        layer = SVDResidualLinear(getattr(parent, name), blocks=blocks, rank=rank)
        setattr(parent, name, layer)
        layers.append(layer)
    return layers


def decomposed_state(state: dict[str, Tensor], tower: nn.Module, rank: int = 1) -> dict[str, Tensor]:
    """A plain tower state dict (``...attn.qkv.weight``/``.bias``) with each attention projection decomposed
    into the keys of :class:`SVDResidualLinear`: how published weights load into a decomposed tower."""
    out = dict(state)
    for qualified, parent, name, blocks in attention_projections(tower):
        weight = out.pop(f"{qualified}.weight", None)
        if weight is None:
            continue  # a decomposed state already, or a partial file: the loader names what is missing
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=f"{qualified}.bias" in out)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if linear.bias is not None:
                linear.bias.copy_(out.pop(f"{qualified}.bias"))
        out |= {f"{qualified}.{k}": v for k, v in SVDResidualLinear(linear, blocks, rank).state_dict().items()}
    return out


def trainable_count(tower: nn.Module, rank: int = 1) -> int:
    """The residual parameters :func:`decompose_attention` would train on ``tower`` (no SVD is run)."""
    total = 0
    for _, parent, name, blocks in attention_projections(tower):
        width = getattr(parent, name).in_features
        total += blocks * rank * (2 * width + 1)
    return total
