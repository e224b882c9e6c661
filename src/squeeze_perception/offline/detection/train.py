"""Training loop for SqueezeDet: the thesis recipe (SGD, momentum 0.9, lr 0.01 halved every
10k steps, batch 20, random crop and flip, eq. 3.2 loss) with knobs for a CPU budget.

The settings are offline/training.py's TrainConfig (the names every model's training shares)
plus the detector's own (`DetTrainConfig`); the loop runs on its machinery. Resumable: a
checkpoint (model, optimiser, step, RNG state) is written every `checkpoint_every` steps beside
the output weights (`<out>.ckpt`); `resume=True` continues from it as if never stopped. Each
checkpoint also writes the weights file itself, so an interrupted run still leaves usable
weights. Progress goes to a JSON-lines log (one line per `log_every` steps) and a tqdm bar.

Batch k is drawn from its own generator, seeded by (seed, k): the stream of batches is the same
whether one background thread or `loader_workers` processes load it, and a resumed run
continues it. On an accelerator (`device="cuda"`) the loaders hand over uint8 crops and the
photometric change and normalisation run on the device (`apply_photometric_torch`).
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ...detection.anchors import kmeans_anchors
from ...detection.data import (apply_photometric, apply_photometric_torch, augment, draw_photometric, letterbox,
                               list_samples, load_rgb, normalise, normalise_torch, training_boxes)
from ...detection.loss import build_targets
from ...detection.models import LAYOUTS, grid_geometry
from ...registry import get_model
from .randconv import random_convolution
from .style import histograms, match_to
from ..training import (Progress, TimeBudget, TrainConfig, load_checkpoint, read_log, restore_rng, run_steps,
                        running_mean, save_checkpoint, seed_everything)


@dataclass
class DetTrainConfig(TrainConfig):
    """The shared settings with the detector's defaults, and its own knobs."""
    arch: str = "squeezedet"  # a registered detection model
    data: str = "data/synth/object/training"  # KITTI object layout (image_2/, label_2/)
    steps: int = 1000
    batch_size: int = 20
    lr: float = 0.01
    optimizer: str = "sgd"  # "sgd" (thesis) | "adam" (faster start from random init on a CPU budget)
    log_every: int = 5
    threads: int = 2
    # Throughput knobs (measured by `squeeze-perception det train-bench`): bf16 autocast and the
    # channels_last layout use this CPU's AVX-512 BF16 units; the loss is always computed in fp32.
    precision: str = "bf16"
    channels_last: bool = True
    # 0: one background thread loads the next batch (2-core machines); N: N loader processes
    # (torch DataLoader) for machines whose accelerator outruns one thread.
    loader_workers: int = 0
    lr_decay_steps: int = 10000
    lr_decay: float = 0.5
    momentum: float = 0.9
    weight_decay: float = 0.0
    clip_grad_norm: float = 1.0
    warmup_steps: int = 0
    crop_height: int = 0  # with crop_width: random crops of the model-size image (0: the full height)
    max_shift: tuple[int, int] = (150, 50)
    anchors: list = field(default_factory=list)  # explicit (9,2) shapes; empty -> k-means
    # Batch normalisation while training (folded into the convolutions in the saved weights).
    batchnorm: bool = True
    dropout: float | None = None  # None: the model's own (0.5 before ConvDet); 0 for overfit checks
    compile: bool = False
    flip: bool = True
    # Anchor assignment: 0 = the thesis's single responsible anchor per object; > 0 also makes
    # every anchor overlapping an object by this IoU a positive (loss.build_targets says why).
    positive_iou: float = 0.5
    photometric: float = 1.0  # strength of the random photometric augmentation (0: off)
    # Held-out AP during training (the AP-vs-steps curve): evaluated every eval_every steps.
    eval_dir: str = ""
    eval_every: int = 0
    eval_limit: int = 50
    eval_precision: str = ""  # "" = the training precision; the overfit check scores in fp32
    # Stop as soon as an evaluation's car AP(moderate) reaches this (the overfit check: "train
    # until AP >= 90"); 0 = run all steps
    stop_at_car_ap: float = 0.0
    # Style alignment to a target camera (issue 9, unsupervised adaptation; style.py): with this
    # probability a training crop's luminance histogram is matched to that of one random
    # unlabelled image under `style_images` (folders of PNGs; no label is ever read).
    style_images: list = field(default_factory=list)
    style_probability: float = 0.5
    # Random convolutions (randconv.py, domain generalisation): the share of training images that
    # go through a freshly drawn random 3 -> 3 convolution; 0 = off
    random_conv: float = 0.0
    # Batch norm over both domains (unsupervised adaptation): this many unlabelled target-camera
    # images (random crops/flips of the PNGs under `real_bn_images`; no label is read) join every
    # training batch's forward pass, so batch norm normalises synthetic and real images together;
    # the loss sees only the synthetic ones. For AdaBN afterwards (adapt.py), which then moves the
    # statistics less far from those the network learned under. 0 = off.
    real_bn_mix: int = 0
    real_bn_images: list = field(default_factory=list)

    def checkpoint_path(self) -> Path:
        return self.weights_path().with_suffix(".ckpt")

    def log_path(self) -> Path:
        return Path(self.log_file) if self.log_file else self.weights_path().with_suffix(".log.jsonl")


# Batches whose activation statistics seed fresh BNs when training starts from plain weights.
BN_SEED_BATCHES = 4


def build_training_module(spec, batchnorm: bool, dropout: float | None = None):
    """A registered detection model built with training-time options (batch norm, dropout),
    which the registry's own build() does not take. Used by training and by AdaBN."""
    from ...registry import _resolve

    overrides = {"batchnorm": batchnorm, **({} if dropout is None else {"dropout": dropout})}
    return _resolve(spec.builder)(**{**spec.builder_kwargs, **overrides})


def input_anchors(module, width: int, height: int) -> np.ndarray:
    """(A,4) cx,cy,w,h anchors for an input of width x height (same layout as forward_raw)."""
    geo = grid_geometry(LAYOUTS[module.variant], width, height)
    centres = geo.centres()
    shapes = module.anchor_shapes.detach().cpu().numpy()
    k = len(shapes)
    return np.concatenate([np.repeat(centres, k, 0), np.tile(shapes, (len(centres), 1))], 1).astype(np.float32)


def dataset_anchor_shapes(samples, input_width: int, input_height: int, k: int = 9,
                          seed: int = 0) -> tuple[np.ndarray, float, int]:
    """k-means shapes of every trained box after letterboxing to the model input."""
    from PIL import Image

    shapes = []
    for s in samples:
        boxes, _ = training_boxes(s.labels())
        if not len(boxes):
            continue
        with Image.open(s.image_path) as im:
            w, h = im.size
        scale = min(input_width / w, input_height / h)
        shapes.append(np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1) * scale)
    shapes = np.concatenate(shapes) if shapes else np.zeros((0, 2))
    centroids, mean_iou = kmeans_anchors(shapes, k=k, seed=seed)
    return centroids, mean_iou, len(shapes)


def load_batch(samples, indices, input_size: tuple[int, int], anchors: np.ndarray, crop_w: int, crop_h: int, rng,
               max_shift, flip: bool = True, photometric_strength: float = 0.0, positive_iou: float = 0.0,
               defer_photometric: bool = False, cache: dict | None = None, style_hists=None,
               style_probability: float = 0.0):
    """Images, targets and photometric draws of one batch. The images are (N,3,H,W) float32
    normalised, or with defer_photometric (N,H,W,3) uint8 crops whose draws the caller applies
    (`apply_photometric_torch`, then `normalise_torch`). anchors: `input_anchors` of the crop.
    cache: a dict that keeps each decoded, letterboxed frame (for small sets such as overfit checks).
    style_hists: (K, 1, 256) luminance histograms of unlabelled target-camera images; each crop is
    matched to a random one of them with probability style_probability (before the photometric
    draw, so the random exposure/colour changes still vary around the target's look)."""
    input_w, input_h = input_size
    images, targets, draws = [], [], []
    for i in indices:
        for _ in range(10):  # a frame still being written by the generator is skipped
            s = samples[i]
            try:
                if cache is not None and s.name in cache:
                    rgb, lb, boxes, classes = cache[s.name]
                else:
                    rgb, lb = letterbox(load_rgb(s.image_path), input_w, input_h)
                    boxes, classes = training_boxes(s.labels())
                    if cache is not None:
                        cache[s.name] = (rgb, lb, boxes, classes)
                break
            except (OSError, ValueError):
                i = int(rng.integers(len(samples)))
        else:
            raise RuntimeError(f"cannot read training frames in {samples[0].image_path.parent}")
        img, boxes, kept = augment(rgb, boxes * lb.scale, rng, crop_w, crop_h, max_shift=max_shift, flip=flip)
        if style_hists is not None and len(style_hists):
            target = int(rng.integers(len(style_hists)))
            if rng.random() < style_probability:
                img = match_to(img, style_hists[target], "luma")
        draw = draw_photometric(rng, photometric_strength)
        if defer_photometric:
            images.append(img)
        else:
            images.append(normalise(apply_photometric(img, draw, rng)))
        draws.append(draw)
        targets.append(build_targets(anchors, boxes, classes[kept] - 1, positive_iou))
    return np.stack(images), targets, draws


class BatchStream:
    """Batch k of a run, from a generator seeded by (seed, k). Indexable, so a torch DataLoader
    can spread the batches over processes (it holds no torch module: safe to fork)."""

    CACHE_FRAMES = 64

    def __init__(self, samples, cfg: DetTrainConfig, input_size: tuple[int, int], anchors: np.ndarray,
                 crop: tuple[int, int], defer_photometric: bool):
        self.samples, self.cfg, self.input_size, self.anchors = samples, cfg, input_size, anchors
        self.crop, self.defer_photometric = crop, defer_photometric
        # Up to this many frames are kept decoded (per loader process): the overfit check's 8
        # frames would otherwise be decoded again for every step.
        self.cache = {} if len(samples) <= self.CACHE_FRAMES else None
        self.style_hists = style_histograms(cfg.style_images) if cfg.style_images else None

    def __len__(self) -> int:
        return self.cfg.steps

    def __getitem__(self, step: int):
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, int(step)])
        idx = rng.integers(len(self.samples), size=cfg.batch_size)
        return load_batch(self.samples, idx, self.input_size, self.anchors, self.crop[0], self.crop[1], rng,
                          cfg.max_shift, cfg.flip, cfg.photometric, cfg.positive_iou, self.defer_photometric,
                          self.cache, self.style_hists, cfg.style_probability)


def style_histograms(folders) -> np.ndarray:
    """(K, 1, 256) luminance histograms of every PNG under `folders` (target-camera images; labels
    are never opened), one per image so each crop can take on one real image's tone."""
    from .adapt import list_images

    return np.stack([histograms([load_rgb(p)], "luma") for p in list_images(list(folders))])


def _as_loaded(batch):
    """DataLoader collate function: the images leave the loader process as a tensor (which the
    DataLoader passes through shared memory; a numpy array would be pickled), the rest as made."""
    import torch

    images, targets, draws = batch
    return torch.from_numpy(images), targets, draws


def _batches(stream: BatchStream, first_step: int, workers: int):
    """Yield stream[first_step], stream[first_step + 1], ... loaded ahead of use: by one thread
    (workers 0) or by a torch DataLoader with `workers` processes."""
    if workers <= 0:
        # The next batch is decoded and augmented in a thread while the network computes (PIL
        # and numpy release the GIL): data loading was half of a step on this 2-core machine.
        with ThreadPoolExecutor(max_workers=1) as loader:
            pending = loader.submit(stream.__getitem__, first_step)
            for step in range(first_step, len(stream)):
                batch = pending.result()
                if step + 1 < len(stream):
                    pending = loader.submit(stream.__getitem__, step + 1)
                yield batch
        return
    import torch

    loader = torch.utils.data.DataLoader(stream, batch_size=None, sampler=range(first_step, len(stream)),
                                         num_workers=workers, prefetch_factor=4, collate_fn=_as_loaded)
    yield from loader


def train(cfg: DetTrainConfig, progress: bool = True) -> dict:
    import torch

    from ...detection.loss import squeezedet_loss
    from ...detection.models import fold_batchnorm, seed_batchnorm_as_identity

    cfg.check()
    torch.set_num_threads(max(1, cfg.threads))
    seed_everything(cfg.seed)
    device = torch.device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its fastest kernels
    spec = get_model(cfg.arch, task="detection")
    module = build_training_module(spec, cfg.batchnorm, cfg.dropout).to(device)
    samples = list_samples(cfg.data, require_labels=True)
    crop_w = cfg.crop_width or module.input_width
    crop_h = cfg.crop_height or module.input_height
    out, ckpt_path, log_path = cfg.weights_path(), cfg.checkpoint_path(), cfg.log_path()
    out.parent.mkdir(parents=True, exist_ok=True)

    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(module.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.Adam(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # Photometric noise drawn on the device (the CPU path draws it in the loaders, per batch).
    noise = torch.Generator(device=device)
    noise.manual_seed(cfg.seed * 1_000_003)
    randconv = torch.Generator(device=device)  # random_conv's draws (restored on resume like the others)
    randconv.manual_seed(cfg.seed * 1_000_033 + 7)
    # The unlabelled real images of --real-bn-mix come from their own stream (the synthetic
    # batches stay those of the same run without them).
    real_bn_rng = np.random.default_rng([cfg.seed, 2000])
    generators = {"photometric": noise, "random_conv": randconv, "real_bn": real_bn_rng}
    if cfg.real_bn_mix < 0 or (cfg.real_bn_mix and not cfg.real_bn_images):
        raise ValueError("--real-bn-mix N needs N >= 0 and, above 0, folders of unlabelled images (--real-bn-images)")
    step, meta_anchor, resumed = 0, {}, None
    if cfg.resume and ckpt_path.exists():
        resumed = load_checkpoint(ckpt_path)
        module.load_state_dict(resumed["state_dict"])
        opt.load_state_dict(resumed["optimizer"])
        step, meta_anchor = resumed["step"], resumed.get("anchor_info", {})
    elif cfg.init_weights:
        from ...backends import load_state_dict

        # Plain weights into a batch-norm network: the fresh BNs are identities, so it computes
        # the same function; only BN parameters may be missing.
        missing, unexpected = module.load_state_dict(load_state_dict(Path(cfg.init_weights)), strict=False)
        if unexpected or any("_bn." not in k and not k.endswith((".1.weight", ".1.bias", ".1.running_mean",
                                                                   ".1.running_var", ".1.num_batches_tracked"))
                             for k in missing):
            raise ValueError(f"{cfg.init_weights} does not fit {cfg.arch}: missing {missing}, unexpected {unexpected}")
        init_meta = torch.load(cfg.init_weights, map_location="cpu", weights_only=True).get("meta", {})
        meta_anchor = {**init_meta.get("anchors", {}), "init_weights": cfg.init_weights,
                       "init_steps": init_meta.get("steps")}
        if cfg.batchnorm:
            # In training mode fresh BNs would re-normalise every layer by its batch statistics;
            # seed them from the plain network's own activations so step 0 computes its function.
            seed_rng = np.random.default_rng(cfg.seed + 1)
            crop_anchors = input_anchors(module, crop_w, crop_h)
            seed_batches = [torch.from_numpy(load_batch(samples, seed_rng.integers(len(samples), size=cfg.batch_size),
                                                        (module.input_width, module.input_height), crop_anchors,
                                                        crop_w, crop_h, seed_rng, cfg.max_shift, cfg.flip,
                                                        cfg.photometric, cfg.positive_iou)[0]).to(device)
                            for _ in range(BN_SEED_BATCHES)]
            meta_anchor["batchnorm_seeded"] = seed_batchnorm_as_identity(module, seed_batches)
    else:
        if cfg.anchors:
            shapes, mean_iou, n_boxes = np.asarray(cfg.anchors, np.float32), float("nan"), 0
        else:
            shapes, mean_iou, n_boxes = dataset_anchor_shapes(samples, module.input_width, module.input_height,
                                                              k=module.num_anchors, seed=cfg.seed)
        module.set_anchor_shapes(shapes)
        meta_anchor = {"shapes": shapes.round(1).tolist(), "kmeans_mean_iou": mean_iou, "n_boxes": n_boxes}

    def lr_at(s: int) -> float:
        lr = cfg.lr * cfg.lr_decay ** (s // cfg.lr_decay_steps)
        if cfg.warmup_steps and s < cfg.warmup_steps:
            lr *= (s + 1) / cfg.warmup_steps
        return lr

    def save(final: bool = False):
        was_training = module.training
        module.eval()
        deployed = {k: v.cpu() for k, v in fold_batchnorm(module).items()}
        module.train(was_training)
        save_checkpoint(ckpt_path, model=module, optimizer=opt, step=step, config=cfg, generators=generators,
                        anchor_info=meta_anchor)
        meta = {"steps": step, "config": asdict(cfg), "anchors": meta_anchor, "train_images": len(samples),
                "images_seen": step * cfg.batch_size,
                "crop": [crop_w, crop_h], "finished": final,
                "saved_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        torch.save({"state_dict": deployed, "model": cfg.arch, "meta": meta}, out)

    if cfg.channels_last:
        module.to(memory_format=torch.channels_last)
    forward_raw = torch.compile(module.forward_raw) if cfg.compile else module.forward_raw
    eval_samples = list_samples(cfg.eval_dir, require_labels=True)[:cfg.eval_limit] if cfg.eval_dir else []
    module.train()
    if resumed is not None and "rng" in resumed:  # last: building and loading above draw from them too
        restore_rng(resumed["rng"], generators)
    budget = TimeBudget(cfg.max_minutes)
    bar = Progress(cfg.name, cfg.steps, step, log_path, fresh=resumed is None, enabled=progress)
    defer_photometric = device.type != "cpu"
    crop_anchors = input_anchors(module, crop_w, crop_h)
    anchors_t = torch.from_numpy(crop_anchors).to(device)
    stream = BatchStream(samples, cfg, (module.input_width, module.input_height), crop_anchors, (crop_w, crop_h),
                         defer_photometric)
    batches = _batches(stream, step, cfg.loader_workers)
    real_frames = []
    if cfg.real_bn_mix > 0:
        from .adapt import letterboxed_frames, list_images, unlabelled_crops

        real_frames = letterboxed_frames(list_images(cfg.real_bn_images), module.input_width, module.input_height)

    def one_step(done: int) -> dict:
        nonlocal step
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        images, targets, draws = next(batches)
        if defer_photometric:
            crops = torch.as_tensor(images).to(device, non_blocking=True)
            batch = normalise_torch(apply_photometric_torch(crops, draws, noise))
        else:
            batch = torch.as_tensor(images)
        if cfg.random_conv > 0:
            batch = random_convolution(batch, randconv, cfg.random_conv)
        synthetic = batch.shape[0]
        if real_frames:
            # shifted and flipped as the synthetic crops are
            real = unlabelled_crops(real_frames, real_bn_rng.integers(len(real_frames), size=cfg.real_bn_mix),
                                    real_bn_rng, batch.shape[3], batch.shape[2], cfg.max_shift)
            batch = torch.cat([batch, torch.from_numpy(real).to(device=batch.device, dtype=batch.dtype)])
        if cfg.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            deltas, conf, cls = forward_raw(batch)
        deltas, conf, cls = deltas[:synthetic], conf[:synthetic], cls[:synthetic]  # real images: no loss
        loss, parts = squeezedet_loss(deltas.float(), conf.float(), cls.float(), anchors_t, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {float(loss)} at step {step}; lower lr or raise clip")
        if cfg.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.clip_grad_norm)
        opt.step()
        step += 1
        return {"step": step, "loss": float(loss.detach()), **parts, "lr": lr_at(step - 1),
                "objects": int(sum(len(t.labels) for t in targets)), "elapsed_s": round(budget.elapsed_s(), 1)}

    def held_out_ap(record: dict, ending: bool) -> bool:
        """Evaluate on the eval frames when due; True when the AP target is reached (stops the run)."""
        if eval_samples and cfg.eval_every and (step % cfg.eval_every == 0 or ending):
            ev = evaluate_module(module, eval_samples, precision=cfg.eval_precision or cfg.precision)
            module.train()
            bar.write({"step": step, "eval": ev, "elapsed_s": round(budget.elapsed_s(), 1)})
            bar.note(f"step {step}: held-out AP(moderate, 40-pt) car {ev['car_moderate_ap40']}, "
                     f"mean {ev['map40_moderate']}, recall@64 {ev['recall_at_64']:.2f}")
            car = ev["car_moderate_ap40"]
            return bool(cfg.stop_at_car_ap) and car is not None and car >= cfg.stop_at_car_ap
        return False

    def checkpoint(ending: bool) -> None:
        save(final=step >= cfg.steps)
        # A dataset still being generated grows between checkpoints: the thread loader picks up
        # new frames (loader processes keep the list they started with).
        stream.samples = list_samples(cfg.data, require_labels=True)
        if stream.cache is not None and len(stream.samples) > stream.CACHE_FRAMES:
            stream.cache = None

    try:
        ran = run_steps(one_step, done=step, until=cfg.steps, budget=budget, progress=bar, cfg=cfg,
                        save=checkpoint, after_step=held_out_ap)
    finally:
        bar.close()
        batches.close()
    bar.summary(step, ran.stopped_by, budget.elapsed_s(), ran.last.get("loss"), weights=out, checkpoint=ckpt_path,
                log=log_path)
    return {"steps": step, "final_loss": ran.last.get("loss"), "weights": str(out), "stopped_by": ran.stopped_by,
            "checkpoint": str(ckpt_path), "log": str(log_path), "anchors": meta_anchor}


def moderate_count(labels, cls: str = "Car") -> int:
    """Objects of a KITTI type that count at the moderate difficulty (level <= 1)."""
    return sum(1 for lab in labels if lab.type == cls and 0 <= lab.difficulty() <= 1)


def select_overfit_frames(split_dir: str | Path, n: int = 8) -> list:
    """The n labelled frames with the most moderate cars. The devkit samples precision at one
    threshold per true positive and 40 recall slots, so a set with fewer than 40 cars cannot
    reach a high 40-point AP however well it is learnt; the densest frames avoid that cap."""
    samples = list_samples(split_dir, require_labels=True)
    ranked = sorted(samples, key=lambda s: -moderate_count(s.labels()))
    return ranked[:n]


def perfect_detector_ap(samples, nms_iou: float = 0.4) -> dict:
    """What a detector that outputs exactly the true boxes would score on `samples` after the
    decoder's per-class NMS at `nms_iou` (taller boxes ranked first, as nearer objects are):
    the ceiling of the overfit check on these frames. A true box that overlaps a taller one of
    its class by more than `nms_iou` is suppressed however well it is learnt. Returns the
    evaluation dict of `evaluate` plus "suppressed" (true boxes NMS removed)."""
    from ...detection.decode import nms
    from ...interfaces import DETECTION_DTYPE
    from .evaluation import evaluate

    class_ids = {"Car": 1, "Pedestrian": 2, "Cyclist": 3}
    dets, labels, suppressed = [], [], 0
    for sample in samples:
        frame_labels = sample.labels()
        rows = [lab for lab in frame_labels if lab.type in class_ids]
        table = np.zeros(len(rows), DETECTION_DTYPE)
        for i, lab in enumerate(rows):
            table[i]["u_min"], table[i]["v_min"], table[i]["u_max"], table[i]["v_max"] = lab.bbox
            table[i]["score"] = (lab.bbox[3] - lab.bbox[1]) / 1000.0
            table[i]["class_id"] = class_ids[lab.type]
        keep: list[int] = []
        for c in class_ids.values():
            members = np.flatnonzero(table["class_id"] == c)
            if len(members):
                boxes = np.stack([table[k][members] for k in ("u_min", "v_min", "u_max", "v_max")], 1)
                keep += list(members[nms(boxes, table["score"][members], nms_iou)])
        suppressed += len(table) - len(keep)
        dets.append(table[sorted(keep)])
        labels.append(frame_labels)
    return {**evaluate(dets, labels), "suppressed": suppressed}


def evaluate_module(module, samples, precision: str = "fp32", top_k: int = 64, nms_iou: float = 0.4) -> dict:
    """AP of an in-training module on labelled frames, through the same letterbox, decoding and
    evaluation as `det eval` (dropout off; the module is left in eval mode)."""
    import torch

    from ...detection.data import preprocess
    from ...detection.decode import DecodeConfig, decode
    from .evaluation import evaluate, first_match_rank, recall_vs_nbox

    module.eval()
    device = next(module.parameters()).device
    dets, labels, ranks = [], [], []
    cfg = DecodeConfig(top_k=top_k, nms_iou=nms_iou)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        for s in samples:
            batch, lb = preprocess(load_rgb(s.image_path), module.input_width, module.input_height)
            raw = module(torch.from_numpy(batch).to(device))[0].float().cpu().numpy()
            d = decode(raw, cfg)
            if len(d):
                boxes = np.stack([d["u_min"], d["v_min"], d["u_max"], d["v_max"]], 1)
                d["u_min"], d["v_min"], d["u_max"], d["v_max"] = lb.to_original(boxes).T
            raw[:, :4] = lb.to_original(raw[:, :4])
            labs = s.labels()
            dets.append(d)
            labels.append(labs)
            ranks.append(first_match_rank(raw, labs)[0])
    res = evaluate(dets, labels, protocol="kitti-2019")
    return summarise_ap(res, recall_vs_nbox(ranks, [64])[0])


def summarise_ap(result: dict, recall_at_64: float) -> dict:
    """The few numbers a training log needs from an `evaluate` result (KITTI 2019 protocol:
    40-point AP, %; None where a class has no ground truth)."""
    def ap(cls: str, level: str):
        v = result.get("per_class", {}).get(cls, {}).get(level, {}).get("ap")
        return None if v is None or not np.isfinite(v) else float(v)

    aps = [ap(c, "moderate") for c in ("car", "pedestrian", "cyclist")]
    finite = [a for a in aps if a is not None]
    return {"car_moderate_ap40": aps[0], "ped_moderate_ap40": aps[1], "cyc_moderate_ap40": aps[2],
            "map40_moderate": float(np.mean(finite)) if finite else None, "recall_at_64": float(recall_at_64)}


def plot_training_log(log_path: str | Path, png_path: str | Path, window: int = 5) -> None:
    """Loss curves (total and the three parts of eq. 3.2, running mean) from a training log and,
    when the log has held-out evaluations, the held-out AP (kitti-2019, moderate) against steps."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(log_path)
    recs = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval" in r]
    if not recs:
        raise ValueError(f"no records in {log_path}")
    steps = np.array([r["step"] for r in recs])
    fig, axes = plt.subplots(1, 2 if evals else 1, figsize=(11 if evals else 6, 3.5), squeeze=False)
    ax = axes[0, 0]
    for key in ("loss", "bbox", "conf", "class"):
        ax.plot(*running_mean(steps, [r[key] for r in recs], window), label="total" if key == "loss" else key)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"eq. 3.2 loss (running mean of {window} log points)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    if evals:
        ax = axes[0, 1]
        es = [r["step"] for r in evals]
        for key, label in (("car_moderate_ap40", "car"), ("ped_moderate_ap40", "pedestrian"),
                           ("cyc_moderate_ap40", "cyclist"), ("map40_moderate", "mean")):
            ax.plot(es, [np.nan if r["eval"].get(key) is None else r["eval"][key] for r in evals], marker="o",
                    label=label, lw=2 if key == "map40_moderate" else 1)
        ax.plot(es, [100 * r["eval"]["recall_at_64"] for r in evals], ls="--", color="grey", label="recall@64 (%)")
        ax.set_xlabel("step")
        ax.set_ylabel("held-out AP, moderate, kitti-2019 (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


def plot_training_comparison(logs: dict[str, str | Path], png_path: str | Path, window: int = 9) -> None:
    """Runs side by side (label -> training log): total loss (running mean) and, where the logs
    have held-out evaluations, car AP(moderate) and mAP(moderate) against steps. For the
    questions "does bf16 learn like fp32" and "does style alignment change the curve"."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for i, (label, path) in enumerate(logs.items()):
        records = read_log(path)
        recs = [r for r in records if "loss" in r]
        if not recs:
            raise ValueError(f"no records in {path}")
        colour = f"C{i}"
        axes[0].plot(*running_mean([r["step"] for r in recs], [r["loss"] for r in recs], window), color=colour,
                     label=label)
        evals = [r for r in records if "eval" in r]
        if evals:
            es = [r["step"] for r in evals]
            for key, style, name in (("car_moderate_ap40", "-", "car"), ("map40_moderate", "--", "mAP")):
                axes[1].plot(es, [np.nan if r["eval"].get(key) is None else r["eval"][key] for r in evals],
                             ls=style, marker="o", ms=3, color=colour, label=f"{label}: {name}")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel(f"eq. 3.2 loss (running mean of {window} log points)")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("held-out AP, moderate, kitti-2019 (%)")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
