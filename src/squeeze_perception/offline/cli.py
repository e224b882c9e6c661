"""`squeeze-perception offline dnas | mixed-precision | distill ...`

  offline dnas             FBNet-style search per latency target, sampled nets trained from scratch
  offline mixed-precision  per-layer weight/activation bit-widths (--cost size | flops)
  offline distill          Distill-Net for a few classes (--keep car)
  offline quantize-int8    models/<model>.int8.onnx for the onnxruntime-int8 backend: static QDQ int8,
                           calibrated on synthetic frames (--model squeezedet|squeezesegv2|squeezeseg)

Each takes --tiny (the test-suite size: 16 x 64 toy grids, a 5-layer macro-architecture, a few
epochs) and --data DIR (lidar_2d .npy grids; default toy scenes). Results go to --out as
results.json (and models with manifests); a summary table ends every run. Under
`torchrun --nproc_per_node N -m squeeze_perception.cli offline ...` the training is data-parallel.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from dataclasses import fields
from pathlib import Path

SUBCOMMANDS = ("dnas", "mixed-precision", "distill", "quantize-int8", "card")


def _common(ap: argparse.ArgumentParser, out: str) -> None:
    ap.add_argument("--tiny", action="store_true", help="test-suite size (seconds to minutes on one core)")
    ap.add_argument("--data", default="", help="folder of labelled lidar_2d .npy grids (default: toy scenes)")
    ap.add_argument("--samples", type=int, help="grids to use")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training")
    ap.add_argument("--device", default="cpu", help="torch device for training (cpu, cuda)")
    ap.add_argument("--out", default=out, help="results.json and the models with their manifests")
    ap.add_argument("--no-save", action="store_true", help="do not write model files")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")


def _apply(run, args, mapping: dict[str, str]):
    """Options given on the command line override the run's (or its tiny size's) defaults."""
    if args.tiny:
        run = run.shrink()
    names = {f.name for f in fields(run)}
    for arg, field in mapping.items():
        value = getattr(args, arg, None)
        if value is not None and field in names:
            setattr(run, field, tuple(value) if isinstance(value, list) else value)
    run.tiny, run.data, run.out, run.seed, run.save_models = args.tiny, args.data, args.out, args.seed, not args.no_save
    return run


def _table(title: str, header: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for h in header:
        table.add_column(h)
    for r in rows:
        table.add_row(*r)
    Console().print(table)


def _write(out: str, results: dict) -> Path:
    path = Path(out) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=lambda v: v.item() if hasattr(v, "item") else str(v)))
    return path


def _dnas(argv: list[str], command: str) -> int:
    from .dnas import DnasRun, run_dnas, summary_rows
    from .latency import TARGETS

    ap = argparse.ArgumentParser(prog="squeeze-perception offline dnas", description="FBNet-style DNAS (thesis 8.6)")
    _common(ap, "out/offline/dnas")
    ap.add_argument("--targets", nargs="+", choices=TARGETS, help="latency targets (default onnxruntime synetgy)")
    ap.add_argument("--search-epochs", type=int)
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--train-epochs", type=int)
    ap.add_argument("--archs", type=int, help="architectures sampled per target")
    ap.add_argument("--beta", type=float, help="exponent of the latency term (eq. 8.18)")
    ap.add_argument("--theta-lr", type=float)
    ap.add_argument("--repeats", type=int, help="timing repeats per block")
    ap.add_argument("--tables", help="folder of latency_<target>.json measured before on the target machine "
                                     "(searching on another machine, e.g. a GPU, without re-timing there)")
    ap.add_argument("--no-measure", dest="measure", action="store_false", default=None,
                    help="do not time the trained nets end to end here (this machine is not the target)")
    ap.add_argument("--search-minutes", type=float, help="time budget of each search")
    ap.add_argument("--train-minutes", type=float, help="time budget of each from-scratch training")
    args = ap.parse_args(argv)
    run = _apply(DnasRun(), args, {"targets": "targets", "samples": "samples", "batch_size": "batch_size",
                                   "search_epochs": "search_epochs", "warmup": "warmup",
                                   "train_epochs": "train_epochs", "archs": "archs_per_target", "beta": "beta",
                                   "theta_lr": "theta_lr", "repeats": "repeats", "tables": "tables",
                                   "measure": "measure", "search_minutes": "search_minutes",
                                   "train_minutes": "train_minutes"})
    res = run_dnas(run, show_progress=not args.quiet, command=command)
    from . import ddp

    if ddp.is_main():
        path = _write(args.out, res)
        kind = "lookup table" if run.tiny else "measured"
        _table(f"DNAS: searched architectures, latency ({kind}) on every target [ms]",
               ["searched for", "blocks", "mIoU", "params", "MMACs"] + list(res["targets"]), summary_rows(res))
        print(f"results: {path}")
    return 0


def _mixed_precision(argv: list[str], command: str) -> int:
    from .mixed_precision import MixedPrecisionRun, run_mixed_precision

    ap = argparse.ArgumentParser(prog="squeeze-perception offline mixed-precision",
                                 description="mixed-precision DNAS (thesis 8.4)")
    _common(ap, "out/offline/mixed_precision")
    ap.add_argument("--cost", choices=("size", "flops"), default="size",
                    help="size: eq. 8.13 (weights only, 0-bit blocks allowed); flops: eq. 8.14")
    ap.add_argument("--choices", nargs="+", help="base architecture, one block per layer (default k3_e3)")
    ap.add_argument("--pretrain-epochs", type=int)
    ap.add_argument("--search-epochs", type=int)
    ap.add_argument("--finetune-epochs", type=int)
    ap.add_argument("--archs", type=int)
    ap.add_argument("--gamma", type=float, help="exponent of the cost term (eq. 8.15)")
    ap.add_argument("--pretrain-minutes", type=float, help="time budget of the fp32 training")
    ap.add_argument("--search-minutes", type=float, help="time budget of the search")
    ap.add_argument("--finetune-minutes", type=float, help="time budget of each assignment's fine-tuning")
    args = ap.parse_args(argv)
    run = _apply(MixedPrecisionRun(), args, {"cost": "cost", "choices": "choices", "samples": "samples",
                                             "batch_size": "batch_size", "pretrain_epochs": "pretrain_epochs",
                                             "search_epochs": "search_epochs", "finetune_epochs": "finetune_epochs",
                                             "archs": "archs", "gamma": "gamma",
                                             "pretrain_minutes": "pretrain_minutes",
                                             "search_minutes": "search_minutes",
                                             "finetune_minutes": "finetune_minutes"})
    res = run_mixed_precision(run, show_progress=not args.quiet, command=command)
    from . import ddp

    if ddp.is_main():
        path = _write(args.out, res)
        rows = [["full precision", f"{res['full']['mIoU']:.3f}", "1.0", "w32a32"]]
        for label, a in (("most accurate", res["most_accurate"]), ("most efficient", res["most_efficient"])):
            rows.append([label, f"{a['metrics']['mIoU']:.3f}", f"{a['compression']:.1f}", " ".join(a["bits"])])
        _table(f"Mixed precision ({run.cost}: eq. {'8.13' if run.cost == 'size' else '8.14'}), as Table 8.1",
               ["model", "mIoU", "compression", "bits per conv"], rows)
        print(f"results: {path}")
    return 0


def _distill(argv: list[str], command: str) -> int:
    from .distill import DistillRun, run_distill

    ap = argparse.ArgumentParser(prog="squeeze-perception offline distill", description="Distill-Net (seed 004)")
    _common(ap, "out/offline/distill")
    ap.add_argument("--keep", nargs="+", choices=("car", "pedestrian", "cyclist"), help="classes to keep")
    ap.add_argument("--weights", help="a searched/trained model saved with a manifest (default: train one)")
    ap.add_argument("--threshold", type=float, help="dormant below this fraction of the layer's top activity")
    ap.add_argument("--pretrain-epochs", type=int)
    ap.add_argument("--finetune-epochs", type=int)
    ap.add_argument("--pretrain-minutes", type=float, help="time budget of the all-class training")
    ap.add_argument("--finetune-minutes", type=float, help="time budget of the distilled net's fine-tuning")
    args = ap.parse_args(argv)
    run = _apply(DistillRun(), args, {"keep": "keep", "weights": "weights", "threshold": "threshold",
                                      "samples": "samples", "batch_size": "batch_size",
                                      "pretrain_epochs": "pretrain_epochs", "finetune_epochs": "finetune_epochs",
                                      "pretrain_minutes": "pretrain_minutes",
                                      "finetune_minutes": "finetune_minutes"})
    res = run_distill(run, show_progress=not args.quiet, command=command)
    path = _write(args.out, res)
    kept = ", ".join(run.keep)
    rows = []
    for label, key in (("original", "original"), ("distilled, no fine-tuning", "distilled_before_finetune"),
                       ("distilled + fine-tuned", "distilled")):
        m = res[key]
        rows.append([label, f"{m['mIoU']:.3f}", f"{m['params']:,}", f"{2 * m['macs'] / 1e6:.2f}"])
    _table(f"Distill-Net for {kept}: removed {sum(res['removed_channels'].values())} of "
           f"{sum(res['hidden_channels'].values())} hidden channels", ["model", f"IoU ({kept})", "params", "MFLOPs"],
           rows)
    print(f"results: {path}")
    return 0


def _quantize_int8(argv: list[str], command: str) -> int:
    from ..backends import ModelLoadError
    from ..registry import RegistryError
    from .quantize import CALIB_DIRS, METHODS, QuantOptions, quantize_model, summary_line

    ap = argparse.ArgumentParser(
        prog="squeeze-perception offline quantize-int8",
        description="Static int8 quantization (QDQ, per-channel int8 weights, uint8 activations) of a model's "
                    "ONNX graph, calibrated on synthetic frames only; writes models/<model>.int8.onnx and "
                    "models/<model>.int8.manifest.json (what the onnxruntime-int8 backend loads).")
    ap.add_argument("--model", action="append", required=True,
                    help="registry model (repeatable): squeezedet, squeezesegv2, squeezeseg, ...")
    ap.add_argument("--calib-frames", type=int, default=32, help="synthetic frames, spread evenly over the set")
    ap.add_argument("--calib-dir", default="", help="synthetic calibration folder (default: detection "
                    f"{CALIB_DIRS['detection']}, segmentation {CALIB_DIRS['segmentation']}); never real data")
    ap.add_argument("--weights", default="", help="checkpoint instead of models/<model>.pt (one model)")
    ap.add_argument("--out", default="", help="int8 ONNX file instead of models/<model>.int8.onnx (one model)")
    ap.add_argument("--method", choices=METHODS, default="minmax", help="activation range calibration")
    ap.add_argument("--activations", choices=("uint8", "int8"), default="uint8",
                    help="uint8: the u8 x s8 form MLAS runs natively on x86 (VNNI); int8: symmetric")
    ap.add_argument("--format", choices=("qdq", "qoperator"), default="qdq",
                    help="qdq: QuantizeLinear/DequantizeLinear around fp32 ops, fused by ORT at load; "
                         "qoperator: the int8 operators (QLinearConv, ...) written in the file")
    ap.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor (default per channel)")
    ap.add_argument("--reduce-range", action="store_true", help="7-bit weights, for x86 CPUs without VNNI")
    ap.add_argument("--int8-head-conv", action="store_true",
                    help="quantize the last convolution too (SqueezeDet's ConvDet, SqueezeSeg's conv14: faster, "
                         "its outputs then carry int8 steps into decoding / the CRF); default: kept fp32")
    ap.add_argument("--fp32-first-conv", action="store_true",
                    help="keep the first convolution (on the raw, normalised input) in fp32 too")
    ap.add_argument("--fp32-layers", default="", metavar="NAME[,NAME...]",
                    help="layers kept fp32, by the model's layer names (SqueezeDet: conv1, fire2 ... fire11, "
                         "convdet; a sub-module: fire11/expand3x3) or ONNX node-name prefixes starting with '/'; "
                         "ReLU / Concat fed only by kept layers stay fp32 with them (a sensitivity sweep's knob)")
    ap.add_argument("--equalize-head", type=float, default=0.0, metavar="POWER",
                    help="cross-layer equalization of the head convolution's input channels before calibration, "
                         "s_c = (activation range / weight range) ** POWER (0.25 for squeezedet; 0 = off)")
    ap.add_argument("--integer-head", type=int, default=0, choices=(0, 1, 2), metavar="PARTS",
                    help="run the head convolution (ConvDet) as an int8 GEMM with int32 sums and an fp32 output: "
                         "no 8-bit step on its output; PARTS int8 weight parts (2: 16-bit weights); 0 = fp32")
    ap.add_argument("--head-input-clip", default="max", metavar="max|mse|output|FRACTION",
                    help="range of the head convolution's uint8 input: the calibration maximum (MinMax), the clip "
                         "with the least squared error of the input, or of the head's output against fp32 (on the "
                         "calibration frames), or FRACTION (0-1] of the calibration maximum (chosen on a "
                         "validation split, docs/performance.md)")
    ap.add_argument("--deconv-as-conv", action="store_true",
                    help="rewrite the width-doubling transposed convolutions (SqueezeSeg's decoder; no int8 CPU "
                         "kernel) as a convolution + interleave, so they run in int8")
    ap.add_argument("--pad-narrow-inputs", type=int, default=0, metavar="C",
                    help="pad the uint8 input (and weights) of convolutions with fewer than C input channels to C "
                         "after quantization: the same result, faster int8 kernels (8 for SqueezeSeg's 6-channel "
                         "grid; 0 = off)")
    ap.add_argument("--shared-concat-scale", action="store_true",
                    help="quantize each Concat input with the output's scale, so the int8 concatenation is a copy "
                         "(the narrower branch gets coarser steps; accuracy in docs/performance.md)")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime / torch threads (export, calibration)")
    args = ap.parse_args(argv)
    if args.pad_narrow_inputs < 0:
        ap.error("--pad-narrow-inputs must be >= 0")
    if (args.weights or args.out) and len(args.model) != 1:
        ap.error("--weights and --out apply to exactly one model")
    import torch

    torch.set_num_threads(max(args.threads, 1))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(args.threads, 1)))
    failed = 0
    for name in args.model:
        opts = QuantOptions(per_channel=not args.per_tensor, activation_type=args.activations,
                            quant_format=args.format,
                            method=args.method, reduce_range=args.reduce_range,
                            head_conv_fp32=not args.int8_head_conv, first_conv_fp32=args.fp32_first_conv,
                            fp32_layers=[x.strip() for x in args.fp32_layers.split(",") if x.strip()],
                            equalize_head=args.equalize_head, integer_head=args.integer_head,
                            head_input_clip=args.head_input_clip, deconv_as_conv=args.deconv_as_conv,
                            pad_narrow_inputs=args.pad_narrow_inputs, shared_concat_scale=args.shared_concat_scale)
        try:
            manifest = quantize_model(name, args.calib_frames, weights=args.weights or None, out=args.out or None,
                                      calib_dir=args.calib_dir or None, options=opts, command=command)
        except (RegistryError, ModelLoadError, FileNotFoundError, ValueError, OSError) as exc:
            print(f"quantize-int8: {name}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(summary_line(manifest))
    return 1 if failed else 0


CARD_MARK = "<!-- written from {manifest} by `squeeze-perception offline card` -->"


def _card(argv: list[str], command: str) -> int:
    """`offline card WEIGHTS.pt|MANIFEST.json... [--out-dir DIR] [--latency BACKEND...]`: a Markdown
    model card <name>.md per manifest (offline/manifest.py model_card), beside the manifest unless
    --out-dir. --latency first times the model on those backends here and records the medians in
    its manifest's latency_ms (the weights and their checksum are untouched). A card that was not
    written from a manifest (the hand-written ones in models/) is kept unless --force."""
    import platform
    import time

    from ..backends import MANIFEST_SUFFIX, manifest_path
    from .manifest import measure_latency_ms, model_card, write_manifest

    ap = argparse.ArgumentParser(prog="squeeze-perception offline card", description=_card.__doc__)
    ap.add_argument("models", nargs="+", help="model weights (.pt) or their manifests (.manifest.json)")
    ap.add_argument("--out-dir", default="", help="folder for the cards (default: beside each manifest)")
    ap.add_argument("--force", action="store_true", help="overwrite a card that was not written from a manifest")
    ap.add_argument("--latency", nargs="+", default=[], metavar="BACKEND",
                    help="measure the network call on these backends first and record it in the manifest")
    ap.add_argument("--frames", type=int, default=20, help="timed calls per backend (after 2 warm-up calls)")
    ap.add_argument("--threads", type=int, default=1, help="torch / ONNX Runtime threads while timing")
    args = ap.parse_args(argv)
    failed = 0
    for item in args.models:
        path = Path(item)
        manifest_file = path if path.name.endswith(MANIFEST_SUFFIX) else manifest_path(path)
        try:
            manifest = json.loads(manifest_file.read_text())
            if args.latency:
                measured, refused = measure_latency_ms(manifest_file, args.latency, args.frames,
                                                       num_threads=args.threads)
                for backend, reason in refused.items():
                    print(f"card: {item}: not timed on {backend}: {reason}", file=sys.stderr)
                    failed += 1
                if measured:
                    manifest["latency_ms"] = {**manifest.get("latency_ms", {}), **measured}
                    manifest["latency_measured"] = {
                        "backends": sorted(measured), "frames": args.frames, "threads": args.threads,
                        "input": "batch 1, random raw grid", "host": platform.node(),
                        "cpu": platform.processor() or platform.machine(),
                        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": command}
                    write_manifest(manifest_file.parent / manifest["weights"]["file"], manifest)
            text = model_card(manifest) + "\n" + CARD_MARK.format(manifest=manifest_file.name) + "\n"
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            print(f"card: {item}: no card from '{manifest_file}' ({type(exc).__name__}: {exc})", file=sys.stderr)
            failed += 1
            continue
        out = Path(args.out_dir or manifest_file.parent) / f"{manifest['name']}.md"
        if out.exists() and not args.force and "by `squeeze-perception offline card` -->" not in out.read_text():
            print(f"card: {item}: '{out}' exists and was not written from a manifest; --force replaces it",
                  file=sys.stderr)
            failed += 1
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"{manifest['name']}: {out}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    from .tools import run_tool  # det, seg, synth, track, bench, soak, kitti2bag, render: as top-level commands

    ran = run_tool(list(sys.argv[1:] if argv is None else argv))
    if ran is not None:
        return ran
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUBCOMMANDS:
        print(__doc__.strip(), file=sys.stderr if argv else sys.stdout)
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    if argv[0] == "quantize-int8":  # no training: no torch thread / DDP set-up here
        return _quantize_int8(argv[1:], "squeeze-perception offline " + " ".join(shlex.quote(a) for a in argv))
    if argv[0] == "card":  # reads manifests only
        return _card(argv[1:], "squeeze-perception offline " + " ".join(shlex.quote(a) for a in argv))
    import torch

    from . import ddp

    command = "squeeze-perception offline " + " ".join(shlex.quote(a) for a in argv)
    threads = next((int(argv[i + 1]) for i, a in enumerate(argv[:-1]) if a == "--threads"), 1)
    torch.set_num_threads(max(threads, 1))
    train_device = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--device"), "cpu")
    from .common import set_device

    set_device(train_device)
    ddp.init_from_env()
    sub, rest = argv[0], argv[1:]
    return {"dnas": _dnas, "mixed-precision": _mixed_precision, "distill": _distill}[sub](rest, command)


if __name__ == "__main__":
    raise SystemExit(main())
