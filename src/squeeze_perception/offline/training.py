"""One training configuration and one loop for every model (issue #13).

`TrainConfig` names each setting the detector and the segmenter share once: `arch`, `data`,
`out`, `steps`, `batch_size`, `lr`, `optimizer`, `max_minutes`, `checkpoint_every`, `log_every`,
`log_file`, `seed`, `resume`, `init_weights`, `threads`, `precision`, `channels_last`, `device`,
`loader_workers`, `crop_width`. Each model's config (detection/train.py `DetTrainConfig`,
segmentation/train.py `SegTrainConfig`) subclasses it with its own defaults and knobs.

The machinery both training loops run on:
  seed_everything      python, numpy and torch generators from one seed
  save_checkpoint      network, optimiser (+ scheduler), step, config and every RNG state, CPU
  load_checkpoint      tensors only, written atomically; a resumed run continues the same stream
  TimeBudget           the wall-clock limit (max_minutes), checked before each step
  Progress             tqdm bar + JSON-lines log file, and the summary line a run ends with
  run_steps            step / log / checkpoint cadence around a model's own step function
  add_train_arguments  the shared command-line flags (old spellings kept as aliases)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

PRECISIONS = ("fp32", "bf16")
OPTIMIZERS = ("adam", "sgd")


@dataclass
class TrainConfig:
    arch: str = ""  # the network: a registered detection model, or a segmentation architecture
    data: str = ""  # training set folder
    out: str = ""  # weights file written (and rewritten at every checkpoint); "" -> models/<arch>.pt
    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | sgd
    max_minutes: float = 0.0  # wall-clock budget; 0 = none. The run stops after a checkpoint.
    checkpoint_every: int = 50
    log_every: int = 10
    log_file: str = ""  # "" -> the model's default place beside its checkpoint
    seed: int = 0
    resume: bool = False  # continue from the checkpoint when there is one
    init_weights: str = ""  # start from these weights with a fresh optimiser
    threads: int = 1
    # bf16 autocast for the network (losses stay in fp32); channels_last layout for the CNN
    precision: str = "fp32"
    channels_last: bool = False
    # cpu | cuda[:N]: where the network trains; checkpoints hold CPU tensors, so a run may
    # resume on another device
    device: str = "cpu"
    loader_workers: int = 0  # > 0: batches made by a torch DataLoader in that many processes
    crop_width: int = 0  # train on random crops this wide (0: the full input)

    def weights_path(self) -> Path:
        if self.out:
            return Path(self.out)
        from ..paths import models_dir

        return models_dir() / f"{self.arch}.pt"

    @property
    def name(self) -> str:
        """The trained model's name: the weights file's stem (models/<name>.pt)."""
        return self.weights_path().stem

    def check(self) -> None:
        """Refuse settings every model refuses (before anything is built or loaded)."""
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be {' or '.join(PRECISIONS)}, got '{self.precision}'")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer '{self.optimizer}' ({' | '.join(OPTIMIZERS)})")
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise ValueError(f"device must be cpu or cuda[:N], got '{self.device}'")
        if self.steps < 0 or self.batch_size < 1 or self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("steps >= 0, batch_size, checkpoint_every and log_every >= 1 are needed")


# ------------------------------------------------------------------------------ command line
def add_train_arguments(parser: argparse.ArgumentParser, defaults: TrainConfig,
                        aliases: dict[str, tuple[str, ...]] | None = None,
                        help_: dict[str, str] | None = None) -> None:
    """The shared flags, spelled as the TrainConfig fields; `aliases` keeps a model's old
    spellings (e.g. {"--max-minutes": ("--minutes",)}), `help_` overrides a flag's help."""
    aliases, help_ = aliases or {}, help_ or {}

    def add(flag: str, text: str, **kw) -> None:
        parser.add_argument(flag, *aliases.get(flag, ()), help=help_.get(flag, text), **kw)

    d = defaults
    add("--arch", "network to train", default=d.arch)
    add("--data", "training set folder", default=d.data)
    add("--out", "weights file (default models/<arch or name>.pt)", default=d.out)
    add("--steps", "optimiser steps", type=int, default=d.steps)
    add("--batch-size", "frames per step", type=int, default=d.batch_size)
    add("--lr", "learning rate", type=float, default=d.lr)
    add("--optimizer", "optimiser", choices=OPTIMIZERS, default=d.optimizer)
    add("--max-minutes", "wall-clock budget in minutes (0: none); the run stops after a checkpoint and "
        "continues with --resume", type=float, default=d.max_minutes)
    add("--checkpoint-every", "steps between checkpoints (optimiser, step and RNG state; weights too)",
        type=int, default=d.checkpoint_every)
    add("--log-every", "steps between lines of the JSON-lines training log", type=int, default=d.log_every)
    add("--log-file", "training log (default beside the checkpoint)", default=d.log_file)
    add("--seed", "seed of every random generator of the run", type=int, default=d.seed)
    add("--resume", "continue from the checkpoint when there is one (--no-resume: start afresh)",
        action=argparse.BooleanOptionalAction, default=d.resume)
    add("--init-weights", "start from these weights with a fresh optimiser", default=d.init_weights)
    add("--threads", "torch CPU threads", type=int, default=d.threads)
    add("--precision", "bf16 autocast for the network (losses in fp32)", choices=PRECISIONS, default=d.precision)
    add("--channels-last", "channels_last layout for the CNN (--no-channels-last: NCHW)",
        action=argparse.BooleanOptionalAction, default=d.channels_last)
    add("--device", "torch device to train on (cpu, cuda, cuda:1, ...); checkpoints hold CPU tensors",
        default=d.device)
    add("--loader-workers", "data-loading processes (0: in the training process)", type=int,
        default=d.loader_workers)
    add("--crop-width", "train on random crops this wide (0: the full input)", type=int, default=d.crop_width)


def config_from_args(cls: type[TrainConfig], args: argparse.Namespace, **overrides) -> TrainConfig:
    """cls(...) from the parsed flags whose names are its fields, then `overrides`."""
    names = {f.name for f in fields(cls)}
    values = {k: v for k, v in vars(args).items() if k in names}
    return cls(**{**values, **overrides})


# ------------------------------------------------------------------------------ randomness
def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(generators: dict[str, Any] | None = None) -> dict:
    """Every generator a step may draw from: python, numpy's global, torch's (CPU and CUDA) and
    the run's own numpy Generators / torch Generators by name."""
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    named = {}
    for name, g in (generators or {}).items():
        named[name] = g.bit_generator.state if isinstance(g, np.random.Generator) else g.get_state().cpu()
    state["generators"] = named
    return state


def restore_rng(state: dict, generators: dict[str, Any] | None = None) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, g in (generators or {}).items():
        saved = state.get("generators", {}).get(name)
        if saved is None:
            continue
        if isinstance(g, np.random.Generator):
            g.bit_generator.state = saved
        else:
            g.set_state(saved)


# ------------------------------------------------------------------------------ checkpoints
def to_cpu(obj):
    """The same nested dicts / lists with every tensor on the CPU (checkpoints load anywhere)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def save_checkpoint(path: Path, *, model, optimizer, step: int, config: TrainConfig | dict, scheduler=None,
                    generators: dict[str, Any] | None = None, **extra) -> None:
    """Everything a run needs to continue as if never stopped. Written to a temporary file and
    renamed, so a run killed while saving keeps its previous checkpoint."""
    import torch

    state = {"state_dict": to_cpu(model.state_dict()),
             "optimizer": None if optimizer is None else to_cpu(optimizer.state_dict()),
             "scheduler": None if scheduler is None else scheduler.state_dict(),
             "step": int(step), "rng": rng_state(generators),
             "config": asdict(config) if is_dataclass(config) else dict(config), **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


# Keys of the segmentation checkpoints written before the shared format
_OLD_KEYS = {"model": "state_dict", "opt": "optimizer", "sched": "scheduler"}


def load_checkpoint(path: Path) -> dict:
    """A checkpoint of save_checkpoint (or of a segmentation run from before it) on the CPU."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=False)
    for old, new in _OLD_KEYS.items():
        if old in state and new not in state:
            state[new] = state.pop(old)
    return state


# ------------------------------------------------------------------------------ time and progress
class TimeBudget:
    """The wall-clock limit of a run (or of one stage of it): `spent()` once the deadline passed."""

    def __init__(self, max_minutes: float = 0.0, start: float | None = None):
        self.start = time.monotonic() if start is None else start
        self.deadline = self.start + max_minutes * 60 if max_minutes > 0 else float("inf")

    @classmethod
    def until(cls, deadline: float, start: float) -> "TimeBudget":
        budget = cls(0.0, start)
        budget.deadline = deadline
        return budget

    def spent(self) -> bool:
        return time.monotonic() >= self.deadline

    def elapsed_s(self) -> float:
        return time.monotonic() - self.start


class Progress:
    """The tqdm bar and the JSON-lines log of a run; a fresh run truncates the log, a resumed
    one appends to it."""

    def __init__(self, name: str, total: int, initial: int, log_path: Path, fresh: bool, enabled: bool = True):
        from tqdm import tqdm

        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self.log = log_path.open("w" if fresh else "a")
        self.bar = tqdm(total=total, initial=initial, desc=f"train {name}", disable=not enabled)
        self.name = name

    def step(self, record: dict, write: bool) -> None:
        self.bar.update(1)
        if "loss" in record:
            self.bar.set_postfix(loss=f"{record['loss']:.4f}")
        if write:
            self.write(record)

    def write(self, record: dict) -> None:
        self.log.write(json.dumps(record) + "\n")
        self.log.flush()

    def note(self, text: str) -> None:
        self.bar.write(text)

    def close(self) -> None:
        self.bar.close()
        self.log.close()

    def summary(self, steps: int, stopped_by: str, elapsed_s: float, last_loss: float | None, **paths) -> str:
        loss = "n/a" if last_loss is None else f"{last_loss:.4f}"
        where = ", ".join(f"{k} {v}" for k, v in paths.items())
        line = (f"train {self.name}: {steps} steps (stopped by {stopped_by}) in {elapsed_s / 60:.1f} min, "
                f"last loss {loss}; {where}")
        print(line)
        return line


@dataclass
class StepsDone:
    done: int  # steps of this call's range done (its `until` when it ran to the end)
    stopped_by: str  # "steps" | "minutes" | "target" (after_step said its target was reached)
    last: dict  # the last step's record


def run_steps(step_fn: Callable[[int], dict], *, done: int, until: int, budget: TimeBudget, progress: Progress,
              cfg: TrainConfig, save: Callable[[bool], None],
              after_step: Callable[[dict, bool], bool | None] | None = None) -> StepsDone:
    """Call step_fn(done) until `until` steps are done or the budget is spent. step_fn makes one
    optimiser step and returns its log record ({"step": the run's step count, "loss": ...}).
    The record goes to the log every cfg.log_every run steps and at the end; after_step(record,
    ending) may evaluate, and stops the run by returning True (a target reached: the run is
    checkpointed and ends "by target"); save(ending) checkpoints every cfg.checkpoint_every run
    steps and at the end (the last step, the budget spent, or the target)."""
    last: dict = {}
    while done < until and not budget.spent():
        last = step_fn(done)
        done += 1
        ending = done >= until or budget.spent()
        progress.step(last, write=last["step"] % cfg.log_every == 0 or ending)
        reached = bool(after_step(last, ending)) if after_step is not None else False
        if last["step"] % cfg.checkpoint_every == 0 or ending or reached:
            save(ending or reached)
        if reached:
            return StepsDone(done, "target", last)
    return StepsDone(done, "steps" if done >= until else "minutes", last)


# ------------------------------------------------------------------------------ reading the logs
def read_log(path: str | Path) -> list[dict]:
    """The records of a JSON-lines training log (what Progress writes), blank lines skipped."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def running_mean(steps, values, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(steps, means) of every `window` consecutive values (window capped at their number),
    each mean placed at the step of its window's last value: a loss curve without the noise."""
    values = np.asarray(values, dtype=float)
    k = max(1, min(int(window), len(values)))
    means = np.convolve(values, np.ones(k) / k, mode="valid")
    return np.asarray(steps)[k - 1:], means
