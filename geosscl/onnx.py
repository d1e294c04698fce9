"""ONNX export of a geosscl model, and running ONNX models in the prediction engine.

The exported graph takes normalised bands ``B×C×H×W`` (H, W multiples of 32) and
returns class probabilities ``B×K×H×W``. Its metadata holds the geosscl header (key
``geosscl``, the same JSON as the model file) and the keys the QGIS plugin Deepness
reads, so the file also runs there.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict

import numpy as np
import torch
from torch import Tensor, nn

from .errors import GeossclError
from .modelfile import FORMAT, ModelInfo, checked, load_model
from .output import atomic_output, check_suffix


class _WithSoftmax(nn.Module):
    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.network(x), dim=1)


def deepness_metadata(info: ModelInfo) -> dict[str, str]:
    """Deepness's keys: it scales 8-bit pixels to 0..1 before standardising, hence the /255."""
    gsd_cm = 100 * float(np.sqrt(info.res[0] * info.res[1]))
    return {
        "model_type": "Segmentor",
        "class_names": json.dumps({str(i): n for i, n in enumerate(info.class_names)}),
        "resolution": f"{gsd_cm:g}",
        "tile_size": str(info.tile_size),
        "tiles_size": str(info.tile_size),
        "tiles_overlap": str(round(100 * info.tile_overlap / info.tile_size)),
        "standardization_mean": json.dumps([m / 255 for m in info.band_mean]),
        "standardization_std": json.dumps([s / 255 for s in info.band_std]),
    }


def export_onnx(model: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False, opset: int = 17) -> str:
    """Write ``model`` (a geosscl model file) as ONNX with its metadata; return the output path."""
    import onnx

    check_suffix(out, (".onnx",), "the export is ONNX")
    network, info = load_model(model)
    example = torch.zeros(1, info.in_channels, info.tile_size, info.tile_size)
    with atomic_output(out, overwrite, [model]) as tmp:
        # The TorchScript exporter writes one self-contained file (the dynamo exporter
        # puts weights beside it), which is what other tools expect to be handed.
        torch.onnx.export(
            _WithSoftmax(network).eval(), (example,), tmp, dynamo=False, opset_version=opset,
            input_names=["input"], output_names=["probabilities"],
            dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"},
                          "probabilities": {0: "batch", 2: "height", 3: "width"}},
        )
        graph = onnx.load(tmp)
        metadata = {"geosscl": json.dumps({"format": FORMAT, **asdict(info)}), **deepness_metadata(info)}
        del graph.metadata_props[:]
        for key, value in metadata.items():
            graph.metadata_props.add(key=key, value=value)
        onnx.save(graph, tmp)
    return os.fspath(out)


def read_onnx_info(path: str | os.PathLike) -> ModelInfo:
    """The geosscl metadata of an exported ONNX file (the graph is parsed, nothing runs)."""
    import onnx

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise GeossclError(f"{path}: no such model file")
    try:
        graph = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf raises its own DecodeError types
        raise GeossclError(f"{path}: not an ONNX model ({str(exc).splitlines()[0][:100]})") from None
    header = {p.key: p.value for p in graph.metadata_props}.get("geosscl")
    if header is None:
        raise GeossclError(f"{path}: an ONNX model, but not exported by geosscl (no geosscl metadata)")
    data = json.loads(header)
    if data.pop("format", None) != FORMAT:
        raise GeossclError(f"{path}: model format is not {FORMAT}")
    return checked(ModelInfo(**data), path)


class OnnxNetwork(nn.Module):
    """An exported model run by onnxruntime, usable wherever the engine takes a network.

    The graph returns probabilities; :meth:`forward` returns their logarithm, so the
    engine's softmax gives them back unchanged.
    """

    def __init__(self, path: str | os.PathLike, device: str = "cpu") -> None:
        super().__init__()
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(os.fspath(path), providers=providers)

    def forward(self, x: Tensor) -> Tensor:
        (probabilities,) = self.session.run(None, {"input": x.detach().cpu().numpy().astype(np.float32)})
        return torch.from_numpy(probabilities).to(x.device).clamp_min(1e-30).log()


def load_onnx(path: str | os.PathLike, device: str = "cpu") -> tuple[OnnxNetwork, ModelInfo]:
    """``(network, info)`` of an exported ONNX model."""
    info = read_onnx_info(path)
    return OnnxNetwork(path, device), info
