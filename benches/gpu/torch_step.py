"""The PyTorch side of `engine-train bench --only step`: one training step of multilingual-e5-small
with transformers + peft, as a researcher would write it, on the batches the engine times.

The row's params (cli/bench/step.rs) give the model directory, the method (`lora`: peft LoRA r 8,
alpha 16 on query and value; `prefix`: peft prefix tuning, 20 virtual tokens, no projection;
`lora_prefix`: LoRA injected, then prefix tuning, as ../shared/bench/pytorch does, since peft's
mixed model refuses the pair), the batch and sequence length. A step: the task batch through
the model, a linear head on the first token, cross-entropy; the two alignment batches through
the same model, mean-pooled last hidden states, squared L2 distance averaged over the pairs;
backward of the sum, gradient clipping to norm 1, AdamW (PyTorch's default implementation on
CUDA, foreach), and `loss.item()` (the engine reads its losses back too). Random token ids, no
padding, dropout off, as the engine's rows.

dtypes: `f32` computes in f32 (TF32 off, PyTorch's default for matrix products); `bf16` runs
the step under `torch.autocast(bfloat16)` with f32 weights, the usual mixed-precision recipe.
"""

import torch
import torch.nn.functional as F


def _model(p, dev):
    from transformers import AutoConfig, AutoModel

    cfg = AutoConfig.from_pretrained(p["model_dir"])
    cfg.hidden_dropout_prob = 0.0
    cfg.attention_probs_dropout_prob = 0.0
    model = AutoModel.from_pretrained(p["model_dir"], config=cfg, add_pooling_layer=False).to(dev)
    for w in model.parameters():
        w.requires_grad_(False)
    return model, cfg


def _adapt(model, p):
    import peft

    m = p["method"]
    if "lora" in m:
        lc = peft.LoraConfig(r=p["rank"], lora_alpha=p["alpha"], lora_dropout=p["dropout"], target_modules=p["targets"])
        model = peft.get_peft_model(model, lc) if m == "lora" else peft.inject_adapter_in_model(lc, model)
    if "prefix" in m:
        pc = peft.PrefixTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=p["prefix"])
        model = peft.get_peft_model(model, pc)
        # get_peft_model froze the injected LoRA matrices with the rest of the base model.
        for name, w in model.named_parameters():
            if "lora_" in name:
                w.requires_grad_(True)
    return model


def step(p, dtype, dev, pass_=None):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    base, cfg = _model(p, dev)
    model = _adapt(base, p)
    b, s, vocab = p["batch"], p["seq"], cfg.vocab_size
    g = torch.Generator(device="cpu").manual_seed(1)
    ids = [torch.randint(5, vocab, (b, s), generator=g).to(dev) for _ in range(3)]
    mask = torch.ones(b, s, dtype=torch.long, device=dev)
    labels = torch.arange(b, device=dev) % 2
    head = torch.nn.Linear(cfg.hidden_size, p["classes"]).to(dev)
    params = [w for w in model.parameters() if w.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=p["lr"], weight_decay=0.01)
    autocast = dtype == torch.bfloat16

    def hidden(x):
        return model(input_ids=x, attention_mask=mask).last_hidden_state

    def run():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            task = F.cross_entropy(head(hidden(ids[0])[:, 0]).float(), labels)
            hs, ht = hidden(ids[1]).float(), hidden(ids[2]).float()
            m = mask.unsqueeze(-1).float()
            ps, pt = (hs * m).sum(1) / m.sum(1), (ht * m).sum(1) / m.sum(1)
            align = ((ps - pt) ** 2).sum(-1).mean()
            loss = task + p["align_weight"] * align
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, p["clip_norm"])
        opt.step()
        loss.item()

    return [("transformers+peft", run)]
