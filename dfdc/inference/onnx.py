"""ONNX graphs of the models, run by onnxruntime on the CPU where the scorer runs a torch model.

:func:`export_onnx` traces a model from the normalised input the scorer feeds it to its logits
(dynamic batch). :class:`OnnxNet` stands in for the model inside a
:class:`~dfdc.inference.scorer.ScoringModel`: same spec, called on a tensor, returns ``.logits``,
so :func:`dfdc.inference.scorer.score` runs it unchanged.
"""
from __future__ import annotations

import io
import warnings
from types import SimpleNamespace

import numpy as np
import torch

OPSET = 17


class _Logits(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).logits


def export_onnx(model) -> bytes:
    """The ONNX graph (bytes) of a :class:`~dfdc.models.spec.DeepfakeModel` in eval mode: float input
    (B, 3, S, S) for a frame model or (B, 3, T, S, S) for a clip model, logits (B,) out."""
    spec = model.spec
    shape = (2, 3, spec.size, spec.size) if spec.input == "frame" else (2, 3, spec.clip_len, spec.size, spec.size)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(_Logits(model.eval()), (torch.zeros(shape),), buf, dynamo=False, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=OPSET)
    return buf.getvalue()


class OnnxNet:
    """An ONNX graph behind the interface the scorer uses of a model (``spec``, ``eval``/``train``, ``(x).logits``)."""

    training = False

    def __init__(self, graph: bytes, spec, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3  # warnings and below stay quiet
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.spec = spec

    def eval(self) -> "OnnxNet":
        return self

    def train(self, mode: bool = True) -> "OnnxNet":
        return self

    def __call__(self, x: torch.Tensor) -> SimpleNamespace:
        if x.device.type != "cpu":
            raise ValueError("the ONNX runtime scores on the CPU: pass --device cpu")
        out = self.session.run(None, {"x": np.ascontiguousarray(x.float().numpy())})[0]
        return SimpleNamespace(logits=torch.from_numpy(out.reshape(-1)))
