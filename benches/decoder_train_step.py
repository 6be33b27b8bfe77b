"""Instruction-tuning steps of SmolLM2-135M-Instruct with transformers + peft on the CPU: the
baseline of `benches/decoder_train_step.rs`, measured the same way (one configuration per
process, warm-up steps, the median of timed steps of forward with the loss, backward and AdamW,
and the peak resident memory). Prints one JSON line.

    python benches/decoder_train_step.py --batches FILE --method lora [--threads 2]

FILE is written by `cargo bench --bench decoder_train_step -- --write-batches FILE`: the same
token ids per step as the engine trains on. Each batch is padded on the right to its longest
sequence; labels are the ids with -100 on the prompt and the padding (transformers shifts them:
position t predicts token t + 1, and the loss is the mean over target tokens, as the engine's).
The model is the GGUF of `engine-train fetch-model smollm2-135m-instruct`, dequantised by
transformers (the `gguf` package) to float32; attention is transformers' default (sdpa).

Methods as the engine's: `lora` (r 8, alpha 16, q/k/v/o/gate/up/down), `lora_qv`, `prefix`
(20 virtual tokens), `prompt` (20 virtual tokens), `full` (every weight but the embeddings).
"""

import argparse
import json
import os
import resource
import statistics
import time
from pathlib import Path

import torch


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def smollm2_gguf() -> Path:
    cache = Path(os.environ.get("POLYADAPT_CACHE", Path.home() / ".cache" / "polyadapt"))
    found = sorted((cache / "models" / "smollm2-135m-instruct").glob("*.gguf"))
    if not found:
        raise SystemExit("SmolLM2 is not in the cache: run `engine-train fetch-model smollm2-135m-instruct`")
    return found[0]


def build(method: str):
    import peft
    from transformers import AutoModelForCausalLM

    gguf = smollm2_gguf()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    all7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    if method in ("lora", "lora_qv"):
        targets = all7 if method == "lora" else ["q_proj", "v_proj"]
        cfg = peft.LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets)
        return peft.get_peft_model(model, cfg), peft.__version__
    if method == "prefix":
        return peft.get_peft_model(model, peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=20)), peft.__version__
    if method == "prompt":
        return peft.get_peft_model(model, peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=20)), peft.__version__
    if method == "full":
        for name, p in model.named_parameters():
            p.requires_grad = "embed_tokens" not in name and "lm_head" not in name
        return model, None
    raise SystemExit(f"unknown method {method} (lora, lora_qv, prefix, prompt, full)")


def tensors(batch, pad: int):
    longest = max(len(e["ids"]) for e in batch)
    ids = torch.full((len(batch), longest), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), longest), dtype=torch.long)
    labels = torch.full((len(batch), longest), -100, dtype=torch.long)
    for i, e in enumerate(batch):
        n, p = len(e["ids"]), e["prompt_len"]
        ids[i, :n] = torch.tensor(e["ids"])
        mask[i, :n] = 1
        labels[i, p:n] = ids[i, p:n]
    return ids, mask, labels


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", required=True)
    ap.add_argument("--method", default="lora")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    doc = json.loads(Path(args.batches).read_text())
    import transformers

    model, peft_version = build(args.method)
    model.train()
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=1e-4)
    steps, fwd, bwd, losses, tokens, targets = [], [], [], [], [], []
    for i, batch in enumerate(doc["batches"]):
        ids, mask, labels = tensors(batch, pad)
        t0 = time.perf_counter()
        optim.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        optim.step()
        t3 = time.perf_counter()
        losses.append(loss.item())
        if i >= args.warmup:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
            steps.append(t3 - t0)
            tokens.append(sum(len(e["ids"]) for e in batch))
            targets.append(sum(len(e["ids"]) - e["prompt_len"] for e in batch))
    med = statistics.median(steps)
    mean_tokens = sum(tokens) / len(tokens)
    print(json.dumps({
        "tag": f"smollm2/{args.method}",
        "engine": "transformers+peft",
        "method": args.method, "batch": doc["batch"], "seq": doc["seq"], "warmup": args.warmup, "steps": len(steps),
        "threads": args.threads, "task": Path(doc["task"]).name, "dtype": "float32",
        "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft_version,
        "params_trainable": sum(p.numel() for p in params),
        "tokens_per_batch": mean_tokens, "target_tokens_per_batch": sum(targets) / len(targets),
        "step_s_median": med, "step_s_all": steps,
        "fwd_s_median": statistics.median(fwd), "bwd_s_median": statistics.median(bwd),
        "tokens_per_s": mean_tokens / med,
        "losses": losses,
        "peak_rss_mb": peak_rss_mb(),
    }))


if __name__ == "__main__":
    main()
