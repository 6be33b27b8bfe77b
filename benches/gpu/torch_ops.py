"""The PyTorch side of each benchmark of `engine-train bench`, one builder per operation.

A builder takes the row's params (the engine's JSON names), the dtype and the device, and
returns a list of (impl, run) pairs: `run()` queues the work once, what the timer measures.
Inputs are random (never zeros), built outside the timed region; the backward rows time
`torch.autograd.grad(..., retain_graph=True)` on a graph built once, the fwd_bwd rows both.
"""

import math

import torch
import torch.nn.functional as F

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def rand(shape, dtype, dev, scale=1.0, grad=False):
    t = (torch.rand(shape, device=dev, dtype=torch.float32) * 2 - 1) * scale
    return t.to(dtype).requires_grad_(grad)


def grad_runner(make_out, inputs, dout_like=None):
    """(forward, backward, both) closures over `make_out()`'s graph; dout is random."""
    out = make_out()
    dout = torch.randn_like(out) if dout_like is None else dout_like

    def fwd():
        make_out()

    def bwd():
        torch.autograd.grad(out, inputs, dout, retain_graph=True)

    def both():
        torch.autograd.grad(make_out(), inputs, dout)

    return {"fwd": fwd, "bwd": bwd, "fwd_bwd": both}


def split_op(op):
    """'attn_fwd_bwd' -> ('attn', 'fwd_bwd')."""
    for suffix in ("_fwd_bwd", "_fwd", "_bwd"):
        if op.endswith(suffix):
            return op[: -len(suffix)], suffix[1:]
    return op, None


# ---- attention with prefix keys ---------------------------------------------------------------


def sdpa_backend_names():
    from torch.nn.attention import SDPBackend

    names = [("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION)]
    if hasattr(SDPBackend, "CUDNN_ATTENTION"):
        names.append(("cudnn", SDPBackend.CUDNN_ATTENTION))
    return names + [("math", SDPBackend.MATH)]


def attention(p, dtype, dev, pass_):
    """SDPA on [prefix K/V ; sequence K/V] concatenated per sequence. Dense batches take no
    mask (the causal one aligned to the bottom right, CausalBias, which flash runs); packed
    batches are padded to the longest with a boolean key mask, as transformers does."""
    from torch.nn.attention import sdpa_kernel
    from torch.nn.attention.bias import causal_lower_right

    B, S, P, H, KV, D = (p[k] for k in ("batch", "seq", "prefix", "heads", "kv_heads", "head_dim"))
    causal, packed = p["causal"], p["layout"] == "packed"
    q = rand((B, H, S, D), dtype, dev, grad=True)
    k = rand((B, KV, S, D), dtype, dev, grad=True)
    v = rand((B, KV, S, D), dtype, dev, grad=True)
    pk = rand((KV, P, D), dtype, dev, grad=True)
    pv = rand((KV, P, D), dtype, dev, grad=True)
    inputs = [q, k, v] + ([pk, pv] if P > 0 else [])
    mask = None
    if packed:
        lengths = torch.tensor(p["lengths"], device=dev)
        j = torch.arange(P + S, device=dev)
        keep = (j[None, :] < P) | ((j[None, :] - P) < lengths[:, None])  # [B, P+S]
        mask = keep[:, None, None, :]
        if causal:
            i = torch.arange(S, device=dev)
            mask = mask & ((j[None, :] - P) <= i[:, None])[None, None]
    elif causal and P > 0:
        mask = causal_lower_right(S, P + S)

    def run(gqa):
        kk, vv = k, v
        if P > 0:
            kk = torch.cat([pk.unsqueeze(0).expand(B, -1, -1, -1), k], dim=2)
            vv = torch.cat([pv.unsqueeze(0).expand(B, -1, -1, -1), v], dim=2)
        if KV != H and not gqa:
            kk, vv = kk.repeat_interleave(H // KV, dim=1), vv.repeat_interleave(H // KV, dim=1)
        extra = {"enable_gqa": True} if gqa else {}
        is_causal = causal and P == 0 and not packed
        return F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask, is_causal=is_causal, **extra)

    # The first backend (and native grouped-query heads before repeated ones) that runs; the
    # harness times it under the same backend choice.
    for name, backend in sdpa_backend_names():
        for gqa in ([True, False] if KV != H and mask is None else [False]):
            try:
                with sdpa_kernel([backend]):
                    r = grad_runner(lambda: run(gqa), inputs)
                    r["fwd_bwd"]()
            except (RuntimeError, TypeError):
                continue
            label = "sdpa-" + (causal_bias_backend(q, dtype) if mask is not None and not packed else name)
            return [(label + ("+gqa" if gqa else ""), r[pass_], lambda b=backend: sdpa_kernel([b]))]
    raise RuntimeError("no SDPA backend ran this shape")


def causal_bias_backend(q, dtype):
    """CausalBias (bottom-right causal) dispatches on its own: flash where it can."""
    if q.device.type != "cuda":
        return "causal-lower-right"
    ok = dtype in (torch.float16, torch.bfloat16) and q.shape[-1] % 8 == 0 and q.shape[-1] <= 256
    return "flash(causal-lower-right)" if ok else "efficient(causal-lower-right)"


# ---- LoRA ---------------------------------------------------------------------------------------


def lora(p, dtype, dev, pass_):
    """A frozen projection with LoRA (no bias), dX, dA, dB wanted: the unfused sequence (f32
    masters cast to the dtype, as autocast) and peft's lora.Linear (its default f32 adapter)."""
    T, din, dout, r, s = p["tokens"], p["din"], p["dout"], p["r"], p["scale"]
    x = rand((T, din), dtype, dev, grad=True)
    w = rand((dout, din), dtype, dev, scale=1 / math.sqrt(din))
    a = rand((r, din), torch.float32, dev, scale=1 / math.sqrt(din), grad=True)
    b = rand((dout, r), torch.float32, dev, scale=0.1, grad=True)

    def unfused():
        y = x @ w.t()
        h = x @ a.to(dtype).t()
        return y + (h @ b.to(dtype).t()) * s

    out = [("unfused", grad_runner(unfused, [x, a, b])[pass_])]
    layer = peft_layer(p, dtype, dev)
    if isinstance(layer, str):
        return out + [("peft", layer)]
    la, lb = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    out.append(("peft", grad_runner(lambda: layer(x), [x, la, lb])[pass_]))
    return out


def peft_layer(p, dtype, dev):
    """peft's lora.Linear around an nn.Linear, or why there is none."""
    try:
        import peft
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        return f"peft is not installed ({e})"

    class One(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(p["din"], p["dout"], bias=False, device=dev, dtype=dtype)

    cfg = LoraConfig(r=p["r"], lora_alpha=p["alpha"], target_modules=["proj"], lora_dropout=0.0, init_lora_weights=False)
    model = get_peft_model(One(), cfg)
    layer = model.base_model.model.proj
    assert isinstance(layer, peft.tuners.lora.Linear), type(layer)
    return layer


# ---- the memory-bound operations -------------------------------------------------------------------


def align(p, dtype, dev, pass_):
    """Masked mean pooling of both sides, squared L2 per pair, mean, and the gradients."""
    B, T, d = p["pairs"], p["tokens"], p["hidden"]
    hs, ht = rand((B, T, d), dtype, dev, grad=True), rand((B, T, d), dtype, dev, grad=True)
    t = torch.arange(T, device=dev)
    ms = (t[None] < torch.tensor(p["source_lengths"], device=dev)[:, None]).to(dtype)
    mt = (t[None] < torch.tensor(p["target_lengths"], device=dev)[:, None]).to(dtype)

    def run():
        ps = (hs * ms[..., None]).sum(1) / ms.sum(1, keepdim=True)
        pt = (ht * mt[..., None]).sum(1) / mt.sum(1, keepdim=True)
        loss = ((ps - pt) ** 2).sum(-1).mean()
        torch.autograd.grad(loss, [hs, ht])

    return [("eager", run)]


def norm(p, dtype, dev, pass_, rms):
    n, d = p["rows"], p["hidden"]
    x = rand((n, d), dtype, dev, grad=True)
    w = rand((d,), dtype, dev, grad=True)
    if rms:
        if hasattr(F, "rms_norm"):
            f = lambda: F.rms_norm(x, (d,), w, p["eps"])
        else:  # torch < 2.4
            f = lambda: x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + p["eps"]).to(dtype) * w
        inputs = [x, w]
    else:
        bias = rand((d,), dtype, dev, grad=True)
        f = lambda: F.layer_norm(x, (d,), w, bias, p["eps"])
        inputs = [x, w, bias]
    return [("eager", grad_runner(f, inputs)[pass_])]


def gelu(p, dtype, dev, pass_):
    x = rand((p["n"],), dtype, dev, scale=2.0, grad=True)
    return [("eager", grad_runner(lambda: F.gelu(x), [x])[pass_])]


def swiglu(p, dtype, dev, pass_):
    g, u = rand((p["n"],), dtype, dev, 2.0, True), rand((p["n"],), dtype, dev, 2.0, True)
    return [("eager", grad_runner(lambda: F.silu(g) * u, [g, u])[pass_])]


def cross_entropy(p, dtype, dev, pass_):
    n, c = p["rows"], p["classes"]
    logits = rand((n, c), dtype, dev, scale=4.0, grad=True)
    targets = torch.tensor([(i * 7919) % c for i in range(n)], device=dev)
    return [("eager", lambda: torch.autograd.grad(F.cross_entropy(logits, targets), [logits]))]


def adamw(p, dtype, dev, pass_):
    """One step of torch.optim.AdamW over the tensors: fused (CUDA) and foreach."""
    out = []
    for impl in (["fused", "foreach"] if dev == "cuda" else ["foreach"]):
        params = [torch.nn.Parameter(rand((p["elems"],), torch.float32, dev)) for _ in range(p["tensors"])]
        for q in params:
            q.grad = rand(q.shape, torch.float32, dev)
        opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2, **{impl: True})
        out.append(("torch-" + impl, opt.step))
    return out


def copy(p, dtype, dev, pass_):
    src = torch.rand(p["bytes"] // 4, device=dev)
    dst = torch.empty_like(src)
    return [("clone-copy", lambda: dst.copy_(src))]


BUILDERS = {
    "attn": attention,
    "lora": lora,
    "align": align,
    "layernorm": lambda p, t, d, s: norm(p, t, d, s, rms=False),
    "rmsnorm": lambda p, t, d, s: norm(p, t, d, s, rms=True),
    "gelu": gelu,
    "swiglu": swiglu,
    "ce": cross_entropy,
    "adamw": adamw,
    "copy": copy,
}


def build(op, dtype_name, params, dev):
    """[(impl, run or the reason it cannot run[, context manager factory to time it in])] for one
    row of the engine's list."""
    base, pass_ = split_op(op)
    dtype = DTYPES.get(dtype_name, torch.float32)
    if base == "step":
        import torch_step

        return torch_step.step(params, dtype, dev)
    return BUILDERS[base](params, dtype, dev, pass_)
