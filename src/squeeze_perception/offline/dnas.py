"""DNAS (thesis 8.3, 8.6, Algorithm 3): an FBNet layer-wise search over the SqueezeSeg-like
macro-architecture of segmentation/searched_net.py, for a latency target.

Stochastic super net: every searchable layer holds all its candidate blocks (Table 8.6, skip
where shapes allow) and computes x_{l+1} = sum_i m_{l,i} b_{l,i}(x_l) (eq. 8.16) with
m_l = GumbelSoftmax(theta_l, tau) (eqs. 8.7/8.17), one draw per forward pass. The temperature
follows tau = T0 exp(-eta * epoch) (eq. 8.9). Loss (eq. 8.18): CE * alpha * log(LAT)^beta, LAT
in microseconds from the target's lookup table (eq. 8.20, differentiable in m); alpha is set so
that the latency factor starts at 1 (the thesis's role for the coefficient of eq. 8.15).
Algorithm 3: the search data is split into X_w (weights, SGD with momentum) and X_theta
(architecture, Adam); theta trains only after `warmup` epochs; architectures are then sampled
from P_theta, trained from scratch on X_train and tested on X_test, and measured on every target
(Table 8.9: each searched net on its own target and the others).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..interfaces import CLASS_NAMES
from ..segmentation import constants as K
from ..segmentation.searched_net import (Decoder, MacroArch, SearchedSegNet, Stem, TINY_MACRO, make_block,
                                         stage_ends)
from . import ddp
from .common import (device, evaluate, model_size, progress, schedule_after_first_epoch, segmentation_loss,
                     train_segmenter)
from .data import SegSamples
from .latency import LatencyTable


class MixedLayer(nn.Module):
    """All candidate blocks of one layer and their architecture logits theta_l."""

    def __init__(self, slot):
        super().__init__()
        self.slot = slot
        self.names = slot.candidates
        self.candidates = nn.ModuleList(make_block(slot.cin, slot.cout, slot.stride, n) for n in self.names)
        self.theta = nn.Parameter(torch.zeros(len(self.names)))  # uniform P_theta at the start

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return sum(m * b(x) for m, b in zip(mask, self.candidates))


class SuperNet(nn.Module):
    def __init__(self, macro: MacroArch, table: LatencyTable):
        super().__init__()
        self.macro = macro
        self.in_channels = macro.in_channels
        slots = macro.slots()
        self.stem = Stem(macro)
        self.layers = nn.ModuleList(MixedLayer(s) for s in slots)
        self.ends = stage_ends(slots)
        self.decoder = Decoder(macro)
        for i, s in enumerate(slots):
            self.register_buffer(f"lat_{i}", table.layer(s))
        self.fixed_us = table.fixed_us
        self.tau = 5.0
        self.last_latency_us = torch.tensor(0.0)

    def arch_parameters(self) -> list[nn.Parameter]:
        return [layer.theta for layer in self.layers]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, full_skip = self.stem(x)
        feats, latency = [h], torch.tensor(self.fixed_us, device=x.device)
        for i, layer in enumerate(self.layers):
            mask = F.gumbel_softmax(layer.theta, tau=self.tau, hard=False)
            latency = latency + (mask * getattr(self, f"lat_{i}")).sum()  # eq. 8.20
            h = layer(h, mask)
            if i in self.ends:
                feats.append(h)
        self.last_latency_us = latency
        return self.decoder(feats, full_skip)

    def probabilities(self) -> list[list[float]]:
        return [torch.softmax(layer.theta.detach().cpu(), 0).tolist() for layer in self.layers]

    def most_likely(self) -> list[str]:
        return [layer.names[int(layer.theta.argmax())] for layer in self.layers]

    def sample(self, rng: np.random.Generator) -> list[str]:
        return [layer.names[int(rng.choice(len(p), p=np.asarray(p) / sum(p)))]
                for layer, p in zip(self.layers, self.probabilities())]


def latency_aware_loss(ce: torch.Tensor, latency_us: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Eq. 8.18: CE(a, w_a) * alpha * log(LAT(a))^beta."""
    return ce * alpha * torch.log(latency_us) ** beta


def temperature(epoch: int, t0: float, eta: float) -> float:
    """Eq. 8.9: tau = T0 exp(-eta * epoch)."""
    return t0 * math.exp(-eta * epoch)


@dataclass
class SearchConfig:
    epochs: int = 90
    warmup: int = 10  # epochs of weight training before theta moves (N_warmup)
    batch_size: int = 8
    w_lr: float = 0.05  # SGD with momentum on the weights (thesis)
    theta_lr: float = 0.01  # Adam on theta
    t0: float = 5.0
    eta: float = 0.045  # tau falls to ~T0/60 over 90 epochs
    beta: float = 0.6
    w_fraction: float = 0.8  # X_w : X_theta = 80 : 20 (thesis)
    seed: int = 0
    max_minutes: float = 0.0  # > 0: stop the search after this long (the schedule stays the planned one)


def search(samples: SegSamples, table: LatencyTable, macro: MacroArch, cfg: SearchConfig,
           show_progress: bool = True) -> dict:
    """Train the stochastic super net (Algorithm 3, first loop). Returns theta's history and the
    final distribution; the super net is in result['supernet']."""
    torch.manual_seed(cfg.seed)
    x_w, x_theta = samples.split((cfg.w_fraction, 1 - cfg.w_fraction), seed=cfg.seed)
    net = SuperNet(macro, table).to(device())
    model = ddp.wrap(net)
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=cfg.w_lr, momentum=0.9, weight_decay=K.WEIGHT_DECAY)
    theta_opt = torch.optim.Adam(net.arch_parameters(), lr=cfg.theta_lr, weight_decay=5e-4)
    uniform_us = table.fixed_us + sum(float(getattr(net, f"lat_{i}").mean()) for i in range(len(net.layers)))
    alpha = 1.0 / math.log(uniform_us) ** cfg.beta  # latency factor 1 at the uniform distribution
    rng = np.random.default_rng(cfg.seed)
    history, t_start = [], time.perf_counter()
    epochs, warmup, eta = cfg.epochs, cfg.warmup, cfg.eta
    per_epoch = -(-len(x_w) // cfg.batch_size) + -(-len(x_theta) // cfg.batch_size)
    with progress(f"DNAS search ({table.target})", cfg.epochs * per_epoch, show_progress) as advance:
        epoch = 0
        while epoch < epochs:
            if epoch == 1 and cfg.max_minutes > 0:  # fit the schedule to the budget
                epochs, warmup = schedule_after_first_epoch(cfg.epochs, cfg.warmup, time.perf_counter() - t_start,
                                                            len(x_w), len(x_theta), cfg.max_minutes)
                eta = cfg.eta * cfg.epochs / epochs  # the same final temperature, reached sooner
            net.tau = temperature(epoch, cfg.t0, eta)
            stats = {"epoch": epoch, "tau": net.tau}
            for phase, data, opt in (("w", x_w, w_opt), ("theta", x_theta, theta_opt)):
                if phase == "theta" and epoch < warmup:
                    advance(-(-len(data) // cfg.batch_size))
                    continue
                for x, y in data.batches(cfg.batch_size, rng):
                    x, y = ddp.shard(x.to(device()), y.to(device()))
                    ce = segmentation_loss(model(x), x, y)
                    loss = latency_aware_loss(ce, net.last_latency_us, alpha, cfg.beta)
                    w_opt.zero_grad()
                    theta_opt.zero_grad()
                    loss.backward()
                    if phase == "w":
                        torch.nn.utils.clip_grad_norm_(net.weight_parameters(), K.MAX_GRAD_NORM)
                    opt.step()
                    stats[f"{phase}_ce"] = float(ce.detach())
                    stats[f"{phase}_latency_us"] = float(net.last_latency_us.detach())
                    advance(ce=stats[f"{phase}_ce"], lat_us=stats[f"{phase}_latency_us"], tau=net.tau)
            stats["most_likely"] = net.most_likely()
            history.append(stats)
            epoch += 1
    return {"supernet": net, "history": history, "alpha": alpha, "search_s": time.perf_counter() - t_start,
            "probabilities": net.probabilities(), "most_likely": net.most_likely()}


def sample_architectures(net: SuperNet, n: int, seed: int = 0) -> list[list[str]]:
    """The most likely architecture first, then up to n-1 further distinct draws from P_theta."""
    rng = np.random.default_rng(seed)
    archs = [net.most_likely()]
    for _ in range(20 * n):
        if len(archs) >= n:
            break
        a = net.sample(rng)
        if a not in archs:
            archs.append(a)
    return archs


def train_from_scratch(choices: list[str], macro: MacroArch, train: SegSamples, test: SegSamples, epochs: int,
                       batch_size: int, seed: int = 0, show_progress: bool = True,
                       max_minutes: float = 0.0) -> tuple[SearchedSegNet, dict]:
    """Algorithm 3, second loop: a sampled architecture trained from scratch and tested."""
    torch.manual_seed(seed)
    net = SearchedSegNet(choices, macro)
    fit = train_segmenter(net, train, epochs, batch_size, seed=seed, show_progress=show_progress,
                          description="train " + ",".join(choices), max_minutes=max_minutes)
    return net, {**evaluate(net, test), "train_loss": fit["loss"], "train_s": fit["train_s"],
                 "train_steps": fit["steps"]}


@dataclass
class DnasRun:
    """What `squeeze-perception offline dnas` runs (tiny=True: the test-suite size)."""

    targets: tuple[str, ...] = ("onnxruntime", "synetgy")
    data: str = ""  # lidar_2d folder; empty: toy scenes
    samples: int = 400
    height: int = 64
    width: int = 512
    tiny: bool = False
    search_epochs: int = 90
    warmup: int = 10
    train_epochs: int = 30
    batch_size: int = 8
    archs_per_target: int = 2
    beta: float = 0.6
    theta_lr: float = 0.01
    repeats: int = 20
    seed: int = 0
    out: str = "out/offline/dnas"
    save_models: bool = True
    tables: str = ""  # folder of latency_<target>.json measured earlier (on the target machine)
    measure: bool = True  # time every trained net end to end on every target (off on a foreign machine)
    search_minutes: float = 0.0  # > 0: time budget of each search
    train_minutes: float = 0.0  # > 0: time budget of each from-scratch training

    def shrink(self) -> "DnasRun":
        """The small size the tests run: 16 x 64 toy grids, the tiny macro-architecture."""
        return DnasRun(**{**asdict(self), "samples": 24, "height": 16, "width": 64, "search_epochs": 4,
                          "warmup": 1, "train_epochs": 2, "batch_size": 4, "archs_per_target": 1, "repeats": 3})


def run_dnas(run: DnasRun, tables: dict[str, LatencyTable] | None = None, show_progress: bool = True,
             command: str = "") -> dict:
    """Latency tables -> search per target -> sampled architectures trained from scratch -> each
    measured on every target. `tables` (target -> table) skips measuring (tests, reruns)."""
    from .data import load_samples
    from .latency import build_table, measure_architecture_us

    macro = TINY_MACRO if run.tiny else MacroArch()
    if run.width % macro.width_divisor:
        raise ValueError(f"width {run.width} must be a multiple of {macro.width_divisor}")
    samples = load_samples(run.data, run.samples, run.height, run.width, run.seed)
    search_set, train_set, test_set = samples.split((0.4, 0.4, 0.2), seed=run.seed)
    tables = dict(tables or {})
    out = Path(run.out)
    if run.tables:  # tables measured on the target machine; the search itself may run elsewhere (a GPU)
        from .latency import LatencyTable, TARGETS

        for target in TARGETS:
            path = Path(run.tables) / f"latency_{target}.json"
            if target not in tables and path.exists():
                table = LatencyTable.load(path)
                if (table.height, table.width, table.macro) != (run.height, run.width, macro.to_dict()):
                    raise ValueError(f"{path}: measured for another input or macro-architecture")
                tables[target] = table
    for target in run.targets:
        if target not in tables:
            tables[target] = build_table(macro, run.height, run.width, target, run.repeats, show_progress)
            if ddp.is_main():
                tables[target].save(out / f"latency_{target}.json")
    results = {"config": asdict(run), "data": samples.source, "macro": macro.to_dict(), "targets": {}}
    cfg = SearchConfig(epochs=run.search_epochs, warmup=run.warmup, batch_size=run.batch_size, beta=run.beta,
                       theta_lr=run.theta_lr, seed=run.seed, eta=4.0 / max(run.search_epochs, 1),
                       max_minutes=run.search_minutes)
    for target in run.targets:
        found = search(search_set, tables[target], macro, cfg, show_progress)
        archs = sample_architectures(found["supernet"], run.archs_per_target, run.seed)
        trained = []
        for choices in archs:
            net, metrics = train_from_scratch(choices, macro, train_set, test_set, run.train_epochs,
                                              run.batch_size, run.seed, show_progress, run.train_minutes)
            net = net.cpu()  # measured, counted and saved on the CPU
            latency = {t: tables[t].architecture_us(choices) for t in tables}
            measured = {t: measure_architecture_us(net, run.height, run.width, t, run.repeats)
                        for t in tables} if run.measure and not run.tiny else {}
            entry = {"choices": choices, "metrics": metrics, "lut_latency_us": latency,
                     "measured_latency_us": measured, **model_size(net.eval(), (5, run.height, run.width))}
            if run.save_models and ddp.is_main():
                entry["weights"] = str(_save_searched(net, target, len(trained), entry, run, command))
            trained.append(entry)
        results["targets"][target] = {"most_likely": found["most_likely"], "probabilities": found["probabilities"],
                                      "alpha": found["alpha"], "search_s": found["search_s"],
                                      "search_epochs_done": len(found["history"]),
                                      "final_tau": found["history"][-1]["tau"], "architectures": trained}
    return results


def _save_searched(net: SearchedSegNet, target: str, k: int, entry: dict, run: DnasRun, command: str) -> Path:
    from .manifest import save_model_with_manifest

    name = f"squeezeseg_fbnet_{target.replace('-', '_')}{'_tiny' if run.tiny else ''}_{k}"
    return save_model_with_manifest(
        net, Path(run.out) / f"{name}.pt", name=name, task="segmentation",
        builder="squeeze_perception.segmentation.searched_net:build_searched_segnet",
        builder_kwargs={"choices": list(net.choices), "macro": net.macro.to_dict()},
        input_shape=(5, run.height, run.width), classes=CLASS_NAMES,
        metrics=entry["metrics"], latency_ms={f"{t} (lookup table)": v / 1e3 for t, v in entry["lut_latency_us"].items()}
        | {t: v / 1e3 for t, v in entry["measured_latency_us"].items()},
        command=command, extra={"searched_for": target})



def summary_rows(results: dict) -> list[list[str]]:
    """One row per searched architecture: target, blocks, mIoU, latency on every target."""
    targets = list(results["targets"])
    rows = []
    for target, res in results["targets"].items():
        for a in res["architectures"]:
            lat = a["measured_latency_us"] or a["lut_latency_us"]
            rows.append([target, " ".join(a["choices"]), f"{a['metrics']['mIoU']:.3f}",
                         f"{a['params']:,}", f"{a['macs'] / 1e6:.1f}"]
                        + [f"{lat[t] / 1e3:.2f}" for t in targets])
    return rows
