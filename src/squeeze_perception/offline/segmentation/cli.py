"""`squeeze-perception seg train|adapt|eval|bench ...` (see docs/segmentation.md)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ...kitti.pointwise import EVAL_IGNORE_BAND_M
from ...paths import kitti_real_dir, models_dir, project_root

DEFAULT_SYNTH = "data/synth"
DEFAULT_REAL_GRIDS = "out/seg/real_unlabelled_grids.npy"
THESIS_REFERENCE_62 = {  # Table 6.2, car / pedestrian IoU, GTA-LiDAR -> KITTI
    "squeezeseg": "30.0 / 2.1 (SQSG on GTA-LiDAR)",
    "squeezesegv2_lir": "42.0 / 16.7 (+LIR)",
    "squeezesegv2_gca": "48.2 / 18.2 (+LIR+GCA)",
    "squeezesegv2_da": "50.3 / 18.6 (+PDC); 57.4 / 23.5 with +CAM",
}


def _train(args) -> int:
    from ..training import config_from_args
    from .train import SegTrainConfig, train

    if not (args.name or args.out):
        raise SystemExit("seg train: name the weights with --name NAME (models/NAME.pt) or --out FILE")
    cfg = config_from_args(SegTrainConfig, args, out=args.out or str(models_dir() / f"{args.name}.pt"),
                           crf=not args.no_crf)
    train(cfg)
    return 0


def _train_bench(args) -> int:
    import json

    from .bench import format_train_throughput, train_throughput

    r = train_throughput(args.arch, args.batch_size, args.width, args.repeats, args.threads,
                         crf=not args.no_crf, progress=lambda msg: print(msg, flush=True))
    print(format_train_throughput(r))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(r, indent=2) + "\n")
    return 0


def _adapt(args) -> int:
    if args.step == "grids":
        from ...segmentation.data import real_adaptation_grids

        grids = real_adaptation_grids(Path(args.kitti_root) if args.kitti_root else kitti_real_dir())
        out = project_root() / args.grids
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, grids)
        print(f"saved {len(grids)} unlabelled real grids to {out}")
    elif args.step == "render":
        from .train import train_renderer

        train_renderer(args.name or "squeezeseg_intensity", np.load(project_root() / args.grids), steps=args.steps,
                       minutes=args.minutes, threads=args.threads, init=args.init, crop_width=args.crop_width,
                       batch_size=args.batch_size)
    else:
        from .adapt import calibrate_weights

        calibrate_weights(args.source, args.name or "squeezesegv2_da", np.load(project_root() / args.grids))
    return 0


# real_object: the labelled real object frames together, 000000-000002 (object/, full scans) and 000134
# (object_reduced/, the camera-view scan); real_object_reduced: 000134 alone (the earlier tables).
STANDARD_DATASETS = ("synth_lidar_2d", "synth_object", "real_lidar_2d", "real_object", "real_object_reduced")


def _eval(args) -> int:
    if args.instances:  # instance P/R vs 3D boxes on the real object frames only (instance_eval.py)
        from .instance_eval import run_instance_eval

        return run_instance_eval(args)
    import torch

    from ...segmentation.data import list_grids
    from ...segmentation.pipeline import SegmentationPipeline
    from .evaluation import (SegCounts, counts_to_json, evaluate_grids, evaluate_object_frames,
                             evaluate_semantic_kitti, json_safe, logit_adjusted_pipeline, logit_adjustment,
                             model_meta, real_object_sources, training_class_weights)
    from .train import load_renderer

    torch.set_num_threads(max(args.threads, 1))
    synth = project_root() / args.synth
    real = Path(args.kitti_root) if args.kitti_root else kitti_real_dir()
    wanted = set(args.datasets.split(",")) if args.datasets else \
        set(STANDARD_DATASETS) | ({"semantic_kitti"} if args.semantic_kitti else set())
    unknown = wanted - set(STANDARD_DATASETS) - {"semantic_kitti"}
    if unknown:
        raise SystemExit(f"unknown data set(s) {', '.join(sorted(unknown))}; "
                         f"choose from {', '.join(STANDARD_DATASETS)}, semantic_kitti")
    if "semantic_kitti" in wanted and not args.semantic_kitti:
        raise SystemExit("data set semantic_kitti needs --semantic-kitti DIR")
    sequences = args.semantic_kitti_sequences.split(",") if args.semantic_kitti_sequences else None
    results: dict = {}
    for name in args.models.split(","):
        weights = models_dir() / f"{name}.pt"
        meta = model_meta(weights)
        renderer_path = (meta.get("config") or {}).get("renderer") or ""
        renderer = load_renderer(project_root() / renderer_path) if renderer_path else None
        for crf in ((True, False) if name == "squeezeseg" and args.crf_ablation else (True,)):
            key = name if crf else f"{name} w/o CRF"
            if args.perturb_intensity:  # a row of its own: never mistaken for (or merged into) the plain one
                key += f" [object-frame intensity {args.perturb_intensity}]"
            if args.logit_adjust:
                weights = training_class_weights(meta, models_dir())
                if weights is None:
                    raise SystemExit(f"--logit-adjust: {name} was trained without --class-weights: nothing to undo")
                key += f" [logit adjustment tau {args.logit_adjust:g}]"
                pl = logit_adjusted_pipeline(logit_adjustment(weights, args.logit_adjust), name, backend=args.backend,
                                             fov="front", crf=crf, num_threads=args.threads)
            else:
                pl = SegmentationPipeline(name, backend=args.backend, fov="front", crf=crf, num_threads=args.threads)
            res, grounded = {}, {}  # grounded: the lidar_2d sets after the pipeline's ground stage
            ground_on = bool(getattr(pl, "ground_removal", False))
            test_grids = synth / "lidar_2d" / "test"
            if "synth_lidar_2d" in wanted and test_grids.exists():
                ground = SegCounts()
                res["synth_lidar_2d"] = counts_to_json(
                    evaluate_grids(pl, list_grids(test_grids)[: args.max_grids], renderer=renderer,
                                   with_ground=ground if ground_on else None))
                if ground_on:
                    grounded["synth_lidar_2d"] = counts_to_json(ground)
            obj = synth / "object" / "testing"
            if "synth_object" in wanted and (obj / "velodyne").exists():
                res["synth_object"] = counts_to_json(evaluate_object_frames(pl, obj, max_frames=args.max_frames,
                                                                           intensity=args.perturb_intensity))
            if "real_lidar_2d" in wanted:
                ground = SegCounts()
                res["real_lidar_2d"] = counts_to_json(evaluate_grids(pl, list_grids(real / "lidar_2d"),
                                                                     with_ground=ground if ground_on else None))
                if ground_on:
                    grounded["real_lidar_2d"] = counts_to_json(ground)
            if "real_object" in wanted:
                both = SegCounts()
                for root, folder in real_object_sources(real):
                    evaluate_object_frames(pl, root, folder, counts=both, ignore_band=args.ignore_band,
                                           intensity=args.perturb_intensity)
                res["real_object"] = counts_to_json(both)
            if "real_object_reduced" in wanted:
                res["real_object_reduced"] = counts_to_json(
                    evaluate_object_frames(pl, real / "object_reduced" / "training", "velodyne_reduced",
                                           ignore_band=args.ignore_band, intensity=args.perturb_intensity))
            if "semantic_kitti" in wanted:
                full = SegmentationPipeline(name, backend=args.backend, fov="full", crf=crf, num_threads=args.threads)
                views = evaluate_semantic_kitti({"front": pl, "full": full}, args.semantic_kitti, sequences,
                                                args.semantic_kitti_frames)
                res["semantic_kitti_front"] = counts_to_json(views["front"])
                res["semantic_kitti_full"] = counts_to_json(views["full"])
            for ds in ("synth_lidar_2d", "synth_object"):  # which synthetic test set (cards and tables name it)
                if ds in res:
                    res[ds]["data"] = args.synth
                if ds in grounded:
                    grounded[ds]["data"] = args.synth
            results[key] = res
            print(f"{key}: " + ", ".join(f"{k} car IoU {v['class']['IoU'][1]}" for k, v in res.items()))
            if grounded:
                # The object-frame sets run the whole pipeline (ground stage included) already; the
                # lidar_2d sets score network + CRF as the thesis does, and this row what is published.
                results[f"{key} + ground removal"] = grounded
                print(f"{key} + ground removal: " + ", ".join(f"{k} car IoU {v['class']['IoU'][1]}"
                                                              for k, v in grounded.items()))
    out = project_root() / (args.out or "out/seg/eval.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.merge and out.exists():  # keep other models' results (and this model's other data sets) from earlier runs
        earlier = json.loads(out.read_text())
        results = {**earlier, **{k: {**earlier.get(k, {}), **v} for k, v in results.items()}}
    out.write_text(json.dumps(json_safe(results), indent=1, allow_nan=False))
    print(f"wrote {out}")
    print(render_tables(results))
    return 0


def _intensity_sweep(args) -> int:
    """`seg intensity-sweep`: object-frame IoU per class against a gain on every scan's intensity,
    per model, side by side; JSON and a plot."""
    import torch

    from ...segmentation.pipeline import SegmentationPipeline
    from .evaluation import intensity_sweep, json_safe, real_object_sources
    from .plots import plot_intensity_sweep

    torch.set_num_threads(max(args.threads, 1))
    if args.real:  # the real object frames: full scans and the camera-view scan together
        sources = real_object_sources(Path(args.kitti_root) if args.kitti_root else kitti_real_dir())
    else:
        sources = [(project_root() / args.synth / "object" / "testing", "velodyne")]
    gains = [float(g) for g in args.gains.split(",")]
    iou: dict[str, dict[float, list[float]]] = {}
    for name in args.models.split(","):
        pl = SegmentationPipeline(name, backend=args.backend, fov="front", num_threads=args.threads)
        counts = intensity_sweep(pl, sources, gains, max_frames=args.max_frames)
        iou[name] = {g: [float(v) for v in c.class_level()["IoU"]] for g, c in counts.items()}
        for g in gains:
            print(f"{name} x{g:g}: car / pedestrian / cyclist IoU "
                  + " / ".join(f"{100 * iou[name][g][k]:.1f}" for k in (1, 2, 3)), flush=True)
    data = "real object frames" if args.real else f"{args.synth} object scans"
    out = project_root() / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(json_safe({"data": data, "gains": gains, "iou": iou}), indent=1, allow_nan=False))
    print(f"wrote {out}")
    if args.plot:
        print(plot_intensity_sweep(iou, project_root() / args.plot, f"IoU against the intensity gain, {data}"))
    return 0


def render_tables(results: dict) -> str:
    from .evaluation import counts_from_json, table_class_instance, table_confusion, table_iou

    parts = []
    datasets = sorted({d for r in results.values() for d in r})
    for ds in datasets:
        rows = [(k, counts_from_json(r[ds])) for k, r in results.items() if ds in r]
        parts.append(f"### {ds}: class-level and instance-level (Table 4.1 layout; truth = true instances, "
                     "or true points where the data has no instance ids)\n\n" + table_class_instance(rows))
        parts.append(f"### {ds}: IoU per class (Tables 6.1 / 6.2 layout; n/a = no ground truth, left out of the "
                     "average)\n\n" + table_iou(rows, reference=THESIS_REFERENCE_62 if ds.startswith("real") else None))
        confusion = table_confusion(rows)
        if confusion.count("\n") > 1:
            parts.append(f"### {ds}: where each class's true points went (% of its points; row sums 100)\n\n"
                         + confusion)
    return "\n\n".join(parts)


def _bench(args) -> int:
    from .bench import format_bench, run_bench

    from ...backends import ModelLoadError

    runs = []
    for b in args.backends.split(","):
        try:
            runs.append(run_bench(args.model, weights=args.weights, frames=args.frames, fov=args.fov,
                                  threads=args.threads, backend=b))
        except ModelLoadError as exc:  # e.g. no int8 graph made yet: say so, bench the others
            if b != "onnxruntime-int8":
                raise
            print(f"{b} skipped: {exc}")
    for r in runs:
        print(format_bench(r))
    if len(runs) > 1:
        base = runs[0]["stages_ms"]["network"]["mean"]
        print("network time ratio (side by side, same frames): " + ", ".join(
            f"{r['backend']} {r['stages_ms']['network']['mean'] / base:.2f}x" for r in runs))
    if args.out:
        out = project_root() / args.out
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(runs, indent=1))
    return 0


def _plots(args) -> int:
    import torch

    from ...segmentation.data import load_grid, to_input
    from ...segmentation.pipeline import SegmentationPipeline
    from .evaluation import _GridView
    from .losses import render_intensity
    from .plots import plot_intensity, plot_label_maps, plot_training_curves
    from .train import load_renderer

    torch.set_num_threads(max(args.threads, 1))
    real = Path(args.kitti_root) if args.kitti_root else kitti_real_dir()
    img = project_root() / "docs" / "img"
    grid = load_grid(real / "lidar_2d" / args.frame)
    valid = grid[..., 4] > 0
    rows = [("ground truth", grid[..., 5].astype(int))]
    for name in args.models.split(","):
        if not (models_dir() / f"{name}.pt").exists():
            continue
        pl = SegmentationPipeline(name, backend="onnxruntime", num_threads=args.threads)
        batch = pl.network_input([_GridView(grid)])
        rows.append((name, pl.run_crf(pl.run_network(batch), batch)[0].argmax(0)))
    print(plot_label_maps(rows, valid, img / "seg_real_lidar2d.png", f"real KITTI lidar_2d {args.frame}"))
    renderer_path = models_dir() / "squeezeseg_intensity.pt"
    if renderer_path.exists():
        grids = np.load(project_root() / args.grids)
        g = grids[args.scan_index]
        x = torch.from_numpy(to_input(g, 5))[None]
        with torch.no_grad():
            rendered = render_intensity(load_renderer(renderer_path)(x))[0].numpy()
        print(plot_intensity(g[..., 3], rendered, g[..., 4] > 0, img / "seg_intensity.png"))
    from ...kitti.calib import load_object_calib
    from ...kitti.labels import read_labels, read_velodyne_bin
    from .evaluation import KITTI_TYPE_TO_CLASS
    from .plots import plot_top_view

    root = real / "object_reduced" / "training"
    pts = read_velodyne_bin(root / "velodyne_reduced" / "000134.bin")
    calib = load_object_calib(root / "calib" / "000134.txt")
    gt_boxes = [calib.rect_to_velo(lab.corners_rect()[:4])[:, :2]
                for lab in read_labels(root / "label_2" / "000134.txt") if lab.type in KITTI_TYPE_TO_CLASS]
    best = args.models.split(",")[args.topview_model]
    if (models_dir() / f"{best}.pt").exists():
        res = SegmentationPipeline(best, backend="onnxruntime", num_threads=args.threads).process(pts)
        print(plot_top_view(pts, res.labels, res.table, img / "seg_real_topview.png",
                            f"{best} on real KITTI 000134: predicted classes, DBSCAN + LATTE boxes (solid), "
                            "ground truth (dashed)", gt_boxes))
    if args.outcome_models:
        print(_plot_real_outcomes(args.outcome_models.split(","), real, img / "seg_real_outcomes.png", args.threads))
    # The first short runs (out/seg/<name>/) and the CPU runs at scale (out/seg/cpu_*/<name>/); a figure
    # is only redrawn when its logs are here (an empty plot would replace the committed one).
    for pattern, figure in (("*/train.log", "seg_training.png"), ("cpu_*/*/train.log", "seg_training_cpu.png")):
        logs = {p.parent.name: p for p in sorted((project_root() / "out" / "seg").glob(pattern))}
        if logs:
            print(plot_training_curves(logs, img / figure))
        else:
            print(f"no out/seg/{pattern}: docs/img/{figure} left as it is")
    return 0


def _plot_real_outcomes(models: list[str], real: Path, out: Path, threads: int) -> Path:
    """The real object frames with a camera view of their scan (000000-000002 full scans in front of
    camera 2, 000134), each point coloured by outcome as `seg eval` counts it (same labeler, same
    boundary band, same field of view)."""
    from PIL import Image

    from ...kitti.calib import load_object_calib
    from ...kitti.labels import read_labels, read_velodyne_bin
    from ...segmentation.pipeline import SegmentationPipeline
    from .evaluation import label_points
    from .instance_eval import real_object_frames
    from .plots import plot_camera_outcomes

    shown = ("object/000000", "object/000002", "object_reduced/000134")  # 000001: one far car, little to see
    frames = [f for f in real_object_frames(real) if f.name in shown]
    panels = []
    for name in models:
        pl = SegmentationPipeline(name, backend="onnxruntime", fov="front", num_threads=threads)
        rows = []
        for frame in frames:
            pts = read_velodyne_bin(frame.velodyne)
            calib = load_object_calib(frame.calib)
            truth = label_points(pts, read_labels(frame.label), calib, ignore_band=EVAL_IGNORE_BAND_M)
            res = pl.process(pts)
            uv, depth = calib.project_velo(pts)
            image = np.asarray(Image.open(frame.image).convert("RGB"))
            counted = res.fov_mask & ~truth.ignored & (depth > 0)
            # KITTI images are 1224x370 or 1242x375; one panel size for all (a few border pixels lost)
            rows.append((image[:370, :1224], uv, counted, res.labels, truth.classes))
        panels.append((name, rows))
    return plot_camera_outcomes(panels, out)


CARD_PURPOSE = {
    "squeezeseg": "SqueezeSeg (thesis ch. 4): CNN + recurrent CRF, class-weighted cross-entropy.",
    "squeezesegv2": "SqueezeSegV2 (thesis 6.3): batch norm, LiDAR mask channel, focal loss (gamma 2), CAM.",
    "squeezesegv2_big": "SqueezeSegV2 (thesis 6.3) fine-tuned from `squeezesegv2` on 6,000 full-width 64 x 512 "
                        "synthetic scans of the current generator (terrain, 30-80 m geometry, measured dropout, varied "
                        "vehicles), bf16 autocast + channels_last on this 2-core CPU.",
    "squeezesegv2_big_pdc": "`squeezesegv2_big` with progressive domain calibration (Algorithm 2) of every batch-norm "
                            "layer on unlabelled real scans (no LIR, no GCA).",
    "squeezesegv2_furniture": "`squeezesegv2_big` fine-tuned on 8,000 full-width synthetic scans whose streets also "
                              "hold unlabelled furniture (parked bicycles without riders, bins, bollards, cabinets, "
                              "benches, hedges, trailers; offline/synth/street_furniture.py), the clutter real scans "
                              "showed as false cars, pedestrians and cyclists; bf16 + channels_last on this CPU.",
    "squeezesegv2_furniture_pdc": "`squeezesegv2_furniture` with progressive domain calibration (Algorithm 2) of every "
                                  "batch-norm layer on unlabelled real scans (no LIR, no GCA).",
    "squeezesegv2_furniture_isqrt": "`squeezesegv2_furniture` fine-tuned 30 more minutes on the same scans with class "
                                    "loss weights from the inverse square root of the class frequencies (unknown, "
                                    "car, pedestrian, cyclist = 0.29, 1, 4.5, 6.8; the release's 1/15, 1, 10, 10 "
                                    "buy rare-class recall with precision).",
    "squeezesegv2_furniture_isqrt_pdc": "`squeezesegv2_furniture_isqrt` with progressive domain calibration "
                                        "(Algorithm 2) of every batch-norm layer on unlabelled real scans.",
    "squeezesegv2_intensity_isqrt": "`squeezesegv2_furniture_isqrt` fine-tuned 42 minutes (same class weights) on "
                                    "6,000 synthetic scans whose intensity is reported as the real HDL-64E reports "
                                    "it: per-laser gain and zero readings, more zeros and dimmer returns with range "
                                    "(measured on unlabelled real scans, kitti/hdl64e_intensity.py), and one "
                                    "clothing reflectivity per person.",
    "squeezesegv2_intensity_isqrt_pdc": "`squeezesegv2_intensity_isqrt` with progressive domain calibration "
                                        "(Algorithm 2) of every batch-norm layer on unlabelled real scans.",
    "squeezesegv2_gain_isqrt": "`squeezesegv2_intensity_isqrt` fine-tuned 46 more minutes on the same 6,000 scans "
                               "(same class weights, half the learning rate) with one random intensity gain per "
                               "scan, 2**u with u uniform in [-1, 1], clipped to [0, 1] (`--intensity-gain-log2 1`): "
                               "the absolute intensity level depends on the sensor unit, so the class must come "
                               "from shape and contrast.",
    "squeezesegv2_gain_isqrt_pdc": "`squeezesegv2_gain_isqrt` with progressive domain calibration (Algorithm 2) of "
                                   "every batch-norm layer on unlabelled real scans.",
    "squeezesegv2_bnmix_isqrt": "`squeezesegv2_gain_isqrt`'s run (same source, seed, batches and augmentation) with "
                                "2 unlabelled real grids appended to every batch's forward pass "
                                "(`--real-bn-mix 2`): batch norm normalises synthetic and real scans together, "
                                "the loss sees only the synthetic ones.",
    "squeezesegv2_bnmix_isqrt_pdc": "`squeezesegv2_bnmix_isqrt` with progressive domain calibration (Algorithm 2) of "
                                    "every batch-norm layer on unlabelled real scans.",
    "squeezesegv2_bnmix2_isqrt": "`squeezesegv2_bnmix_isqrt` trained 62 minutes more the same way (real grids in "
                                 "every batch's batch norm, same scans, class weights and intensity gain) with "
                                 "another seed's batches and half its starting learning rate.",
    "squeezesegv2_bnmix2_isqrt_pdc": "`squeezesegv2_bnmix2_isqrt` with progressive domain calibration (Algorithm 2) "
                                     "of every batch-norm layer on unlabelled real scans.",
    "squeezesegv2_mix_isqrt": "`squeezesegv2_bnmix2_isqrt` trained 62 minutes more the same way (real grids in "
                              "every batch's batch norm, class weights, intensity gain) on 12,000 scans: the 6,000 "
                              "it had seen and 6,000 new ones of the current generator (another seed; pedestrians "
                              "on the sidewalk), other batches, two thirds of its starting learning rate.",
    "squeezesegv2_mix_isqrt_pdc": "`squeezesegv2_mix_isqrt` with progressive domain calibration (Algorithm 2) "
                                  "of every batch-norm layer on unlabelled real scans.",
    "squeezesegv2_lir": "SqueezeSegV2 + learned intensity rendering (thesis 6.4): trained on synthetic scans whose "
                        "intensity is replaced by the renderer's prediction.",
    "squeezesegv2_gca": "SqueezeSegV2 + LIR + geodesic correlation alignment (lambda 10) of output-logit "
                        "covariances between synthetic and unlabelled real batches, both trained together, "
                        "fine-tuned from the synthetic SqueezeSegV2.",
    "diracdeltaseg": "DiracDeltaSeg (thesis ch. 7): shift + 1x1 convolutions, concatenative skips, the accelerator's "
                     "operators only; trained progressively fp32 -> w8a8 -> w4a4 (DoReFa weights, PACT activations, "
                     "one network-wide scale, eq. 7.12); runs on the `synetgy` backend bit for bit.",
    "diracdeltaseg_fp32": "DiracDeltaSeg at the end of its fp32 stage: the float reference of `diracdeltaseg`.",
    "squeezesegv2_da": "SqueezeSegV2 + LIR + GCA + progressive domain calibration (Algorithm 2) of every "
                       "batch-norm layer on unlabelled real scans: the full adaptation pipeline.",
    "squeezeseg_intensity": "Learned intensity rendering network (thesis 6.4): SqueezeSeg-shaped, no CRF, input x, y, "
                            "z, range, output 10 intensity-bin logits + 10 per-bin deviations (hybrid loss).",
}


# The commands that made a model's weights (in docs/segmentation.md beside their results too).
_FURNITURE_DATA = ("squeeze-perception synth --out data/synth_furn --sequences 0 --object-train 8000 --object-test 0 "
                   "--lidar-2d-only --workers 2 --seed 8")
_FURNITURE_TRAIN = ("squeeze-perception seg train --arch squeezesegv2 --name squeezesegv2_furniture "
                    "--init models/squeezesegv2_big.pt --data data/synth_furn/lidar_2d/train "
                    "--out out/seg/cpu_furn/squeezesegv2_furniture.pt --work-dir out/seg/cpu_furn --steps 3300 "
                    "--batch-size 8 --lr 5e-4 --minutes 60 --threads 2 --precision bf16 --channels-last --crop-width 0 "
                    "--checkpoint-every 250 --log-every 25 --seed 12   # resumable")
_ISQRT_TRAIN = ("squeeze-perception seg train --arch squeezesegv2 --name squeezesegv2_furniture_isqrt "
                "--init models/squeezesegv2_furniture.pt --data data/synth_furn/lidar_2d/train "
                "--out out/seg/cpu_furn/squeezesegv2_furniture_isqrt.pt --work-dir out/seg/cpu_furn --steps 1700 "
                "--batch-size 8 --lr 3e-4 --minutes 30 --threads 2 --precision bf16 --channels-last --crop-width 0 "
                "--checkpoint-every 250 --log-every 25 --seed 13 --class-weights 0.29,1,4.5,6.8   # resumable")


_INTENSITY_DATA = ("squeeze-perception synth --out data/synth_int --sequences 0 --object-train 6000 --object-test 0 "
                   "--lidar-2d-only --workers 2 --seed 10")
_INTENSITY_TRAIN = ("squeeze-perception seg train --arch squeezesegv2 --name squeezesegv2_intensity_isqrt "
                    "--init models/squeezesegv2_furniture_isqrt.pt --data data/synth_int/lidar_2d/train "
                    "--out out/seg/cpu_furn/squeezesegv2_intensity_isqrt.pt --work-dir out/seg/cpu_furn --steps 2100 "
                    "--batch-size 8 --lr 3e-4 --minutes 42 --threads 2 --precision bf16 --channels-last "
                    "--crop-width 0 --checkpoint-every 250 --log-every 25 --seed 14 --class-weights 0.29,1,4.5,6.8")


_GAIN_TRAIN = ("squeeze-perception seg train --arch squeezesegv2 --name squeezesegv2_gain_isqrt "
               "--init models/squeezesegv2_intensity_isqrt.pt --data data/synth_int/lidar_2d/train "
               "--out out/seg/cpu_gain/squeezesegv2_gain_isqrt.pt --work-dir out/seg/cpu_gain --steps 1700 "
               "--batch-size 8 --lr 1.5e-4 --minutes 46 --threads 2 --precision bf16 --channels-last "
               "--crop-width 0 --checkpoint-every 250 --log-every 25 --seed 15 --class-weights 0.29,1,4.5,6.8 "
               "--intensity-gain-log2 1   # resumable")


_BNMIX_TRAIN = ("squeeze-perception seg adapt grids && squeeze-perception seg train --arch squeezesegv2 "
                "--name squeezesegv2_bnmix_isqrt --init models/squeezesegv2_intensity_isqrt.pt "
                "--data data/synth_int/lidar_2d/train --out out/seg/cpu_bnmix/squeezesegv2_bnmix_isqrt.pt "
                "--work-dir out/seg/cpu_bnmix --steps 1700 --batch-size 8 --lr 1.5e-4 --minutes 56 --threads 2 "
                "--precision bf16 --channels-last --crop-width 0 --checkpoint-every 250 --log-every 25 --seed 15 "
                "--class-weights 0.29,1,4.5,6.8 --intensity-gain-log2 1 --real-grids out/seg/real_unlabelled_grids.npy "
                "--real-bn-mix 2 --gca-lambda 0   # resumable")


_BNMIX2_TRAIN = ("squeeze-perception seg adapt grids && squeeze-perception seg train --arch squeezesegv2 "
                 "--name squeezesegv2_bnmix2_isqrt --init models/squeezesegv2_bnmix_isqrt.pt "
                 "--data data/synth_int/lidar_2d/train --out out/seg/cpu_bnmix2/squeezesegv2_bnmix2_isqrt.pt "
                 "--work-dir out/seg/cpu_bnmix2 --steps 1800 --batch-size 8 --lr 7.5e-5 --minutes 62 --threads 2 "
                 "--precision bf16 --channels-last --crop-width 0 --checkpoint-every 250 --log-every 25 --seed 16 "
                 "--class-weights 0.29,1,4.5,6.8 --intensity-gain-log2 1 --real-grids out/seg/real_unlabelled_grids.npy "
                 "--real-bn-mix 2 --gca-lambda 0   # resumable")


_MIX_DATA = ("squeeze-perception synth --out data/synth_int2 --sequences 0 --object-train 6000 --object-test 0 "
             "--lidar-2d-only --workers 2 --seed 22")
_MIX_TRAIN = ("squeeze-perception seg adapt grids && squeeze-perception seg train --arch squeezesegv2 "
              "--name squeezesegv2_mix_isqrt --init models/squeezesegv2_bnmix2_isqrt.pt "
              "--data data/synth_int/lidar_2d/train,data/synth_int2/lidar_2d/train "
              "--out out/seg/cpu_mix/squeezesegv2_mix_isqrt.pt --work-dir out/seg/cpu_mix --steps 1800 --batch-size 8 "
              "--lr 5e-5 --minutes 62 --threads 2 --precision bf16 --channels-last --crop-width 0 "
              "--checkpoint-every 250 --log-every 25 --seed 18 --class-weights 0.29,1,4.5,6.8 "
              "--intensity-gain-log2 1 --real-grids out/seg/real_unlabelled_grids.npy --real-bn-mix 2 "
              "--gca-lambda 0   # resumable")


def _pdc_int8_commands(source: str, name: str, calib_dir: str = "") -> list[str]:
    """A PDC model's commands: its real grids, the calibration of `source`, the int8 graph the node runs
    (int8 ranges from `calib_dir`, default the quantiser's data/synth/lidar_2d/train)."""
    calib = f"--calib-dir {calib_dir} " if calib_dir else ""
    return ["squeeze-perception seg adapt grids   # the 28 unlabelled real grids, once",
            f"squeeze-perception seg adapt pdc --source models/{source}.pt --name {name}",
            f"squeeze-perception offline quantize-int8 --model {name} {calib}--calib-frames 32 --integer-head 1 "
            "--deconv-as-conv --pad-narrow-inputs 8 --shared-concat-scale   # the int8 graph the node runs"]


CARD_COMMANDS = {
    "squeezesegv2_furniture": [_FURNITURE_DATA, _FURNITURE_TRAIN,
                               "cp out/seg/cpu_furn/squeezesegv2_furniture.pt models/"],
    "squeezesegv2_furniture_isqrt": [_FURNITURE_DATA, "# squeezesegv2_furniture first (its card)", _ISQRT_TRAIN,
                                     "cp out/seg/cpu_furn/squeezesegv2_furniture_isqrt.pt models/"],
    "squeezesegv2_furniture_isqrt_pdc": _pdc_int8_commands("squeezesegv2_furniture_isqrt",
                                                           "squeezesegv2_furniture_isqrt_pdc"),
    "squeezesegv2_furniture_pdc": _pdc_int8_commands("squeezesegv2_furniture", "squeezesegv2_furniture_pdc"),
    "squeezesegv2_intensity_isqrt": [_INTENSITY_DATA, "# squeezesegv2_furniture_isqrt first (its card)",
                                     _INTENSITY_TRAIN, "cp out/seg/cpu_furn/squeezesegv2_intensity_isqrt.pt models/"],
    "squeezesegv2_intensity_isqrt_pdc": _pdc_int8_commands("squeezesegv2_intensity_isqrt",
                                                           "squeezesegv2_intensity_isqrt_pdc",
                                                           "data/synth_int/lidar_2d/train"),
    "squeezesegv2_gain_isqrt": [_INTENSITY_DATA, "# squeezesegv2_intensity_isqrt first (its card)", _GAIN_TRAIN,
                                "cp out/seg/cpu_gain/squeezesegv2_gain_isqrt.pt models/"],
    "squeezesegv2_gain_isqrt_pdc": _pdc_int8_commands("squeezesegv2_gain_isqrt", "squeezesegv2_gain_isqrt_pdc",
                                                      "data/synth_int/lidar_2d/train"),
    "squeezesegv2_bnmix_isqrt": [_INTENSITY_DATA, "# squeezesegv2_intensity_isqrt first (its card)", _BNMIX_TRAIN,
                                 "cp out/seg/cpu_bnmix/squeezesegv2_bnmix_isqrt.pt models/"],
    "squeezesegv2_bnmix_isqrt_pdc": _pdc_int8_commands("squeezesegv2_bnmix_isqrt", "squeezesegv2_bnmix_isqrt_pdc",
                                                       "data/synth_int/lidar_2d/train"),
    "squeezesegv2_bnmix2_isqrt": ["# squeezesegv2_bnmix_isqrt first (its card)", _BNMIX2_TRAIN,
                                  "cp out/seg/cpu_bnmix2/squeezesegv2_bnmix2_isqrt.pt models/"],
    "squeezesegv2_bnmix2_isqrt_pdc": _pdc_int8_commands("squeezesegv2_bnmix2_isqrt", "squeezesegv2_bnmix2_isqrt_pdc",
                                                        "data/synth_int/lidar_2d/train"),
    "squeezesegv2_mix_isqrt": [_INTENSITY_DATA, _MIX_DATA, "# squeezesegv2_bnmix2_isqrt first (its card)", _MIX_TRAIN,
                               "cp out/seg/cpu_mix/squeezesegv2_mix_isqrt.pt models/"],
    "squeezesegv2_mix_isqrt_pdc": _pdc_int8_commands("squeezesegv2_mix_isqrt", "squeezesegv2_mix_isqrt_pdc",
                                                     "data/synth_int/lidar_2d/train"),
}


SEG_EVAL_PROTOCOL = (
    "Protocol: per class, counts summed over every frame of a data set (lidar_2d grid cells; object-scan "
    "points in the front 90 deg view). Real object frames are labelled from their KITTI 3D boxes by "
    "`kitti.pointwise.label_points` (Van, Person_sitting and DontCare regions ignored; Truck, Tram, Misc "
    "background; a point in two boxes goes to the nearest centre; since 2026-12-05 the points within 0.2 m "
    "outside an object box are ignored too, `seg eval --ignore-band`); synthetic scans carry the simulator's exact "
    "labels. n/a = no ground truth (left out of averages); in brackets the true instances (n=) or, where the "
    "data has no instance ids, the true points.")


def _cards(args) -> int:
    import torch

    from .evaluation import OBJECT_CLASSES, counts_from_json, format_percent

    results = {}
    eval_path = project_root() / args.eval
    if eval_path.exists():
        results = json.loads(eval_path.read_text())
    for name in args.models.split(","):
        path = models_dir() / f"{name}.pt"
        if not path.exists():
            print(f"skip {name}: {path} missing")
            continue
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        meta = ckpt.get("meta", {})
        cfg = meta.get("config", {})
        lines = [f"# {name}", "", CARD_PURPOSE.get(name, ""), "",
                 f"- weights: `models/{name}.pt` ({path.stat().st_size / 1e6:.1f} MB, "
                 f"{sum(v.numel() for v in ckpt['state_dict'].values() if v.dtype.is_floating_point) / 1e6:.3f} M "
                 "float values incl. batch-norm statistics)",
                 f"- classes: unknown, car, pedestrian, cyclist; input (C, 64, 512) raw grid "
                 "(x, y, z, intensity, range[, mask]); normalised inside the model",
                 f"- training: {meta.get('steps', '?')} steps, batch {cfg.get('batch_size', meta.get('batch_size', '?'))}, "
                 f"crop width {cfg.get('crop_width', meta.get('crop_width', 0)) or 512}, loss {meta.get('loss', 'hybrid')}, "
                 f"optimiser {cfg.get('optimizer', 'adam')} lr {cfg.get('lr', '1e-3')}, "
                 f"CRF trained end to end: {cfg.get('crf', 'n/a')}",
                 f"- data: {cfg.get('data', 'unlabelled real KITTI scans (raw/ and object/, no labels)')} "
                 f"({meta.get('train_files', meta.get('real_grids', '?'))} grids)"]
        if meta.get("arch") == "intensity_renderer":
            lines[5] = ("- input (5, 64, 512) raw grid of which x, y, z and range are used; output intensity in "
                        "[0, 1] = the most likely bin's centre + that bin's predicted deviation")
            lines[6] = f"- training: {meta.get('steps')} steps: " + "; then ".join(meta.get("history", []))
        if meta.get("pdc_layers"):
            lines[6] = (f"- training: no gradient steps; the weights of `{meta.get('calibrated_from')}` "
                        "(see its card) with re-estimated batch-norm statistics")
            lines[7] = "- data: unlabelled real KITTI scans (raw/ and object/, no labels), " \
                       f"{meta.get('real_grids')} grids (7 scans x 4 rotated front views)"
        quant = meta.get("quant") or {}
        if quant.get("stages"):
            lines.append(f"- precision: {quant['precision']}, shared activation scale s = {quant['s']:.4f}; stages "
                         + ", ".join(f"{st['stage']} {st['steps']} steps (ended by {st['stopped_by']})"
                                     for st in quant["stages"])
                         + f"; float reference `{quant.get('fp32_weights')}`")
        elif quant.get("stage_of"):
            lines.append(f"- the float stage of `{quant['stage_of']}` (schedule {quant.get('schedule')})")
        if meta.get("trained_on"):
            lines.append(f"- trained on: {meta['trained_on']}")
        if cfg.get("init"):
            lines.append(f"- fine-tuned from: `{cfg['init']}`")
        if cfg.get("renderer"):
            lines.append(f"- intensity rendered by: `{cfg['renderer']}`")
        if cfg.get("real_grids") and cfg.get("gca_lambda"):
            lines.append(f"- GCA real batches from: `{cfg['real_grids']}` (lambda {cfg.get('gca_lambda')})")
        if cfg.get("real_grids") and cfg.get("real_bn_mix"):
            lines.append(f"- batch norm on mixed batches: {cfg['real_bn_mix']} unlabelled real grids of "
                         f"`{cfg['real_grids']}` beside the synthetic scans of every step (no loss on them)")
        if meta.get("pdc_layers"):
            lines.append(f"- progressive domain calibration: {meta['pdc_layers']} batch-norm layers re-estimated on "
                         f"{meta.get('real_grids')} unlabelled real grids, from `{meta.get('calibrated_from')}`")
        if "train_mse" in meta:
            lines.append(f"- rendering MSE on its real grids {meta['train_mse']:.4f} "
                         f"(predicting the mean: {meta['predict_mean_mse']:.4f}; thesis: 0.011 with the hybrid loss)")
        if name in results:
            lines += ["", "## Evaluation (IoU %, `squeeze-perception seg eval`; details in docs/segmentation.md)", "",
                      SEG_EVAL_PROTOCOL, "",
                      "| data set | frames | car | pedestrian | cyclist |", "|---|---|---|---|---|"]
            grounded = results.get(f"{name} + ground removal", {})
            for ds, r in [*results[name].items(), *((f"{ds} + ground stage", r) for ds, r in grounded.items())]:
                counts = counts_from_json(r)
                iou = counts.class_level()["IoU"]
                where = f" (`{r['data']}`)" if r.get("data") else ""
                lines.append(f"| {ds}{where} | {r['frames']} | " + " | ".join(
                    f"{format_percent(iou[c])} ({counts.support(c)})" for c in OBJECT_CLASSES) + " |")
            if grounded:
                lines += ["", "Rows \"+ ground stage\": the lidar_2d grids after the pipeline's LATTE ground stage, the "
                          "labels the node publishes (the other lidar_2d rows are network + CRF, as the thesis "
                          "scores them; the object-scan rows run the whole pipeline)."]
        # the training budget of the weights' gradient steps (a PDC model: those of its source)
        trained = meta.get("source_meta") or meta if meta.get("pdc_layers") else meta
        source_path = models_dir() / str(meta.get("calibrated_from", ""))
        if meta.get("pdc_layers") and meta.get("calibrated_from") and source_path.is_file():
            trained = torch.load(source_path, map_location="cpu", weights_only=False).get("meta", trained)
        last, tcfg = trained.get("last") or {}, trained.get("config") or {}
        files = int(trained.get("train_files", 0) or 0)
        minutes = f"{last['elapsed_s'] / 60:.0f}" if last.get("elapsed_s") else ""
        if trained.get("trained_on") or meta.get("trained_on") or str(tcfg.get("device", "cpu")).startswith("cuda"):
            budget = f"Trained for {minutes or '7.5'} minutes on one GPU on {files or 6000:,} synthetic scans"
        elif files > 1000 and minutes:
            budget = f"Trained for {minutes} minutes on this 2-core CPU on {files:,} synthetic scans"
        else:
            budget = "Trained for minutes on a shared 2-core CPU on a small synthetic data set"
        if name in CARD_COMMANDS:
            lines += ["", "## Reproduce", "", "```bash", *CARD_COMMANDS[name], "```"]
        lines += ["", "## Limits", "",
                  f"{budget}, far from the thesis's schedule; treat the numbers as a working baseline, not a "
                  "reproduction. Real KITTI frames were never used for training or tuning (only unlabelled real scans "
                  "for the adaptation steps).", ""]
        (models_dir() / f"{name}.md").write_text("\n".join(lines))
        print(f"wrote models/{name}.md")
    return 0


def main(argv: list[str]) -> int:
    from ..training import add_train_arguments
    from .train import SegTrainConfig  # the training defaults live in one place

    ap = argparse.ArgumentParser(prog="squeeze-perception seg", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train SqueezeSeg / SqueezeSegV2 / DiracDeltaSeg on lidar_2d grids")
    # The shared training flags (offline/training.py); --minutes and --init are their older names here.
    add_train_arguments(
        t, SegTrainConfig(), aliases={"--max-minutes": ("--minutes",), "--init-weights": ("--init",)},
        help_={"--arch": "squeezeseg | squeezesegv2 | diracdeltaseg (the Synetgy accelerator's model, trained "
                         "progressively to low precision (--quant-schedule); also writes its float stage as "
                         "<name>_fp32.pt beside the weights)",
               "--out": "weights file (default models/<name>.pt)",
               "--max-minutes": "wall-clock budget in minutes (0: none); resumable",
               "--resume": "continue from <work-dir>/<name>/checkpoint.pt when there is one (default; "
                           "--no-resume starts afresh)",
               "--precision": "bf16 autocast for the CNN (CRF and loss in fp32); see `seg train-bench`",
               "--device": "where the model, batches, loss and CRF run (cpu, cuda); checkpoints hold CPU "
                           "tensors either way, so a run resumes on the other device",
               "--loader-workers": "make the batches in N DataLoader processes (keeps a GPU fed; the file list is "
                                   "fixed at start); 0: in the training loop, which also picks up grids a running "
                                   "generator adds",
               "--crop-width": "random width crops (multiple of 16); 0 = full 512",
               "--data": "folder of labelled lidar_2d .npy grids, or several separated by commas (trained on "
                         "together, in the order given)"})
    t.set_defaults(data=f"{DEFAULT_SYNTH}/lidar_2d/train")
    t.add_argument("--name", default="", help="output weights models/<name>.pt (or give --out)")
    t.add_argument("--loss", default="", choices=("", "ce", "focal"))
    t.add_argument("--no-crf", action="store_true", help="train without the recurrent CRF")
    t.add_argument("--renderer", default="", help="learned intensity rendering weights (+LIR)")
    t.add_argument("--real-grids", default="", help="unlabelled real grids .npy (+GCA)")
    t.add_argument("--gca-lambda", type=float, default=SegTrainConfig.gca_lambda)
    t.add_argument("--real-bn-mix", type=int, default=0, metavar="N",
                   help="append N unlabelled real grids (--real-grids) to every batch: batch norm normalises "
                        "both domains together, the loss sees only the synthetic scans (for PDC afterwards); 0: off")
    t.add_argument("--max-files", type=int, default=0)
    t.add_argument("--intensity-gain-log2", type=float, default=0.0, metavar="A",
                   help="augmentation: multiply each training scan's intensity by 2**u, u uniform in [-A, A], "
                        "clipped to [0, 1] (sensor-to-sensor gain; 1: x0.5 to x2); 0: off")
    t.add_argument("--class-weights", default="", metavar="U,C,P,Y",
                   help="loss weight per class (unknown, car, pedestrian, cyclist; 1/15 allowed); default the "
                        "release's 1/15,1,10,10")
    t.add_argument("--quant-schedule", default="", metavar="W/A:STEPS[@LR],...",
                   help="diracdeltaseg: comma list of stages WBITS/ABITS:STEPS[@LR] trained in order, each from the "
                        "previous stage's weights (thesis 7.4), e.g. '32/32:3000,8/8:1000,4/4:1000@3e-4'; bits 2-8 "
                        "or 32 (float), never increasing from one stage to the next; LR defaults to --lr; each "
                        "stage has its own optimiser and step decay; replaces --steps (default: 32/32, 8/8, 4/4 "
                        "with 3/5, 1/5, 1/5 of --steps). --max-minutes is shared by the stages in proportion to their "
                        "steps, so a run cut short still ends at the last precision; the checkpoint records the "
                        "stage, and a resumed run needs the same schedule")
    t.add_argument("--work-dir", default="out/seg", help="checkpoint and train.log in <work-dir>/<name>/")
    t.set_defaults(func=_train)

    tb = sub.add_parser("train-bench", help="training throughput per scan: fp32 / channels_last / bf16 / "
                                            "bf16+channels_last, interleaved in one run")
    tb.add_argument("--arch", default="squeezesegv2", choices=("squeezeseg", "squeezesegv2"))
    tb.add_argument("--batch-size", type=int, default=8)
    tb.add_argument("--width", type=int, default=512)
    tb.add_argument("--repeats", type=int, default=3)
    tb.add_argument("--threads", type=int, default=2)
    tb.add_argument("--no-crf", action="store_true")
    tb.add_argument("--out", default="", help="also write the result as JSON")
    tb.set_defaults(func=_train_bench)

    a = sub.add_parser("adapt", help="domain adaptation: real grids, intensity renderer, PDC")
    a.add_argument("step", choices=("grids", "render", "pdc"))
    a.add_argument("--grids", default=DEFAULT_REAL_GRIDS)
    a.add_argument("--kitti-root", default="")
    a.add_argument("--name", default="")
    a.add_argument("--source", default="models/squeezesegv2_gca.pt", help="pdc: weights to calibrate")
    a.add_argument("--steps", type=int, default=400)
    a.add_argument("--minutes", type=float, default=15.0)
    a.add_argument("--threads", type=int, default=1)
    a.add_argument("--init", default="", help="render: continue from these renderer weights")
    a.add_argument("--crop-width", type=int, default=0)
    a.add_argument("--batch-size", type=int, default=4)
    a.set_defaults(func=_adapt)

    e = sub.add_parser("eval", help="class/instance P, R, IoU on synthetic test and real KITTI")
    e.add_argument("--models", default="squeezeseg,squeezesegv2,squeezesegv2_lir,squeezesegv2_gca,squeezesegv2_da")
    e.add_argument("--synth", default=DEFAULT_SYNTH)
    e.add_argument("--kitti-root", default="")
    e.add_argument("--max-grids", type=int, default=200)
    e.add_argument("--max-frames", type=int, default=50)
    e.add_argument("--crf-ablation", action="store_true", help="also evaluate squeezeseg without CRF")
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--backend", default="onnxruntime", help="same labels as torch, several times faster on CPU")
    e.add_argument("--semantic-kitti", default="", metavar="DIR",
                   help="also evaluate on SemanticKITTI (DIR/sequences/NN/velodyne/*.bin + labels/*.label): "
                        "full 360-degree scan and front 90-degree view")
    e.add_argument("--semantic-kitti-sequences", default="", help="comma list, e.g. 08 (default: every sequence "
                   "with labels)")
    e.add_argument("--semantic-kitti-frames", type=int, default=200,
                   help="at most this many scans, spread evenly over the sequences (0: all)")
    e.add_argument("--datasets", default="", help=f"comma list out of {', '.join(STANDARD_DATASETS)}, semantic_kitti "
                   "(default: the four standard ones, plus semantic_kitti with --semantic-kitti)")
    e.add_argument("--ignore-band", type=float, default=EVAL_IGNORE_BAND_M, metavar="M",
                   help="real object frames: ignore points within M metres outside an object's 3D box "
                        "(kitti/pointwise.py, 'Boundary band'; 0: count them as background, the protocol "
                        "before 2026-12-05)")
    e.add_argument("--perturb-intensity", default="", metavar="MODE",
                   help="object frames (synthetic and real): change the intensity of every scan before the "
                        "network (labels unchanged) to see how much the labels hang on it: shuffle (permute among "
                        "the scan's points), const:V, scale:F (clipped to [0, 1]); the lidar_2d grids are not "
                        "changed")
    e.add_argument("--logit-adjust", type=float, default=0.0, metavar="TAU",
                   help="subtract TAU * log(w) from the class scores before the argmax, w the class weights the "
                        "model's loss used (from its checkpoint): how much of the weighted loss's pull towards "
                        "rare classes to undo (0: none, 1: all); a row of its own")
    e.add_argument("--out", default="", help="JSON results (null where a value is undefined; default "
                   "out/seg/eval.json, with --instances out/seg/instances.json)")
    e.add_argument("--merge", action="store_true", help="add to the results already in --out")
    e.add_argument("--instances", action="store_true",
                   help="only the instance precision/recall against the real KITTI 3D boxes (BEV IoU >= "
                        "--iou-threshold) with ground removal off and on, + point IoU; writes out/seg/instances.json "
                        "and docs/img/seg_real_topview.png (offline/segmentation/instance_eval.py)")
    e.add_argument("--iou-threshold", type=float, default=0.5, help="--instances: BEV IoU for a match")
    e.add_argument("--no-plot", action="store_true", help="--instances: do not redraw the top-view figure")
    e.add_argument("--cluster-eps", type=float, default=None, metavar="M",
                   help="--instances: DBSCAN radius (default: the node's, segmentation/constants.py)")
    e.add_argument("--cluster-min-points", type=int, default=None, metavar="N",
                   help="--instances: DBSCAN minPts (default: the node's)")
    e.set_defaults(func=_eval)

    b = sub.add_parser("bench", help="per-stage latency, compute-bound ratio, DBSCAN sklearn vs fast")
    b.add_argument("--model", default="squeezesegv2")
    b.add_argument("--weights", default="")
    b.add_argument("--frames", type=int, default=16)
    b.add_argument("--fov", default="front", choices=("front", "full"))
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--backends", default="torch,onnxruntime,onnxruntime-int8",
                   help="comma list, run side by side (onnxruntime-int8 is skipped with the reason when "
                        "models/<model>.int8.onnx was not made)")
    b.add_argument("--out", default="out/seg/bench.json")
    b.set_defaults(func=_bench)

    w = sub.add_parser("intensity-sweep", help="object-frame IoU per class with every scan's intensity times each "
                                               "gain, models side by side: how much the labels hang on the level")
    w.add_argument("--models", default="squeezesegv2_bnmix_isqrt_pdc")
    w.add_argument("--gains", default="0.5,0.71,1,1.41,2", help="comma list of factors (1: as recorded)")
    w.add_argument("--synth", default=DEFAULT_SYNTH, help="synthetic data root: its object/testing scans")
    w.add_argument("--real", action="store_true", help="the real KITTI object frames instead of --synth")
    w.add_argument("--kitti-root", default="")
    w.add_argument("--max-frames", type=int, default=0)
    w.add_argument("--backend", default="onnxruntime")
    w.add_argument("--threads", type=int, default=1)
    w.add_argument("--out", default="out/seg/intensity_sweep.json")
    w.add_argument("--plot", default="", help="PNG path (relative to the project), e.g. docs/img/seg_intensity_sweep.png")
    w.set_defaults(func=_intensity_sweep)

    p = sub.add_parser("plots", help="docs/img/seg_*.png: label maps, rendered intensity, training curves")
    p.add_argument("--models", default="squeezeseg,squeezesegv2,squeezesegv2_lir,squeezesegv2_gca,squeezesegv2_da")
    p.add_argument("--frame", default="2011_09_26_0001_0000000040.npy")
    p.add_argument("--grids", default=DEFAULT_REAL_GRIDS)
    p.add_argument("--scan-index", type=int, default=20, help="which unlabelled real grid to render")
    p.add_argument("--topview-model", type=int, default=1, help="index into --models for the top-view plot")
    p.add_argument("--outcome-models", default="",
                   help="comma list: docs/img/seg_real_outcomes.png, the real object frames' points on their camera "
                        "images coloured by outcome (right, missed, false car / pedestrian / cyclist), one column "
                        "per model")
    p.add_argument("--kitti-root", default="")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=_plots)

    c = sub.add_parser("cards", help="write models/<name>.md model cards from checkpoint meta + eval json")
    c.add_argument("--models", default="squeezeseg,squeezesegv2,squeezesegv2_lir,squeezesegv2_gca,squeezesegv2_da,"
                   "squeezeseg_intensity,diracdeltaseg,diracdeltaseg_fp32")
    c.add_argument("--eval", default="out/seg/eval.json")
    c.set_defaults(func=_cards)

    args = ap.parse_args(argv)
    return int(args.func(args) or 0)
