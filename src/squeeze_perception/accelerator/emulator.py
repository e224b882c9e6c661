"""The Synetgy emulator: runs a compiled program in integer arithmetic (numpy) and reports the
latency, throughput and energy the cost model (hardware.py) gives for that batch.

Integer semantics: activation codes and weights are integers; a 1x1 convolution is an integer
matrix product. It is evaluated with a float BLAS product that is exact because every partial
sum is an integer below 2**24 in float32 (checked per layer from its accumulator bound; float64,
exact below 2**53, otherwise), then held as int64. ActQuant is the threshold table of the
compiler; max-pool, shift, up-sampling, concatenation, slicing and the circular shuffle move
integers. The only float steps are the host's: input normalisation + quantization before the
network, and the classifier's dequantization acc * a + b after it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .compiler import Op, Program, compile_model
from .hardware import HWConfig, Timing, op_costs


def _conv(op: Op, x: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    wt = op.params["w"]
    dtype = np.float32 if op.params["bound"] < 2 ** 24 else np.float64
    acc = np.matmul(wt.astype(dtype), x.reshape(n, c, h * w).astype(dtype))
    acc = acc.astype(np.int64)  # exact integers (see module doc)
    if not op.params["act"]:
        a, b = op.params["a"], op.params["b"]
        return (acc.astype(np.float32) * a[None, :, None] + b[None, :, None]).reshape(n, -1, h, w)
    sign, T = op.params["sign"], op.params["T"]
    sacc = acc * sign[None, :, None]
    codes = np.zeros(acc.shape, np.int64)
    for j in range(T.shape[1]):
        codes += sacc >= T[None, :, j, None]
    return codes.reshape(n, -1, h, w)


def _shift(x: np.ndarray, d: int) -> np.ndarray:
    g = x.shape[1] // 5
    out = np.zeros_like(x)
    out[:, 4 * g:] = x[:, 4 * g:]
    if g:
        out[:, 0:g, :-d, :] = x[:, 0:g, d:, :]
        out[:, g:2 * g, d:, :] = x[:, g:2 * g, :-d, :]
        out[:, 2 * g:3 * g, :, :-d] = x[:, 2 * g:3 * g, :, d:]
        out[:, 3 * g:4 * g, :, d:] = x[:, 3 * g:4 * g, :, :-d]
    return out


def _pool(x: np.ndarray, k: tuple[int, int]) -> np.ndarray:
    n, c, h, w = x.shape
    ky, kx = k
    x = x[:, :, :h // ky * ky, :w // kx * kx]
    return x.reshape(n, c, h // ky, ky, w // kx, kx).max(axis=(3, 5))


def run_program(program: Program, x: np.ndarray, keep: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Execute `program` on the body input x (N, C, H, W) float32. Returns the output and, with
    keep=True, every op's integer (or, for the classifier, float) result by op name."""
    values: dict[str, np.ndarray] = {}
    last_use = {}
    for i, op in enumerate(program.ops):
        for name in op.inputs:
            last_use[name] = i
    for i, op in enumerate(program.ops):
        args = [values[n] for n in op.inputs]
        k = op.kind
        if k == "input":
            out = np.ascontiguousarray(x, dtype=np.float32)
        elif k == "quant_in":
            p = op.params
            out = np.clip(np.rint(args[0] / p["unit"]), -p["qmax"], p["qmax"]).astype(np.int64)
        elif k == "conv":
            out = _conv(op, args[0])
        elif k == "shift":
            out = _shift(args[0], op.params["dilation"])
        elif k == "pool":
            out = _pool(args[0], op.params["kernel"])
        elif k == "upsample":
            fy, fx = op.params["factor"]
            out = np.repeat(np.repeat(args[0], fy, axis=2), fx, axis=3)
        elif k == "concat":
            out = np.concatenate(args, axis=1)
        elif k == "slice":
            out = args[0][op.params["index"]]
        elif k == "shuffle":
            out = np.roll(args[0], args[0].shape[1] // 4, axis=1)
        elif k == "sumpool":
            out = args[0].sum(axis=(2, 3), keepdims=True)
        elif k == "flatten":
            out = args[0].reshape(args[0].shape[0], -1)
        else:  # pragma: no cover - the compiler only emits the kinds above
            raise ValueError(f"unknown op kind {k}")
        values[op.name] = out
        if not keep:
            for name in op.inputs:
                if last_use.get(name) == i:
                    values.pop(name, None)
    return values[program.output], values


@dataclass
class EmulatorResult:
    output: np.ndarray
    timing: Timing

    @property
    def latency_ms(self) -> float:
        return self.timing.latency_s * 1e3

    @property
    def energy_mj(self) -> float:
        """Energy of the whole batch."""
        return self.timing.energy_j * 1e3


class SynetgyEmulator:
    """One emulated Synetgy board running one compiled model.

    model: a DiracDelta model (`preprocess` + `body`, quantized); input_shape: (C, H, W) of the
    raw input `model.preprocess` takes."""

    def __init__(self, model, input_shape: tuple[int, ...], hw: HWConfig | None = None):
        import torch

        self.model = model.eval()
        self.hw = hw or HWConfig()
        self._pre = getattr(model, "preprocess", None)  # host float code; none: identity
        body_shape = tuple(input_shape)
        if self._pre is not None and hasattr(model, "body"):
            with torch.no_grad():
                body_shape = tuple(self._pre(torch.zeros((1, *input_shape))).shape[1:])
        self.program = compile_model(model, body_shape)
        self._timings: dict[int, Timing] = {}

    def timing(self, batch: int = 1) -> Timing:
        if batch not in self._timings:
            self._timings[batch] = op_costs(self.program, batch, self.hw)
        return self._timings[batch]

    def preprocess(self, x: np.ndarray) -> np.ndarray:
        """The host CPU's float pre-processing (normalisation), the model's own torch code."""
        import torch

        x = np.ascontiguousarray(x, np.float32)
        if self._pre is None:
            return x
        with torch.no_grad():
            return self._pre(torch.from_numpy(x)).numpy()

    def run(self, x: np.ndarray) -> EmulatorResult:
        out, _ = run_program(self.program, self.preprocess(x))
        return EmulatorResult(out, self.timing(len(x)))
