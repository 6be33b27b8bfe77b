"""Writes the decoder fixtures: transformers' LlamaForCausalLM on SmolLM2-135M-Instruct (read
from its GGUF file by transformers itself) and on a tiny random LLaMA (see README.md).

Run with the baseline venv plus the `gguf` package:
    /root/.cache/polyadapt-llama/venv/bin/python tests/reference/make_llama_fixtures.py [--only generation]

Outputs (under tests/fixtures/):
    smollm2/reference.safetensors   per prompt: input ids, full logits of the last position (two
                                    prompts), logits at 256 fixed vocabulary columns and the top
                                    8 at every position, per-position logit norms, and the greedy
                                    continuation (20 new tokens) with its top-1/top-2 margins
    smollm2/generation.safetensors  beam search (2 and 4 beams), the sampling logits processors on
                                    fixture logits, stop strings (llama_generation_fixtures.py)
    tiny-llama/                     random LlamaForCausalLM (GQA, untied head), config.json +
                                    model.safetensors, model.gguf (the same f32 weights written
                                    as llama.cpp writes them: Q/K rows permuted) and
                                    reference.safetensors (hidden states and logits of a padded
                                    batch, greedy continuations)
"""

import argparse
import sys
from pathlib import Path

sys.dont_write_bytecode = True

import gguf
import numpy as np
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as hf_logging

from llama_generation_fixtures import make_generation
from reference_common import base_metadata, fmt_err, make_deterministic, rel_err, write_reference
from safetensors.torch import load_file

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_GGUF = Path.home() / ".cache/polyadapt/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
SEED = 20250207
NEW_TOKENS = 20
FULL_LAST = (0, 1)  # prompts whose last-position logits are stored in full
N_COLS, TOP_K = 256, 8

CHAT = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
PROMPTS = [
    "The capital of France is",
    "Bucureşti este capitala României. Cel mai lung râu din ţară este",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "東京は日本の首都です。富士山は",
    CHAT.format("Translate to English: Bună dimineața, ce mai faci?"),
    CHAT.format("What is 2+2?"),
]


def margins(scores):
    """Top-1 minus top-2 logit of each generation step."""
    out = []
    for s in scores:
        top = torch.topk(s[0].to(torch.float64), 2).values
        out.append(float(top[0] - top[1]))
    return torch.tensor(out, dtype=torch.float32)


def greedy(model, ids):
    out = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, num_beams=1, use_cache=True,
                         output_scores=True, return_dict_in_generate=True, pad_token_id=model.config.eos_token_id)
    return out.sequences[0, ids.shape[1]:], margins(out.scores)


def make_smollm2(gguf_path: Path, out: Path):
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = LlamaForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32,
                                             attn_implementation="eager").eval()
    model64 = LlamaForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float64,
                                               attn_implementation="eager").eval()
    vocab = model.config.vocab_size
    cols = torch.from_numpy(np.sort(np.random.default_rng(SEED).choice(vocab, N_COLS, replace=False))).to(torch.int64)
    tensors = {"cols": cols}
    meta = base_metadata()
    meta.update({"model": gguf_path.name, "weights": "transformers from_pretrained(gguf_file=...), dequantised by gguf 0.19.0",
                 "new_tokens": str(NEW_TOKENS), "prompts": str(len(PROMPTS))})
    print("== SmolLM2-135M-Instruct ==")
    for i, text in enumerate(PROMPTS):
        ids = tok(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(ids).logits[0]
            logits64 = model64(ids).logits[0]
            new, gap = greedy(model, ids)
        p = f"prompt.{i}."
        tensors[p + "input_ids"] = ids[0]
        tensors[p + "logits_cols"] = logits[:, cols].contiguous()
        top = torch.topk(logits, TOP_K, dim=-1)
        tensors[p + "top_ids"] = top.indices.to(torch.int64)
        tensors[p + "top_values"] = top.values
        tensors[p + "row_norm"] = torch.linalg.vector_norm(logits.to(torch.float64), dim=-1).to(torch.float32)
        if i in FULL_LAST:
            tensors[p + "logits_last"] = logits[-1].contiguous()
        tensors[p + "greedy"] = new.to(torch.int64)
        tensors[p + "greedy_margin"] = gap
        meta[p + "text"] = text
        meta[p + "f32_vs_f64_rel_err"] = fmt_err(rel_err(logits, logits64))
        print(f"[{i}] {ids.shape[1]} tokens, f32 vs f64 rel err {fmt_err(rel_err(logits, logits64))}, "
              f"min margin {float(gap.min()):.3f}: {tok.decode(new)!r}")
    (out / "smollm2").mkdir(parents=True, exist_ok=True)
    write_reference(out / "smollm2" / "reference.safetensors", tensors, meta)


def llama_cpp_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute: interleave the two rotary halves per head."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(model: LlamaForCausalLM, path: Path):
    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(c.vocab_size)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    w.add_uint32("tokenizer.ggml.eos_token_id", c.eos_token_id)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
    per_layer = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                 "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
                 "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for name, t in model.state_dict().items():
        a = t.detach().numpy().astype(np.float32)
        if name in names:
            g = names[name]
        else:
            _, _, layer, rest = name.split(".", 3)
            module = rest.rsplit(".", 1)[0]
            g = f"blk.{layer}.{per_layer[module]}.weight"
            if module == "self_attn.q_proj":
                a = llama_cpp_permute(a, c.num_attention_heads)
            elif module == "self_attn.k_proj":
                a = llama_cpp_permute(a, c.num_key_value_heads)
        w.add_tensor(g, np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def make_tiny(out: Path):
    torch.manual_seed(SEED)
    config = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=False,
                         rope_parameters={"rope_type": "default", "rope_theta": 500.0}, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0, attn_implementation="eager")
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # larger random weights than the default init, so attention is not uniform
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    d = out / "tiny-llama"
    d.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    write_tiny_gguf(model, d / "model.gguf")
    ids = torch.tensor([[1, 17, 42, 5, 88, 23, 61, 7, 30, 9], [1, 54, 3, 77, 12, 0, 0, 0, 0, 0]])
    mask = (torch.arange(ids.shape[1])[None, :] < torch.tensor([[10], [5]])).to(torch.int64)
    with torch.no_grad():
        o = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    tensors = {"input_ids": ids, "attention_mask": mask, "logits": o.logits}
    tensors.update({f"hidden.{l}": h for l, h in enumerate(o.hidden_states)})
    for b in range(2):
        n = int(mask[b].sum())
        new, gap = greedy(model, ids[b:b + 1, :n])
        tensors[f"greedy.{b}"] = new.to(torch.int64)
        tensors[f"greedy_margin.{b}"] = gap
    meta = base_metadata()
    meta.update({"model": "random LlamaForCausalLM, seed " + str(SEED), "new_tokens": str(NEW_TOKENS),
                 "padding": "right; positions and logits at padding are transformers' own"})
    write_reference(d / "reference.safetensors", tensors, meta)
    print(f"== tiny-llama == {sum(p.numel() for p in model.parameters())} parameters; greedy {tensors['greedy.0'].tolist()}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gguf", type=Path, default=DEFAULT_GGUF)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "tests/fixtures")
    p.add_argument("--only", choices=["tiny", "smollm2", "generation"], help="write one part (default: all)")
    args = p.parse_args(argv)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    make_deterministic(SEED)
    if args.only in (None, "tiny"):
        make_tiny(args.out)
    if args.only in (None, "smollm2"):
        make_smollm2(args.gguf, args.out)
    if args.only in (None, "generation"):
        # Reads the last-position logits of smollm2/reference.safetensors (written above).
        make_generation(args.gguf, args.out, load_file(args.out / "smollm2" / "reference.safetensors"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
