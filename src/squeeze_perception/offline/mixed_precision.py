"""Mixed-precision DNAS (thesis 8.4/8.5): a bit-width for the weights and activations of every
convolution, searched with the same Gumbel-softmax super net as dnas.py.

Super net (Fig. 8.4): each convolution of a SearchedSegNet (except the first layer and the
classifier, kept at full precision as the thesis does) becomes a MixedPrecisionConv whose edges
are the same convolution at different (weight bits, activation bits); the edges share the latent
fp32 weight (one tensor instead of one per edge: the eq. 8.13/8.14 costs are unchanged and memory
is K times smaller) and each has its own PACT bound alpha. Quantizers: DoReFa weights (eq. 8.10)
and PACT activations (eq. 8.11) from accelerator/quant.py; inputs that can be negative (the
residual stream, decoder sums) use the symmetric form of PACT, clip to [-alpha, alpha].
0-bit weights (`cost=size`): a residual block can be skipped entirely; its gate has the edges
{keep, skip} and every convolution inside costs gate_keep times its edge cost.

Cost: eq. 8.13 (`size`: #params x weight bits, activations at 32) or eq. 8.14 (`flops`: #MACs x
weight bits x activation bits, with the pairs the thesis uses on ImageNet). Loss eqs. 8.12/8.15:
CE x beta (log Cost)^gamma, beta set so the factor starts at 1.
Sampled precision assignments are fine-tuned from the fp32 network (the thesis trains them from
scratch; on our budget the fp32 start converges in far fewer steps) and compared with it:
accuracy and compression (the 32-bit cost over the assignment's cost), as in Table 8.1.
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

from ..accelerator.quant import dorefa_int, levels, pact, quantize_activation, round_ste
from ..interfaces import CLASS_NAMES
from ..model_cost import conv_macs
from ..segmentation import constants as K
from ..segmentation.searched_net import InvertedResidual, MacroArch, SearchedSegNet, TINY_MACRO
from . import ddp
from .common import device, evaluate, progress, schedule_after_first_epoch, segmentation_loss, train_segmenter
from .data import SegSamples

FP = 32
# Weight-only search (eq. 8.13): the thesis's CIFAR candidates; 0 is the block gate below.
SIZE_CANDIDATES: tuple[tuple[int, int], ...] = ((1, FP), (2, FP), (3, FP), (4, FP), (8, FP), (FP, FP))
# Weights and activations (eq. 8.14): the thesis's ImageNet pairs.
FLOPS_CANDIDATES: tuple[tuple[int, int], ...] = ((1, 4), (2, 4), (3, 3), (4, 4), (8, 8), (FP, FP))


def quantize_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa (eq. 8.10) in [-1, 1]; batch norm after every convolution absorbs the scale."""
    return w if bits >= FP else dorefa_int(w, bits) / levels(bits)


class MixedPrecisionConv(nn.Module):
    def __init__(self, conv: nn.Conv2d, candidates: tuple[tuple[int, int], ...], signed_input: bool):
        super().__init__()
        self.conv, self.candidates, self.signed_input = conv, tuple(candidates), signed_input
        self.theta = nn.Parameter(torch.zeros(len(candidates)))
        self.alpha = nn.Parameter(torch.full((len(candidates),), 6.0 if not signed_input else 3.0))
        self.tau = 5.0
        self.choice: int | None = None  # fixed edge after the search
        self.gate: torch.Tensor | float = 1.0  # keep-probability of the enclosing block (0-bit option)
        self.macs = 0
        self.last_mask = torch.ones(1)

    @property
    def params(self) -> int:
        return self.conv.weight.numel()

    def edge(self, x: torch.Tensor, k: int) -> torch.Tensor:
        wbits, abits = self.candidates[k]
        xq = quantize_activation(x, abits, self.alpha[k].abs() + 1e-3, self.signed_input)
        c = self.conv
        return F.conv2d(xq, quantize_weight(c.weight, wbits), c.bias, c.stride, c.padding, c.dilation, c.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.choice is not None:
            self.last_mask = F.one_hot(torch.tensor(self.choice, device=self.theta.device),
                                       len(self.candidates)).float()
            return self.edge(x, self.choice)
        mask = F.gumbel_softmax(self.theta, tau=self.tau, hard=False)
        self.last_mask = mask
        return sum(m * self.edge(x, k) for k, m in enumerate(mask))

    def edge_costs(self, cost: str) -> torch.Tensor:
        dev = self.theta.device
        if cost == "size":  # eq. 8.13
            return torch.tensor([float(self.params * w) for w, _ in self.candidates], device=dev)
        return torch.tensor([float(self.macs * w * a) for w, a in self.candidates], device=dev)  # eq. 8.14

    def expected_cost(self, cost: str) -> torch.Tensor:
        return self.gate * (self.last_mask * self.edge_costs(cost)).sum()


class GatedBlock(nn.Module):
    """A residual block with the 0-bit option: out = x + m_keep * branch(x)."""

    def __init__(self, block: InvertedResidual):
        super().__init__()
        self.block = block
        self.theta = nn.Parameter(torch.tensor([1.0, 0.0]))  # (keep, skip), keep favoured at the start
        self.tau = 5.0
        self.choice: int | None = None
        self.last_keep: torch.Tensor | float = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.choice is not None:
            keep = torch.tensor(1.0 if self.choice == 0 else 0.0)
        else:
            keep = F.gumbel_softmax(self.theta, tau=self.tau, hard=False)[0]
        self.last_keep = keep
        for m in self.block.modules():
            if isinstance(m, MixedPrecisionConv):
                m.gate = keep
        if self.choice == 1:
            return x
        return x + keep * self.block.branch(x)


def _wrap_convs(net: SearchedSegNet, candidates, gate_blocks: bool) -> list[MixedPrecisionConv]:
    """Replace every convolution but the stem and the classifier (full precision, as in the thesis)."""
    wrapped = []

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in list(module.named_children()):
            path = f"{prefix}{name}"
            if isinstance(child, nn.Conv2d):
                if path.startswith("stem.") or path == "decoder.head":
                    continue
                # Post-ReLU inputs are non-negative: the depthwise and the projection of a block.
                signed = not (name in ("depthwise", "project"))
                mp = MixedPrecisionConv(child, candidates, signed)
                setattr(module, name, mp)
                wrapped.append(mp)
            else:
                visit(child, path + ".")

    visit(net, "")
    if gate_blocks:
        for i, layer in enumerate(net.layers):
            if isinstance(layer, InvertedResidual) and layer.residual:
                net.layers[i] = GatedBlock(layer)
    return wrapped


class MixedPrecisionNet(nn.Module):
    def __init__(self, base: SearchedSegNet, cost: str, input_shape: tuple[int, int, int]):
        super().__init__()
        if cost not in ("size", "flops"):
            raise ValueError(f"cost must be 'size' (eq. 8.13) or 'flops' (eq. 8.14), got '{cost}'")
        self.cost = cost
        self.net = base
        self.in_channels = base.in_channels
        candidates = SIZE_CANDIDATES if cost == "size" else FLOPS_CANDIDATES
        self.convs = _wrap_convs(base, candidates, gate_blocks=(cost == "size"))
        self.gates = [m for m in base.modules() if isinstance(m, GatedBlock)]
        self._measure_macs(input_shape)
        fixed = [m for m in base.modules() if isinstance(m, nn.Conv2d) and not any(m is c.conv for c in self.convs)]
        self.fixed_cost = float(sum(self._full_cost(m) for m in fixed))

    def _measure_macs(self, input_shape) -> None:
        hooks = []
        for m in self.convs:
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out: setattr(mod, "macs", conv_macs(mod.conv, inp, out))))
        self._fixed_macs: dict[int, int] = {}
        for m in self.net.modules():
            if isinstance(m, nn.Conv2d):
                hooks.append(m.register_forward_hook(
                    lambda mod, inp, out: self._fixed_macs.__setitem__(id(mod), conv_macs(mod, inp, out))))
        was = self.training
        self.eval()
        with torch.no_grad():
            for m in self.convs:
                m.choice = len(m.candidates) - 1
            self.net(torch.zeros((1, *input_shape), device=next(self.net.parameters()).device))
            for m in self.convs:
                m.choice = None
        self.train(was)
        for h in hooks:
            h.remove()

    def _full_cost(self, conv: nn.Conv2d) -> float:
        if self.cost == "size":
            return conv.weight.numel() * FP
        return self._fixed_macs.get(id(conv), 0) * FP * FP

    def set_tau(self, tau: float) -> None:
        for m in self.convs + self.gates:
            m.tau = tau

    def arch_parameters(self) -> list[nn.Parameter]:
        return [m.theta for m in self.convs + self.gates]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def expected_cost(self) -> torch.Tensor:
        return self.fixed_cost + sum(m.expected_cost(self.cost) for m in self.convs)

    def full_precision_cost(self) -> float:
        return self.fixed_cost + sum(float(m.edge_costs(self.cost)[-1]) for m in self.convs)

    # ---- precision assignments: per conv (w, a), per gate keep/skip
    def most_likely(self) -> dict:
        return {"convs": [int(m.theta.argmax()) for m in self.convs],
                "gates": [int(g.theta.argmax()) for g in self.gates]}

    def sample(self, rng: np.random.Generator) -> dict:
        def draw(theta):
            p = torch.softmax(theta.detach().cpu(), 0).numpy().astype(np.float64)
            return int(rng.choice(len(p), p=p / p.sum()))
        return {"convs": [draw(m.theta) for m in self.convs], "gates": [draw(g.theta) for g in self.gates]}

    def fix(self, assignment: dict) -> None:
        for m, k in zip(self.convs, assignment["convs"]):
            m.choice = k
        for g, k in zip(self.gates, assignment["gates"]):
            g.choice = k

    def assignment_cost(self, assignment: dict) -> float:
        keep = {}
        for g, k in zip(self.gates, assignment["gates"]):
            for m in g.block.modules():
                if isinstance(m, MixedPrecisionConv):
                    keep[id(m)] = 0.0 if k == 1 else 1.0
        return self.fixed_cost + sum(keep.get(id(m), 1.0) * float(m.edge_costs(self.cost)[k])
                                     for m, k in zip(self.convs, assignment["convs"]))

    def describe(self, assignment: dict) -> list[str]:
        """'w4a32'-style labels per convolution, '0' for convolutions of a skipped block."""
        skipped = set()
        for g, k in zip(self.gates, assignment["gates"]):
            if k == 1:
                skipped |= {id(m) for m in g.block.modules() if isinstance(m, MixedPrecisionConv)}
        return ["w0" if id(m) in skipped else f"w{m.candidates[k][0]}a{m.candidates[k][1]}"
                for m, k in zip(self.convs, assignment["convs"])]


def cost_weighted_loss(ce: torch.Tensor, cost: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """Eqs. 8.12 and 8.15: CE x beta (log Cost)^gamma."""
    return ce * beta * torch.log(cost) ** gamma


@dataclass
class MixedPrecisionRun:
    cost: str = "size"
    data: str = ""
    samples: int = 400
    height: int = 64
    width: int = 512
    tiny: bool = False
    choices: tuple[str, ...] = ()  # base architecture (default: k3_e3 everywhere)
    pretrain_epochs: int = 30
    search_epochs: int = 40
    warmup: int = 5
    finetune_epochs: int = 10
    archs: int = 4
    batch_size: int = 8
    gamma: float = 2.0
    theta_lr: float = 0.05
    seed: int = 0
    out: str = "out/offline/mixed_precision"
    save_models: bool = True
    pretrain_minutes: float = 0.0  # > 0: time budgets of the phases (a GPU lease is short)
    search_minutes: float = 0.0
    finetune_minutes: float = 0.0

    def shrink(self) -> "MixedPrecisionRun":
        return MixedPrecisionRun(**{**asdict(self), "samples": 16, "height": 16, "width": 64, "pretrain_epochs": 2,
                                    "search_epochs": 3, "warmup": 1, "finetune_epochs": 1, "archs": 2,
                                    "batch_size": 4})


def run_mixed_precision(run: MixedPrecisionRun, show_progress: bool = True, command: str = "") -> dict:
    from .data import load_samples

    torch.manual_seed(run.seed)
    macro = TINY_MACRO if run.tiny else MacroArch()
    choices = list(run.choices) or ["k3_e3"] * len(macro.slots())
    samples = load_samples(run.data, run.samples, run.height, run.width, run.seed)
    train_set, search_set, test_set = samples.split((0.5, 0.3, 0.2), seed=run.seed)
    shape = (5, run.height, run.width)
    base = SearchedSegNet(choices, macro)
    train_segmenter(base, train_set, run.pretrain_epochs, run.batch_size, seed=run.seed,
                    show_progress=show_progress, description="fp32 baseline", max_minutes=run.pretrain_minutes)
    full = evaluate(base, test_set)
    net = MixedPrecisionNet(base, run.cost, shape).to(device())
    # Snapshot after wrapping (the wrapped modules rename the parameters), restored strictly.
    fp32_state = {k: v.clone() for k, v in base.state_dict().items()}
    x_w, x_theta = search_set.split((0.7, 0.3), seed=run.seed)
    model = ddp.wrap(net)
    w_opt = torch.optim.Adam(net.weight_parameters(), lr=5e-4)
    theta_opt = torch.optim.Adam(net.arch_parameters(), lr=run.theta_lr)
    net.set_tau(5.0)
    with torch.no_grad():
        net(test_set.inputs[:1].to(device()))
    beta = 1.0 / math.log(float(net.expected_cost())) ** run.gamma  # factor 1 at the start
    rng = np.random.default_rng(run.seed)
    t0 = time.perf_counter()
    epochs, warmup, epochs_done = run.search_epochs, run.warmup, 0
    steps = run.search_epochs * (-(-len(x_w) // run.batch_size) + -(-len(x_theta) // run.batch_size))
    with progress(f"mixed-precision search ({run.cost})", steps, show_progress) as advance:
        epoch = 0
        while epoch < epochs:
            if epoch == 1 and run.search_minutes > 0:  # fit the schedule to the budget
                epochs, warmup = schedule_after_first_epoch(run.search_epochs, run.warmup, time.perf_counter() - t0,
                                                            len(x_w), len(x_theta), run.search_minutes)
            epochs_done += 1
            net.set_tau(5.0 * math.exp(-4.0 / max(epochs, 1) * epoch))  # eq. 8.9
            for phase, data, opt in (("w", x_w, w_opt), ("theta", x_theta, theta_opt)):
                for x, y in data.batches(run.batch_size, rng):
                    if phase == "theta" and epoch < warmup:
                        advance()
                        continue
                    x, y = ddp.shard(x.to(device()), y.to(device()))
                    ce = segmentation_loss(model(x), x, y)
                    cost = net.expected_cost()
                    loss = cost_weighted_loss(ce, cost, beta, run.gamma)
                    w_opt.zero_grad()
                    theta_opt.zero_grad()
                    loss.backward()
                    opt.step()
                    advance(ce=float(ce.detach()), comp=net.full_precision_cost() / float(cost.detach()))
            epoch += 1
    search_s = time.perf_counter() - t0
    assignments = [net.most_likely()]
    for _ in range(20 * run.archs):
        if len(assignments) >= run.archs:
            break
        a = net.sample(rng)
        if a not in assignments:
            assignments.append(a)
    results = {"config": asdict(run), "data": samples.source, "base_choices": choices, "full": full,
               "search_s": search_s, "search_epochs_done": epochs_done, "full_cost": net.full_precision_cost(), "archs": []}
    for k, assignment in enumerate(assignments):
        base.load_state_dict(fp32_state, strict=True)  # every assignment starts from the fp32 weights
        net.fix(assignment)
        fit = train_segmenter(net, train_set, run.finetune_epochs, run.batch_size, seed=run.seed,
                              show_progress=show_progress, description=f"fine-tune assignment {k}",
                              max_minutes=run.finetune_minutes)
        metrics = evaluate(net, test_set)
        entry = {"assignment": assignment, "bits": net.describe(assignment), "metrics": metrics,
                 "compression": net.full_precision_cost() / net.assignment_cost(assignment),
                 "finetune_loss": fit["loss"]}
        if run.save_models and ddp.is_main():
            entry["weights"] = str(_save_baked(net, base, entry, run, k, command))
        results["archs"].append(entry)
    finite = [a for a in results["archs"] if np.isfinite(a["metrics"]["mIoU"])] or results["archs"]
    results["most_accurate"] = max(finite, key=lambda a: a["metrics"]["mIoU"])
    results["most_efficient"] = max(results["archs"], key=lambda a: a["compression"])
    return results


def _save_baked(net: MixedPrecisionNet, base: SearchedSegNet, entry: dict, run: MixedPrecisionRun, k: int,
                command: str) -> Path:
    """The fine-tuned assignment as a plain SearchedSegNet whose weights are the quantized values
    (exact for the weights). Activation bit-widths below 32 go into the builder's `act_quant`: the
    runtime net applies the same PACT quantizer to those convolutions' inputs."""
    from .manifest import save_model_with_manifest

    plain = SearchedSegNet(base.choices, base.macro)
    mp_names = {name for name, m in base.named_modules() if isinstance(m, MixedPrecisionConv)}
    state = {}
    for name, tensor in base.state_dict().items():
        owner, _, leaf = name.rpartition(".")
        if owner.endswith(".conv") and owner[: -len(".conv")] in mp_names:
            name = f"{owner[: -len('.conv')]}.{leaf}"
        state[name.replace(".block.", ".")] = tensor
    quantized, act_quant = {}, {}
    for name, module in base.named_modules():
        if isinstance(module, MixedPrecisionConv) and module.choice is not None:
            plain_name = name.replace(".block.", ".")
            wbits, abits = module.candidates[module.choice]
            quantized[plain_name + ".weight"] = quantize_weight(module.conv.weight.detach(), wbits)
            if abits < FP:  # the runtime net quantizes this conv's input the same way (PACT, eq. 8.11)
                alpha = float(module.alpha[module.choice].detach().abs()) + 1e-3
                act_quant[plain_name] = [int(abits), alpha, bool(module.signed_input)]
    state.update(quantized)
    skipped = [i for i, g in enumerate(net.gates) if g.choice == 1]
    state = {k_: v for k_, v in state.items() if k_ in plain.state_dict()}
    plain.load_state_dict(state, strict=True)
    gate_layers = [i for i, layer in enumerate(base.layers) if isinstance(layer, GatedBlock)]
    for i in skipped:  # a skipped block contributes nothing: zero its last batch norm's output
        bn = plain.layers[gate_layers[i]].bn3
        bn.weight.data.zero_()
        bn.bias.data.zero_()
    name = f"squeezeseg_mp_{run.cost}{'_tiny' if run.tiny else ''}_{k}"
    return save_model_with_manifest(
        plain, Path(run.out) / f"{name}.pt", name=name, task="segmentation",
        builder="squeeze_perception.segmentation.searched_net:build_searched_segnet",
        builder_kwargs={"choices": list(base.choices), "macro": base.macro.to_dict(),
                        **({"act_quant": act_quant} if act_quant else {})},
        input_shape=(5, run.height, run.width), classes=CLASS_NAMES, metrics=entry["metrics"],
        latency_ms={}, command=command,
        extra={"bits": entry["bits"], "compression": entry["compression"], "cost": run.cost,
               "activations_emulated": bool(act_quant)})
