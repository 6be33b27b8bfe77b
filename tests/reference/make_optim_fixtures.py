"""Writes tests/fixtures/adamw_reference.safetensors: what torch and transformers compute for the
optimiser, the learning-rate schedules and gradient clipping (checked by tests/optim.rs).

Run from anywhere:
    /root/.cache/polyadapt-baseline/venv/bin/python tests/reference/make_optim_fixtures.py

Contents (F32 unless noted; <i> is the parameter index 0..4, see SHAPES):
    param.<i>                      initial value of parameter i
    grad.<i>                       [STEPS, *shape] its gradient at each step (parameter 3 has no
                                   gradient, p.grad = None, before step NONE_UNTIL)
    lr                             F64 [STEPS] learning rate of each step, from transformers'
                                   get_linear_schedule_with_warmup(3, 10) on base lr LR (a LambdaLR)
    adamw.<c>.param.<i>            [STEPS, *shape] parameter i after each step of
                                   torch.optim.AdamW(foreach=False, fused=False) in config c
    adamw.<c>.exp_avg.<i>          final first moment; adamw.<c>.exp_avg_sq.<i> final second moment
    adamw.<c>.step.<i>             F64 [1] torch's final per-parameter step count
    adamw_ieee.<c>.param.<i>       the same, with one change: Tensor.sqrt correctly rounded (see
                                   below); the moments do not depend on the sqrt and are the same

Why adamw_ieee: torch's CPU sqrt is not correctly rounded (on the machine that wrote the
fixture about 16% of float32 results are 1 ulp off the IEEE square root, through MKL's vector
math), so no portable implementation can reproduce it. adamw_ieee runs the unmodified
torch.optim.AdamW code with torch.Tensor.sqrt replaced by numpy's float32 sqrt (an IEEE
instruction); every other operation is torch's own. The script counts the calls of the replacement
(one per parameter update, so it was in effect) and reports how far the two runs end up apart.
    schedule.<kind>.w<W>.t<T>      F64 [T + 4] the LambdaLR multiplier for steps 0..T+3 of
                                   kind = linear, cosine (num_cycles 0.5), constant (with warm-up),
                                   cosine_min (get_cosine_with_min_lr_schedule_with_warmup,
                                   min_lr_rate MIN_LR_RATE)
    clip.max_norm.<k>              F64 [1] max_norm of clipping case k (k = 0: clips, 1: does not)
    clip.norm.<k>                  torch.nn.utils.clip_grad_norm_'s returned total norm (F32 [])
    clip.norm_f64                  F64 [] the exact norm of the step-0 gradients, computed in f64
    clip.<k>.grad.<i>              gradient i after clip_grad_norm_(max_norm_k); the input is the
                                   step-0 gradient of every parameter
Metadata records the AdamW configurations, versions and thread count.
"""

import math
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # keep tests/reference free of __pycache__

import numpy as np
import torch
from transformers import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

from reference_common import base_metadata, file_size, make_deterministic, write_reference

REPO_ROOT = Path(__file__).resolve().parents[2]
OUT = REPO_ROOT / "tests" / "fixtures" / "adamw_reference.safetensors"
SEED = 20240917
STEPS = 10
LR = 1e-2
NONE_UNTIL = 3
MIN_LR_RATE = 0.1

# Shapes chosen around torch's CPU kernels: 37 elements run through the AVX-512 loop (32 at a
# time) and its scalar tail, the others through the tail only.
SHAPES = [(3, 5), (37,), (2, 3, 4), (1,), (6,)]
# Gradient scale per parameter: ordinary, large, small, tiny (sqrt(v) comparable to eps), ordinary.
GRAD_SCALES = [1.0, 30.0, 1e-3, 1e-8, 0.5]

# (name, betas, eps, weight_decay). beta1 = 0.3 makes 1 - beta1 >= 0.5, the other branch of
# torch's lerp.
CONFIGS = [
    ("wd0", (0.9, 0.999), 1e-8, 0.0),
    ("wd1", (0.9, 0.999), 1e-8, 0.1),
    ("odd", (0.3, 0.95), 1e-6, 0.05),
]

SCHEDULES = [(3, 10), (0, 7), (4, 4), (2, 3)]


def make_inputs():
    params = [torch.randn(s) for s in SHAPES]
    grads = [torch.randn((STEPS, *s)) * scale for s, scale in zip(SHAPES, GRAD_SCALES)]
    # An exact zero gradient element and a whole zero gradient step exercise the m = v = 0 path.
    grads[0][2, 1, 1] = 0.0
    grads[4][5] = 0.0
    return params, grads


def learning_rates():
    """Learning rates the way a transformers training loop sets them: read before each
    optimizer.step(), scheduler.step() after it."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=LR)
    sched = get_linear_schedule_with_warmup(opt, 3, 10)
    lrs = []
    for _ in range(STEPS):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def run_adamw(params0, grads, lrs, betas, eps, wd):
    params = [torch.nn.Parameter(p.clone()) for p in params0]
    opt = torch.optim.AdamW(params, lr=LR, betas=betas, eps=eps, weight_decay=wd, foreach=False, fused=False)
    history = [[] for _ in params]
    for step in range(STEPS):
        opt.param_groups[0]["lr"] = lrs[step]
        for i, p in enumerate(params):
            p.grad = None if (i == 3 and step < NONE_UNTIL) else grads[i][step].clone()
        opt.step()
        for i, p in enumerate(params):
            history[i].append(p.detach().clone())
    states = [opt.state[p] for p in params]
    return [torch.stack(h) for h in history], states


class IeeeSqrt:
    """Replaces torch.Tensor.sqrt by a correctly rounded float32 sqrt (numpy's) while active."""

    def __enter__(self):
        self.original = torch.Tensor.sqrt
        self.calls = 0

        def ieee_sqrt(t):
            if t.dtype != torch.float32 or t.requires_grad:
                raise RuntimeError("IeeeSqrt only handles float32 tensors without grad")
            self.calls += 1
            return torch.from_numpy(np.sqrt(t.contiguous().numpy())).reshape(t.shape)

        torch.Tensor.sqrt = ieee_sqrt
        return self

    def __exit__(self, *exc):
        torch.Tensor.sqrt = self.original


def max_ulps(a, b):
    ia = a.contiguous().view(torch.int32).to(torch.int64)
    ib = b.contiguous().view(torch.int32).to(torch.int64)
    # Same-sign values (true here): the ulp distance is the distance of the bit patterns.
    return int((ia - ib).abs().max())


def schedule_values(kind, warmup, total):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    if kind == "linear":
        sched = get_linear_schedule_with_warmup(opt, warmup, total)
    elif kind == "cosine":
        sched = get_cosine_schedule_with_warmup(opt, warmup, total)
    elif kind == "constant":
        sched = get_constant_schedule_with_warmup(opt, warmup)
    elif kind == "cosine_min":
        sched = get_cosine_with_min_lr_schedule_with_warmup(opt, warmup, total, min_lr_rate=MIN_LR_RATE)
    else:
        raise ValueError(kind)
    # The LambdaLR's lambda itself, evaluated at each step (base lr 1.0 makes lr == lambda).
    lam = sched.lr_lambdas[0]
    values = [float(lam(s)) for s in range(total + 4)]
    # Cross-check: stepping the scheduler gives base_lr * lambda(step) with base lr 1.0.
    stepped = []
    for _ in range(total + 4):
        stepped.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    if stepped != values:
        raise RuntimeError(f"{kind} w{warmup} t{total}: LambdaLR gives {stepped}, lambda {values}")
    return torch.tensor(values, dtype=torch.float64)


def clip_cases(grads):
    g0 = [g[0].clone() for g in grads]
    exact = math.sqrt(sum(float((g.double() ** 2).sum()) for g in g0))
    out = {"clip.norm_f64": torch.tensor(exact, dtype=torch.float64)}
    for k, max_norm in enumerate([exact / 3.0, exact * 2.0]):
        params = [torch.nn.Parameter(torch.zeros_like(g)) for g in g0]
        for p, g in zip(params, g0):
            p.grad = g.clone()
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        out[f"clip.max_norm.{k}"] = torch.tensor([max_norm], dtype=torch.float64)
        out[f"clip.norm.{k}"] = norm.detach().clone()
        for i, p in enumerate(params):
            out[f"clip.{k}.grad.{i}"] = p.grad.clone()
    return out


def main():
    make_deterministic(SEED)
    params, grads = make_inputs()
    lrs = learning_rates()
    tensors = {"lr": torch.tensor(lrs, dtype=torch.float64)}
    for i, (p, g) in enumerate(zip(params, grads)):
        tensors[f"param.{i}"] = p
        tensors[f"grad.{i}"] = g
    metadata = base_metadata()
    metadata.update(
        {
            "seed": str(SEED),
            "steps": str(STEPS),
            "base_lr": repr(LR),
            "none_until": str(NONE_UNTIL),
            "min_lr_rate": repr(MIN_LR_RATE),
            "optimizer": "torch.optim.AdamW(foreach=False, fused=False, amsgrad=False)",
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        }
    )
    for name, betas, eps, wd in CONFIGS:
        history, states = run_adamw(params, grads, lrs, betas, eps, wd)
        with IeeeSqrt() as patched:
            history_ieee, states_ieee = run_adamw(params, grads, lrs, betas, eps, wd)
        # One sqrt per parameter update: proof that AdamW went through the replacement.
        expected_calls = STEPS * len(SHAPES) - NONE_UNTIL
        if patched.calls != expected_calls:
            raise RuntimeError(f"{name}: {patched.calls} calls of the IEEE sqrt, expected {expected_calls}")
        metadata[f"adamw.{name}"] = f"betas={betas!r} eps={eps!r} weight_decay={wd!r}"
        for i, (h, st, hi, sti) in enumerate(zip(history, states, history_ieee, states_ieee)):
            tensors[f"adamw.{name}.param.{i}"] = h
            tensors[f"adamw.{name}.exp_avg.{i}"] = st["exp_avg"]
            tensors[f"adamw.{name}.exp_avg_sq.{i}"] = st["exp_avg_sq"]
            tensors[f"adamw.{name}.step.{i}"] = st["step"].detach().to(torch.float64).reshape(1)
            tensors[f"adamw_ieee.{name}.param.{i}"] = hi
            # The moments never see the sqrt: both runs must have the same ones.
            for key in ["exp_avg", "exp_avg_sq", "step"]:
                if not torch.equal(st[key], sti[key]):
                    raise RuntimeError(f"{name} param {i}: {key} differs between the two runs")
            print(f"{name} param {i}: stock vs IEEE sqrt, max {max_ulps(h, hi)} ulp over all steps, "
                  f"{int((h != hi).sum())} of {h.numel()} values differ")
    for kind in ["linear", "cosine", "constant", "cosine_min"]:
        for warmup, total in SCHEDULES:
            tensors[f"schedule.{kind}.w{warmup}.t{total}"] = schedule_values(kind, warmup, total)
    tensors.update(clip_cases(grads))
    write_reference(OUT, tensors, metadata)
    print(f"wrote {OUT} ({file_size(OUT)} bytes, {len(tensors)} tensors)")
    print("learning rates:", lrs)
    for kind in ["linear", "cosine", "constant", "cosine_min"]:
        print(kind, "w3 t10:", tensors[f"schedule.{kind}.w3.t10"].tolist())
    print("clip norms (torch f32, exact f64):", [float(tensors[f"clip.norm.{k}"]) for k in range(2)],
          float(tensors["clip.norm_f64"]))


if __name__ == "__main__":
    main()
