"""CRF on the real KITTI lidar_2d grids with the trained squeezesegv2 CRF weights, one core:
the C kernel (segmentation/_crf_native.py), the torch path (SQUEEZE_PERCEPTION_NATIVE_CRF=0)
and the frozen unfold reference (tests/test_segmentation_crf.py), interleaved call by call;
64x512 (first grid) and 64x2048 (the four side by side). Prints CPU ms median and min, the
kernel's memory-traffic bound and the load average; numbers in docs/performance.md.

    nice -n 10 .venv/bin/python bench/crf_real_grid.py          # ~15 s

Memory-traffic bound: the bytes the fused kernel streams if nothing stays in cache, divided by
this core's copy bandwidth (numpy copy of a 256 MiB array, read + write counted, best of 5).
Per frame once: read xyz and mask (4 planes of H x W floats), write the bilateral weights (one
plane per forward window offset and class group, classes with equal theta_r and bilateral
angular kernel sharing one: 7 x 2 for the released constants). Per iteration: read the current
logits (C planes), the weights and the mask, read the logits and write the output:
3C + 7 x 2 + 1 planes (q is written and read back within a few rows, in cache).
"""
import os
import time

import numpy as np
import torch

from squeeze_perception.backends import load_state_dict
from squeeze_perception.offline.segmentation.bench import load_reference_crf
from squeeze_perception.paths import kitti_real_dir
from squeeze_perception.registry import get_model
from squeeze_perception.segmentation import _crf_native
from squeeze_perception.segmentation.crf import RecurrentCRF

torch.set_num_threads(1)


def copy_bandwidth(nbytes: int = 256 << 20, repeats: int = 5) -> float:
    """Bytes per second moved (read + write) by a numpy copy of a large array, best of `repeats`."""
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best


def traffic_bytes(crf: RecurrentCRF, h: int, w: int) -> tuple[int, int]:
    """(bytes per frame once, bytes per iteration) the fused kernel streams, as in the docstring."""
    c = crf.num_classes
    forward = (crf.window[0] * crf.window[1]) // 2
    groups = len({(float(i), tuple(k.tolist())) for i, k in zip(crf.inv_two_theta_r_sq, crf.bilateral_angular)})
    plane = 4 * h * w
    return (4 + forward * groups) * plane, (3 * c + forward * groups + 1) * plane


def timed(fn, env_native: bool) -> tuple[float, torch.Tensor]:
    if env_native:
        os.environ.pop(_crf_native.ENV_SWITCH, None)
    else:
        os.environ[_crf_native.ENV_SWITCH] = "0"
    c0 = time.process_time()
    out = fn()
    return (time.process_time() - c0) * 1e3, out


def main() -> None:
    assert _crf_native.load() is not None, _crf_native.load_error()
    grids = [np.load(f).astype(np.float32).transpose(2, 0, 1)
             for f in sorted((kitti_real_dir() / "lidar_2d").glob("*.npy"))]
    state = load_state_dict(get_model("squeezesegv2").weights_path())
    crf = RecurrentCRF()
    crf.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("crf.")})
    crf.eval()
    ref_cls = load_reference_crf()
    ref = ref_cls(crf.num_classes)
    ref.load_state_dict(crf.state_dict())
    ref.eval()
    bandwidth = copy_bandwidth()
    print(f"copy bandwidth of this core: {bandwidth / 1e9:.1f} GB/s (numpy copy of 256 MiB, read + write)")
    print(f"load average before: {os.getloadavg()}")
    g = torch.Generator().manual_seed(0)
    for name, x, repeats in (("64x512", grids[0][None, :5], 40), ("64x2048", np.concatenate(grids, -1)[None, :5], 15)):
        x = torch.from_numpy(np.ascontiguousarray(x))
        xyz, mask = x[:, :3], (x[:, 4:5] > 0).float()
        logits = 2.0 * torch.randn(1, 4, *x.shape[2:], generator=g)
        impls = {"native": (lambda: crf(logits, xyz, mask), True),
                 "torch": (lambda: crf(logits, xyz, mask), False),
                 "unfold reference": (lambda: ref(logits, xyz, mask), False)}
        cpu: dict[str, list[float]] = {k: [] for k in impls}
        outs = {}
        with torch.inference_mode():
            for k, (fn, nat) in impls.items():
                outs[k] = timed(fn, nat)[1]  # warm-up (and the kernel's first-use compile)
            for _ in range(repeats):
                for k, (fn, nat) in impls.items():
                    if k == "unfold reference" and len(cpu[k]) >= 8:
                        continue  # slow and only for scale: 8 calls are enough
                    cpu[k].append(timed(fn, nat)[0])
        os.environ.pop(_crf_native.ENV_SWITCH, None)
        once, per_iter = traffic_bytes(crf, *x.shape[2:])
        bound_ms = (once + crf.iterations * per_iter) / bandwidth * 1e3
        print(f"\n{name}: CPU ms per call, one thread ({repeats} interleaved calls; reference 8)")
        for k in impls:
            a = np.asarray(cpu[k])
            print(f"  {k:17s} median {np.median(a):8.2f}  min {a.min():8.2f}")
        nat = np.asarray(cpu["native"])
        print(f"  torch / native (median) {np.median(cpu['torch']) / np.median(nat):.1f}x, "
              f"reference / native {np.median(cpu['unfold reference']) / np.median(nat):.1f}x")
        print(f"  max |native - torch| {float((outs['native'] - outs['torch']).abs().max()):.2e}, "
              f"max |native - reference| {float((outs['native'] - outs['unfold reference']).abs().max()):.2e}, "
              f"same labels {bool(torch.equal(outs['native'].argmax(1), outs['torch'].argmax(1)))}")
        print(f"  memory-traffic bound: {once / 1e6:.2f} MB once + {crf.iterations} x {per_iter / 1e6:.2f} MB "
              f"= {bound_ms:.2f} ms at the copy bandwidth; native median / bound = {np.median(nat) / bound_ms:.2f}, "
              f"min / bound = {nat.min() / bound_ms:.2f}")
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
