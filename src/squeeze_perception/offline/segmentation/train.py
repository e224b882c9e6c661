"""Training loop for SqueezeSeg / SqueezeSegV2 (and the intensity renderer) on lidar_2d grids.

The settings are offline/training.py's TrainConfig (the names every model's training shares)
plus the segmenter's own (`SegTrainConfig`); the loop runs on its machinery. CPU-friendly:
bounded by steps and wall-clock minutes (`max_minutes`), resumable from a checkpoint in the work
folder (network, optimiser, scheduler, step and RNG state: a resumed run continues as if never
stopped), logs one line per `log_every` steps to a file and a tqdm bar. The result is saved as
`out` (models/<name>.pt) in the project's checkpoint format with a `meta` record.
Optional domain adaptation (section 6.4): `renderer` replaces the intensity channel of every
synthetic grid by learned intensity rendering; `real_grids` + `gca_lambda` add geodesic
correlation alignment between the synthetic and real batches' output logits.

DiracDeltaSeg (`arch="diracdeltaseg"`, the Synetgy accelerator's model) trains progressively
(thesis 7.4): `quant_schedule` "32/32:S1,8/8:S2,4/4:S3" is a list of stages, weight bits /
activation bits : steps (32 = float), each starting from the previous stage's network;
`accelerator.quant.progressive_quantize` calls `set_precision` before each stage (the shared
scale s of eq. 7.12 is set when the network first leaves float and kept after). Each stage has
its own optimiser and step decay; the checkpoint records the stage, so a resumed run continues
in it. The fp32 stage's network is also saved as models/<name>_fp32.pt (the float reference
for `seg eval`), beside `out`. `device="cuda"` trains on a GPU (checkpoints hold CPU tensors either way).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...paths import models_dir, project_root
from ...segmentation import constants as K
from ...segmentation.data import GridDataset, SegDataError, list_grids, to_input
from ...segmentation.models import SqueezeSegNet, build_intensity_renderer, build_squeezeseg, build_squeezesegv2
from ..training import (Progress, StepsDone, TimeBudget, TrainConfig, load_checkpoint, restore_rng, run_steps,
                        save_checkpoint, seed_everything, to_cpu)
from .losses import (flatten_valid, focal_loss, geodesic_correlation_loss, intensity_hybrid_loss,
                     render_intensity, weighted_cross_entropy)

ARCHS = ("squeezeseg", "squeezesegv2", "diracdeltaseg")
QUANTIZED_ARCHS = ("diracdeltaseg",)  # trained progressively (quant_schedule)
FOCAL_ARCHS = ("squeezesegv2", "diracdeltaseg")  # default loss focal, else weighted cross-entropy
FLOAT_BITS = 32


@dataclass
class SegTrainConfig(TrainConfig):
    """The shared settings with the segmenter's defaults, and its own knobs."""
    arch: str = "squeezeseg"  # squeezeseg | squeezesegv2 | diracdeltaseg
    data: str = "data/synth/lidar_2d/train"
    steps: int = 2000
    batch_size: int = 8
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | sgd (the release: SGD, lr 0.01, momentum 0.9)
    max_minutes: float = 60.0
    resume: bool = True  # a run continues from its checkpoint in work_dir unless told otherwise
    # Throughput knobs (measured by `squeeze-perception seg train-bench`): bf16 autocast for the
    # network and the channels_last layout use the AVX-512 BF16 units; the CRF and the loss always
    # run in fp32 (the bilateral kernel's exp(-d^2) needs more than bf16's 8 mantissa bits).
    precision: str = "fp32"
    loss: str = ""  # "" -> ce for squeezeseg, focal for squeezesegv2 and diracdeltaseg
    crf: bool = True  # train the recurrent CRF end to end
    renderer: str = ""  # learned intensity rendering weights (+LIR)
    real_grids: str = ""  # .npy stack of unlabelled real grids (+GCA)
    gca_lambda: float = K.GCA_LAMBDA
    # Unlabelled real grids (from real_grids) appended to every training batch, so that batch norm
    # normalises synthetic and real scans together and its running statistics hold both domains;
    # the loss sees only the synthetic scans. 0: off. Aimed at PDC, which later swaps in the real
    # statistics: a network that learned under mixed statistics should lose less from the swap.
    real_bn_mix: int = 0
    max_files: int = 0
    # Random intensity gain per training scan, 2**u with u uniform in [-a, a] (segmentation/data.py); 0: off.
    intensity_gain_log2: float = 0.0
    # Per-class loss weights "unknown,car,pedestrian,cyclist"; "" -> K.CLASS_LOSS_WEIGHTS (the release's).
    class_weights: str = ""
    work_dir: str = "out/seg"  # checkpoint and train.log in <work_dir>/<name>/
    # Progressive quantization (diracdeltaseg only): "wbits/abits:steps[@lr],..." (see
    # parse_quant_schedule); "" -> default_quant_schedule(steps). Replaces `steps`.
    quant_schedule: str = ""
    extra: dict = field(default_factory=dict)

    def work_path(self) -> Path:
        return _resolve(self.work_dir) / self.name

    def checkpoint_path(self) -> Path:
        return self.work_path() / "checkpoint.pt"

    def log_path(self) -> Path:
        return Path(self.log_file) if self.log_file else self.work_path() / "train.log"


def parse_class_weights(text: str) -> np.ndarray:
    """The loss weight of each class from "w_unknown,w_car,w_pedestrian,w_cyclist" (fractions like
    1/15 allowed); "" gives the released K.CLASS_LOSS_WEIGHTS."""
    if not text:
        return np.asarray(K.CLASS_LOSS_WEIGHTS, np.float32)
    parts = text.split(",")
    if len(parts) != len(K.CLASS_NAMES):
        raise ValueError(f"--class-weights needs {len(K.CLASS_NAMES)} values ({', '.join(K.CLASS_NAMES)}), "
                         f"got {len(parts)}: {text!r}")
    values = []
    for p in parts:
        num, _, den = p.strip().partition("/")
        value = float(num) / float(den) if den else float(num)
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"--class-weights: {p.strip()!r} is not a positive number")
        values.append(value)
    return np.asarray(values, np.float32)


def build_arch(arch: str) -> torch.nn.Module:
    if arch == "squeezeseg":
        return build_squeezeseg()
    if arch == "squeezesegv2":
        return build_squeezesegv2()
    if arch == "diracdeltaseg":
        from ...accelerator.models import build_diracdeltaseg

        return build_diracdeltaseg()
    raise ValueError(f"unknown architecture '{arch}' ({' | '.join(ARCHS)})")


def model_in_channels(model: torch.nn.Module) -> int:
    """Depth of the raw grid input the model takes (5, or 6 with the LiDAR mask)."""
    if hasattr(model, "in_channels"):
        return int(model.in_channels)
    return int(model.body.conv1.cin)  # DiracDeltaSeg: its first 1x1 convolution


def save_weights(module: torch.nn.Module, name: str, meta: dict, path: Path | None = None) -> Path:
    path = path or models_dir() / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": to_cpu(module.state_dict()), "model": name, "meta": meta}, path)
    return path


# ------------------------------------------------------------ progressive quantization schedule
@dataclass(frozen=True)
class QuantStage:
    wbits: int
    abits: int
    steps: int
    lr: float | None = None  # None: TrainConfig.lr

    @property
    def label(self) -> str:
        if self.wbits >= FLOAT_BITS and self.abits >= FLOAT_BITS:
            return "fp32"
        return f"w{self.wbits}a{self.abits}"

    @property
    def is_float(self) -> bool:
        return self.wbits >= FLOAT_BITS and self.abits >= FLOAT_BITS

    def text(self) -> str:
        return f"{self.wbits}/{self.abits}:{self.steps}" + (f"@{self.lr:g}" if self.lr is not None else "")


def parse_quant_schedule(text: str) -> list[QuantStage]:
    """'32/32:600,8/8:200,4/4:200@3e-4' -> stages (weight bits / activation bits : steps [@ lr])."""
    stages: list[QuantStage] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            bits, _, rest = part.partition(":")
            steps, _, lr = rest.partition("@")
            w, a = (int(b) for b in bits.split("/"))
            stage = QuantStage(w, a, int(steps), float(lr) if lr else None)
        except ValueError:
            raise ValueError(f"quant schedule stage '{part}' is not WBITS/ABITS:STEPS[@LR] "
                             "(e.g. 32/32:600,8/8:200,4/4:200)") from None
        for b in (stage.wbits, stage.abits):
            if b != FLOAT_BITS and not 2 <= b <= 8:
                raise ValueError(f"quant schedule stage '{part}': bits must be 2-8 or 32 (float), got {b}")
        if stage.steps < 1 or (stage.lr is not None and not stage.lr > 0):
            raise ValueError(f"quant schedule stage '{part}': steps must be >= 1 and LR > 0")
        if stages and (stage.wbits > stages[-1].wbits or stage.abits > stages[-1].abits):
            raise ValueError(f"quant schedule stage '{part}' raises the precision of '{stages[-1].text()}'; "
                             "progressive quantization only lowers it")
        stages.append(stage)
    if not stages:
        raise ValueError(f"empty quant schedule '{text}'")
    return stages


def default_quant_schedule(steps: int) -> list[QuantStage]:
    """accelerator.quant.PROGRESSIVE_SCHEDULE (fp32 -> w8a8 -> w4a4) over `steps`: 3/5, 1/5, 1/5."""
    from ...accelerator.quant import PROGRESSIVE_SCHEDULE

    shares = (3, 1, 1)
    counts = [max(steps * k // sum(shares), 1) for k in shares]
    counts[0] = max(steps - sum(counts[1:]), 1)
    return [QuantStage(w, a, n) for (w, a), n in zip(PROGRESSIVE_SCHEDULE, counts)]


def quant_stages(cfg: SegTrainConfig) -> list[QuantStage]:
    """The stages of this run ([] for the float architectures)."""
    if cfg.arch not in QUANTIZED_ARCHS:
        if cfg.quant_schedule:
            raise ValueError(f"--quant-schedule needs a quantizable architecture ({', '.join(QUANTIZED_ARCHS)}), "
                             f"not '{cfg.arch}'")
        return []
    return parse_quant_schedule(cfg.quant_schedule) if cfg.quant_schedule else default_quant_schedule(cfg.steps)


def training_device(name: str) -> torch.device:
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"device must be cpu or cuda, got '{name}'")
    if name.startswith("cuda"):  # torch.cuda is touched only when asked for
        if not torch.cuda.is_available():
            raise ValueError(f"device '{name}' asked for, but torch {torch.__version__} sees no CUDA device")
        torch.backends.cudnn.benchmark = True  # fixed input shapes: pick the fastest kernels once
    return torch.device(name)


class _BatchStream(torch.utils.data.IterableDataset):
    """Endless random training batches for a torch DataLoader (`loader_workers` > 0): every worker
    holds its own GridDataset (grid cache, augmentation) and index generator, seeded from
    (seed, step at start, worker id), so a resumed run draws fresh batches."""

    def __init__(self, files: list[Path], in_channels: int, batch_size: int, seed: int, max_files: int,
                 crop_width: int, intensity_gain_log2: float = 0.0):
        super().__init__()
        self.files, self.in_channels, self.batch_size = files, in_channels, batch_size
        self.seed, self.max_files, self.crop_width = seed, max_files, crop_width
        self.intensity_gain_log2 = intensity_gain_log2

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        seed = self.seed + 7919 * (1 + (info.id if info is not None else 0))
        data = GridDataset(self.files, self.in_channels, augment=True, seed=seed, max_files=self.max_files or None,
                           crop_width=self.crop_width, intensity_gain_log2=self.intensity_gain_log2)
        rng = np.random.default_rng(seed + 1000)
        while True:
            x, y = data.batch(rng.integers(0, len(data), self.batch_size))
            yield torch.from_numpy(x), torch.from_numpy(y)


def load_renderer(path: str | Path) -> SqueezeSegNet:
    from ...backends import load_state_dict

    net = build_intensity_renderer()
    net.load_state_dict(load_state_dict(Path(path)))
    return net.eval()


@torch.no_grad()
def apply_rendered_intensity(renderer: SqueezeSegNet, inputs: torch.Tensor) -> torch.Tensor:
    """Replace channel 3 (intensity) of raw inputs by the renderer's prediction (0 where empty)."""
    valid = (inputs[:, 4] > 0).to(inputs.dtype)
    rendered = render_intensity(renderer(inputs)) * valid
    out = inputs.clone()
    out[:, 3] = rendered
    return out


def real_mix_batch(real: torch.Tensor, count: int, rng: np.random.Generator, width: int) -> torch.Tensor:
    """`count` random unlabelled real grids (with repeats when there are fewer), each cut to a random
    `width`-wide window when the synthetic batch is cropped narrower than the real grids."""
    pick = real[torch.from_numpy(rng.integers(0, len(real), count)).to(real.device)]
    if width < pick.shape[3]:
        start = int(rng.integers(0, pick.shape[3] - width + 1))
        pick = pick[..., start:start + width]
    return pick


def segment_logits(model: SqueezeSegNet, x: torch.Tensor, crf: bool, precision: str = "fp32",
                   channels_last: bool = False) -> torch.Tensor:
    """Training-time `model.segment(x, crf)`: the CNN under the chosen precision / layout, the
    recurrent CRF and everything after it in fp32 on contiguous tensors."""
    xin = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        logits = model.forward(xin)
    logits = logits.float().contiguous()
    if not crf:
        return logits
    mask = (x[:, 4:5] > 0).to(x.dtype)
    return model.crf(logits, x[:, :3], mask)


def _resolve(p: str) -> Path:
    path = Path(p)
    return path if path.is_absolute() else project_root() / path


def training_files(data: str) -> list[Path]:
    """The grids of `data`: one folder, or several separated by commas (two generator runs trained
    on together), concatenated in the order given, each folder's files sorted. No folder of links
    needed, and the order (which the seeded batch sampler indexes) is the same on every machine."""
    folders = [part.strip() for part in data.split(",") if part.strip()]
    if not folders:
        raise SegDataError("no training data folder given")
    return [f for folder in folders for f in list_grids(_resolve(folder))]


def train(cfg: SegTrainConfig, progress: bool = True) -> Path:
    cfg.check()
    torch.set_num_threads(max(cfg.threads, 1))
    seed_everything(cfg.seed)
    stages = quant_stages(cfg)
    if stages and cfg.precision != "fp32":
        raise ValueError("bf16 autocast would round the quantized accumulators; train diracdeltaseg in fp32")
    device = training_device(cfg.device)
    out, ckpt_path, log_path = cfg.weights_path(), cfg.checkpoint_path(), cfg.log_path()
    schedule_text = ",".join(st.text() for st in stages)
    model = build_arch(cfg.arch)
    if cfg.init_weights:
        from ...backends import load_state_dict

        model.load_state_dict(load_state_dict(_resolve(cfg.init_weights)))
    loss_name = cfg.loss or ("focal" if cfg.arch in FOCAL_ARCHS else "ce")
    total_steps = sum(st.steps for st in stages) if stages else cfg.steps
    # Resume: the network (and, for a staged run, the stage it was in and its steps so far).
    state = load_checkpoint(ckpt_path) if cfg.resume and ckpt_path.exists() else None
    step = stage_idx = stage_step = 0
    history: list[dict] = []
    if state is not None:
        if stages and state.get("schedule") != schedule_text:
            raise ValueError(f"checkpoint {ckpt_path} was trained with quant schedule '{state.get('schedule')}', "
                             f"not '{schedule_text}': use that schedule, another --name, or remove the checkpoint")
        model.load_state_dict(state["state_dict"])
        step = int(state["step"])
        if stages:
            stage_idx, stage_step, history = int(state["stage"]), int(state["stage_step"]), list(state["history"])
    files = training_files(cfg.data)
    in_channels = model_in_channels(model)
    data = GridDataset(files, in_channels, augment=True, seed=cfg.seed + step,
                       max_files=cfg.max_files or None, crop_width=cfg.crop_width,
                       intensity_gain_log2=cfg.intensity_gain_log2)
    batches = None
    if cfg.loader_workers > 0:  # workers fork before anything touches the GPU
        stream = _BatchStream(files, in_channels, cfg.batch_size, cfg.seed + step, cfg.max_files, cfg.crop_width,
                              cfg.intensity_gain_log2)
        batches = iter(torch.utils.data.DataLoader(
            stream, batch_size=None, num_workers=cfg.loader_workers, pin_memory=device.type == "cuda",
            prefetch_factor=4, persistent_workers=False))
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    renderer = load_renderer(_resolve(cfg.renderer)).to(device) if cfg.renderer else None
    real = None
    if cfg.real_grids:
        real_np = np.load(_resolve(cfg.real_grids))
        # Real scans keep their measured intensity; only synthetic ones are rendered.
        real = torch.from_numpy(np.stack([to_input(g, in_channels) for g in real_np])).to(device)
    if cfg.real_bn_mix < 0 or (cfg.real_bn_mix and real is None):
        raise ValueError("--real-bn-mix N needs N >= 0 and, above 0, the unlabelled real grids (--real-grids)")
    weights = torch.tensor(parse_class_weights(cfg.class_weights), device=device)
    rng = np.random.default_rng(cfg.seed + 1000 + step)
    # The batch draws and the augmentation (DataLoader workers keep their own: such a run draws
    # fresh batches after a resume).
    # The real grids of --real-bn-mix come from their own stream, so that the synthetic batches are
    # those of the same run without it.
    mix_rng = np.random.default_rng(cfg.seed + 2000 + step)
    generators = {"batches": rng, "augment": data.rng, "real_mix": mix_rng}
    if state is not None and "rng" in state:  # last: building and loading above draw from them too
        restore_rng(state["rng"], generators)
    budget = TimeBudget(cfg.max_minutes)
    model.train()
    bar = Progress(cfg.name, total_steps, step, log_path, fresh=state is None, enabled=progress)
    last: dict = {}

    def make_optimizer(lr: float, steps: int):
        if cfg.optimizer == "adam":  # converges in far fewer steps than the release's SGD on a CPU budget
            opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=K.WEIGHT_DECAY)
        else:
            opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=K.MOMENTUM, weight_decay=K.WEIGHT_DECAY)
        # Step decay as in the release (halve the rate), scaled to our much shorter schedules.
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=max(steps // 3, 1), gamma=0.5)

    def checkpoint(opt, sched, **stage_state) -> None:
        save_checkpoint(ckpt_path, model=model, optimizer=opt, scheduler=sched, step=step, config=cfg,
                        generators=generators, **stage_state)

    def run(opt, sched, done: int, steps: int, stage_budget: TimeBudget, stage_state: dict | None) -> StepsDone:
        """Train until `steps` steps of this stage are done or its budget is spent."""
        nonlocal last

        def one_step(done: int) -> dict:
            nonlocal step
            if batches is not None:
                x, y = next(batches)
            else:
                if step % 50 == 0 and not cfg.max_files:  # pick up frames a running generator adds
                    data.refresh(training_files(cfg.data))
                idx = rng.integers(0, len(data), cfg.batch_size)
                x_np, y_np = data.batch(idx)
                x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if renderer is not None:
                x = apply_rendered_intensity(renderer, x)
            valid = (x[:, 4] > 0).to(torch.float32)
            mixed_real = None
            if cfg.real_bn_mix > 0:
                mixed_real = real_mix_batch(real, cfg.real_bn_mix, mix_rng, x.shape[3])
                both = segment_logits(model, torch.cat([x, mixed_real]), cfg.crf, cfg.precision, cfg.channels_last)
                logits, mixed_real_logits = both[:len(x)], both[len(x):]
            else:
                logits = segment_logits(model, x, cfg.crf, cfg.precision, cfg.channels_last)
            if loss_name == "focal":
                loss = focal_loss(logits, y, valid, class_weights=weights)
            else:
                loss = weighted_cross_entropy(logits, y, valid, class_weights=weights)
            gca = torch.zeros((), device=device)
            if mixed_real is not None and cfg.gca_lambda > 0:  # the mixed batch's real grids serve GCA too
                gca = geodesic_correlation_loss(flatten_valid(logits, x), flatten_valid(mixed_real_logits, mixed_real))
            elif real is not None and cfg.gca_lambda > 0:
                xr = real_mix_batch(real, max(cfg.batch_size // 2, 1), rng, x.shape[3])
                real_logits = segment_logits(model, xr, cfg.crf, cfg.precision, cfg.channels_last)
                gca = geodesic_correlation_loss(flatten_valid(logits, x), flatten_valid(real_logits, xr))
            total = loss + cfg.gca_lambda * gca if real is not None else loss
            opt.zero_grad()
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), K.MAX_GRAD_NORM)
            opt.step()
            sched.step()
            step += 1
            record = {"step": step, "loss": loss.item(), "gca": gca.item(), "lr": sched.get_last_lr()[0],
                      "elapsed_s": round(budget.elapsed_s(), 1)}
            if stage_state is not None:
                record["stage"] = stages[stage_state["stage"]].label
                stage_state["stage_step"] = done + 1
            return record

        ran = run_steps(one_step, done=done, until=steps, budget=stage_budget, progress=bar, cfg=cfg,
                        save=lambda ending: checkpoint(opt, sched, **(stage_state or {})))
        last = ran.last or last
        return ran

    stopped_by = "steps"
    try:
        if not stages:
            opt, sched = make_optimizer(cfg.lr, cfg.steps)
            if state is not None and state.get("optimizer") is not None:
                opt.load_state_dict(state["optimizer"])
                sched.load_state_dict(state["scheduler"])
            stopped_by = run(opt, sched, step, cfg.steps, budget, None).stopped_by
            checkpoint(opt, sched)
        else:
            from ...accelerator.quant import progressive_quantize, shared_scale

            # The budget is split over the stages still to run in proportion to their remaining
            # steps (the deadlines are cumulative: time a stage leaves unused goes to the next),
            # so a run cut by max_minutes still reaches the last precision.
            remaining = [st.steps - (stage_step if i == stage_idx else 0) for i, st in enumerate(stages)][stage_idx:]
            budget_s = budget.deadline - budget.start
            deadlines = [budget.start + budget_s * sum(remaining[:k + 1]) / max(sum(remaining), 1)
                         if budget_s != float("inf") else float("inf") for k in range(len(remaining))]
            todo = iter(range(stage_idx, len(stages)))
            resumed = {"stage": stage_idx, "stage_step": stage_step}

            def fine_tune(net, bits) -> dict:
                nonlocal stopped_by
                i = next(todo)
                st = stages[i]
                opt, sched = make_optimizer(st.lr or cfg.lr, st.steps)
                done = 0
                if i == resumed["stage"] and resumed["stage_step"] > 0 and state is not None \
                        and state.get("optimizer") is not None:
                    opt.load_state_dict(state["optimizer"])
                    sched.load_state_dict(state["scheduler"])
                    done = resumed["stage_step"]
                stage_state = {"stage": i, "stage_step": done, "schedule": schedule_text, "history": history}
                ran = run(opt, sched, done, st.steps, TimeBudget.until(deadlines[i - stage_idx], budget.start),
                          stage_state)
                done = ran.done
                if ran.stopped_by == "minutes":
                    stopped_by = "minutes"
                record = {"stage": st.label, "wbits": st.wbits, "abits": st.abits, "steps": done,
                          "planned_steps": st.steps, "stopped_by": ran.stopped_by,
                          "last_loss": last.get("loss"), "end_step": step,
                          "s": None if st.abits >= FLOAT_BITS else shared_scale(net)}
                if st.is_float:  # the float reference of the quantized model (seg eval --models <name>_fp32)
                    fp32_meta = {"arch": cfg.arch, "loss": loss_name, "steps": step, "batch_size": cfg.batch_size,
                                 "train_files": len(data), "data": cfg.data, "config": asdict(cfg), "last": last,
                                 "quant": {"precision": "fp32", "stage_of": cfg.name, "schedule": schedule_text}}
                    saved = save_weights(model, f"{cfg.name}_fp32", fp32_meta,
                                         path=out.with_name(f"{out.stem}_fp32{out.suffix}"))
                    # recorded relative to the project when inside it, so the meta holds no machine's path
                    root = project_root().resolve()
                    record["weights"] = str(saved.resolve().relative_to(root)
                                            if saved.resolve().is_relative_to(root) else saved)
                history.append(record)
                # The next stage starts afresh (new optimiser) from this network.
                checkpoint(None, None, stage=i + 1, stage_step=0, schedule=schedule_text, history=history)
                return record

            progressive_quantize(model, fine_tune, [(st.wbits, st.abits) for st in stages[stage_idx:]])
    finally:
        bar.close()
        batches = None  # stops the loader's workers
    meta = {"arch": cfg.arch, "loss": loss_name, "steps": step, "batch_size": cfg.batch_size,
            "train_files": len(data), "data": cfg.data, "config": asdict(cfg), "last": last}
    model = model.to(memory_format=torch.contiguous_format).cpu()
    if stages:
        from ...accelerator.quant import precision, shared_scale

        wbits, abits = precision(model)
        meta["quant"] = {"precision": "fp32" if wbits >= FLOAT_BITS and abits >= FLOAT_BITS else f"w{wbits}a{abits}",
                         "schedule": schedule_text, "s": shared_scale(model), "stages": history,
                         "fp32_weights": next((r["weights"] for r in history if r.get("weights")), None)}
    saved = save_weights(model.eval(), cfg.name, meta, path=out)
    bar.summary(step, stopped_by, budget.elapsed_s(), last.get("loss"), weights=saved, checkpoint=ckpt_path,
                log=log_path)
    if stages:
        print(f"{cfg.name}: {meta['quant']['precision']}; float stage: {meta['quant']['fp32_weights']}")
    return saved


def train_renderer(name: str, real_grids: np.ndarray, steps: int = 300, batch_size: int = 4,
                   minutes: float = 10.0, lr: float = 1e-3, threads: int = 1, progress: bool = True,
                   seed: int = 0, init: str = "", crop_width: int = 0) -> Path:
    """Self-supervised intensity rendering on unlabelled real grids (x, y, z, range -> intensity).
    `init` continues from earlier renderer weights; `crop_width` trains on random width crops."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    torch.set_num_threads(max(threads, 1))
    net = build_intensity_renderer()
    prior_steps = 0
    if init:
        from ...backends import load_state_dict

        net.load_state_dict(load_state_dict(_resolve(init)))
        prior_steps = int(torch.load(_resolve(init), map_location="cpu", weights_only=False)
                          .get("meta", {}).get("steps", 0))
    net.train()
    inputs = torch.from_numpy(np.stack([to_input(g, 5) for g in real_grids]))
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=K.WEIGHT_DECAY)
    rng = np.random.default_rng(seed + prior_steps)
    t0 = time.perf_counter()
    losses = []
    step = 0
    for step in tqdm(range(1, steps + 1), desc=f"train {name}", disable=not progress):
        x = inputs[torch.from_numpy(rng.integers(0, len(inputs), batch_size))]
        if crop_width and crop_width < x.shape[3]:
            start = int(rng.integers(0, x.shape[3] - crop_width + 1))
            x = x[..., start:start + crop_width]
        if rng.random() < 0.5:
            x = torch.flip(x, dims=[3])
            x[:, 1] *= -1
        valid = (x[:, 4] > 0).to(torch.float32)
        loss = intensity_hybrid_loss(net(x), x[:, 3], valid)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), K.MAX_GRAD_NORM)
        opt.step()
        losses.append(loss.item())
        if time.perf_counter() - t0 > minutes * 60:
            break
    net.eval()
    with torch.no_grad():
        valid = inputs[:, 4] > 0
        raw = torch.cat([net(inputs[i:i + 4]) for i in range(0, len(inputs), 4)])
        mse = float(((render_intensity(raw) - inputs[:, 3])[valid] ** 2).mean())
        mse_argmax = float(((render_intensity(raw, mode="argmax") - inputs[:, 3])[valid] ** 2).mean())
        mse_mean = float(((inputs[:, 3][valid] - inputs[:, 3][valid].mean()) ** 2).mean())
    history = []
    if init:
        prev = torch.load(_resolve(init), map_location="cpu", weights_only=False).get("meta", {})
        history = prev.get("history") or [f"{prev.get('steps', '?')} steps SGD lr 0.01, batch 4, full width"]
    history.append(f"{step} steps Adam lr {lr:g}, batch {batch_size}, width {crop_width or 512}")
    meta = {"arch": "intensity_renderer", "steps": prior_steps + step, "crop_width": crop_width, "history": history, "real_grids": int(len(real_grids)),
            "train_mse": mse, "train_mse_argmax": mse_argmax, "predict_mean_mse": mse_mean, "last_loss": losses[-1] if losses else None}
    out = save_weights(net, name, meta)
    print(f"saved {out}: rendering MSE {mse:.4f} on its own real grids (constant-mean MSE {mse_mean:.4f})")
    return out
