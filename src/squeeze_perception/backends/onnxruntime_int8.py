"""The `onnxruntime-int8` backend: ONNX Runtime over the static int8 graph that
`squeeze-perception offline quantize-int8` writes (models/<name>.int8.onnx). Entry point
`onnxruntime-int8` (setup.py ENTRY_POINTS)."""
from __future__ import annotations

from pathlib import Path

from ..registry import BackendSpec, ModelSpec, register_backend
from .common import (INT8_SOURCE_KEY, QUANTIZE_COMMAND, ModelLoadError, int8_path_for, sha256_file,
                     verify_manifest_checksum)
from .onnxruntime_backend import OnnxRuntimeBackend


class OnnxRuntimeInt8Backend(OnnxRuntimeBackend):
    """ONNX Runtime over the statically quantized graph (models/<name>.int8.onnx: QDQ, per-channel
    int8 weights, uint8 activations, input normalisation and output layers in fp32), made
    offline by `squeeze-perception offline quantize-int8` (offline/quantize.py). Never made on
    the fly: calibration needs the synthetic data set and minutes, so a missing file is refused
    with the command that creates it, and a file quantized from other weights than the
    checkpoint beside it is refused too (it would run stale weights)."""

    # The quantizer keeps some convolutions fp32 on purpose (nodes_to_exclude: --fp32-layers,
    # --fp32-first-conv). ORT's WeightBiasQuantization pass would quantize such a Conv's fp32
    # weights anyway when it sits between a DequantizeLinear and a QuantizeLinear (an fp32 layer
    # inside an int8 stretch), and then fuse it into QLinearConv: measured on a tiny graph, the
    # excluded conv ran int8. Disabling the pass runs the file as it was written; it has no other
    # effect on these graphs (every other Conv already has int8 weights in the file).
    session_config = {"optimization.disable_specified_optimizers": "WeightBiasQuantization"}

    def __init__(self, spec: ModelSpec, weights: str | Path | None = None, num_threads: int = 0,
                 made_from: str | Path | None = None):
        """`weights`: a checkpoint (its int8 graph beside it is run) or an int8 `.onnx` file run as
        it is; `made_from`, with an `.onnx` file: the weights it must have been quantized from (the
        `auto` backend's check of `<graph>.int8.onnx` beside a given fp32 graph)."""
        command = QUANTIZE_COMMAND.format(name=spec.name)
        source: Path | None = None
        if weights and str(weights).endswith(".onnx"):
            path = Path(weights)
            source = Path(made_from) if made_from else None
        else:
            base = Path(weights) if weights else spec.weights_path()
            if base is None:
                raise ModelLoadError(f"model '{spec.name}' has no trained weights registered, so it has no int8 "
                                     "graph")
            source = base
            path = int8_path_for(base)
            if weights:
                command += f" --weights {base}"
        if not path.exists():
            raise ModelLoadError(f"int8 model file '{path}' not found; create it with `{command}` "
                                 "(static quantization calibrated on the synthetic data)")
        verify_manifest_checksum(path)
        self._check_source(path, source, command)
        try:
            super().__init__(spec, weights=path, num_threads=num_threads)
        except ModelLoadError as exc:
            raise ModelLoadError(f"{exc}; re-create it with `{command}`") from exc
        self.weights_path = path

    @staticmethod
    def _check_source(path: Path, source: Path | None, command: str) -> None:
        if source is None or not source.exists():
            return
        try:
            import onnx

            meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"int8 model file '{path}' cannot be read ({exc}); re-create it with "
                                 f"`{command}`") from exc
        made_from = meta.get(INT8_SOURCE_KEY)
        if made_from is not None and made_from != sha256_file(source):
            raise ModelLoadError(
                f"int8 model file '{path}' was quantized from other weights than '{source}' (sha256 "
                f"{made_from[:16]}...); the checkpoint changed since: re-create it with `{command}`")


# Entry point of the squeeze_perception.backends group (setup.py ENTRY_POINTS).
ONNXRUNTIME_INT8 = register_backend(BackendSpec(
    "onnxruntime-int8", "squeeze_perception.backends.onnxruntime_int8:OnnxRuntimeInt8Backend", "cpu",
    "ONNX Runtime, CPU, static int8 (QDQ) graph from `offline quantize-int8`"))
