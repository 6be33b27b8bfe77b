"""Generation fixtures for SmolLM2-135M-Instruct (part of make_llama_fixtures.py; see README.md):
beam search, the sampling logits processors and stop strings, each as transformers 5 computes
them.

Writes tests/fixtures/smollm2/generation.safetensors.
"""

import json
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaForCausalLM
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from reference_common import base_metadata, write_reference

CHAT = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
BEAM_PROMPTS = [
    "The capital of France is",
    "Bucureşti este capitala României. Cel mai lung râu din ţară este",
    CHAT.format("What is 2+2?"),
]
BEAMS = (2, 4)
BEAM_NEW_TOKENS = 16
# (temperature, top_k, top_p); None = processor off. Applied in transformers' order.
PROCESSORS = [(None, 50, None), (None, None, 0.9), (0.7, 50, 0.9), (1.3, 200, 0.95), (0.6, None, 0.5), (1.5, None, 0.8)]
STOP_NEW_TOKENS = 20
BEAM_STOP = " Rome"

def beam_fixtures(model, tok, tensors, meta):
    for i, text in enumerate(BEAM_PROMPTS):
        ids = tok(text, return_tensors="pt")["input_ids"]
        tensors[f"beam.prompt.{i}.input_ids"] = ids[0]
        meta[f"beam.prompt.{i}.text"] = text
        for nb in BEAMS:
            out = model.generate(ids, max_new_tokens=BEAM_NEW_TOKENS, num_beams=nb, do_sample=False, length_penalty=1.0,
                                 early_stopping=False, use_cache=True, output_scores=True, return_dict_in_generate=True,
                                 pad_token_id=model.config.eos_token_id)
            new = out.sequences[0, ids.shape[1]:]
            # Crop the padding transformers puts after a hypothesis that ended early.
            n = int((out.beam_indices[0] >= 0).sum())
            tensors[f"beam.prompt.{i}.beams.{nb}.tokens"] = new[:n].to(torch.int64)
            tensors[f"beam.prompt.{i}.beams.{nb}.score"] = out.sequences_scores[:1].to(torch.float32)
            print(f"beam {nb} [{i}] score {float(out.sequences_scores[0]):.5f}: {tok.decode(new[:n])!r}")


def processor_fixtures(reference: dict, tensors, meta):
    # The full last-position logits of prompts 0 and 1 (stored in reference.safetensors).
    rows = {"last0": reference["prompt.0.logits_last"], "last1": reference["prompt.1.logits_last"]}
    # A row with many ties (values on a grid of 0.25), for top-k's "ties with the k-th are kept".
    g = torch.Generator().manual_seed(7)
    rows["ties"] = torch.round(torch.randn(1000, generator=g) * 8) / 4
    tensors["proc.row.ties"] = rows["ties"].to(torch.float32)
    for c, (t, k, p) in enumerate(PROCESSORS):
        meta[f"proc.{c}"] = json.dumps({"temperature": t, "top_k": k, "top_p": p})
        for name, row in rows.items():
            scores = row.to(torch.float32)[None, :].clone()
            for proc in ([TemperatureLogitsWarper(t)] if t else []) + ([TopKLogitsWarper(k)] if k else []) + ([TopPLogitsWarper(p)] if p else []):
                scores = proc(None, scores)
            kept = torch.nonzero(torch.isfinite(scores[0]))[:, 0]
            probs = torch.softmax(scores[0], dim=-1)
            tensors[f"proc.{c}.{name}.kept"] = kept.to(torch.int64)
            tensors[f"proc.{c}.{name}.probs"] = probs[kept].to(torch.float32)
        print(f"processors {c} {(t, k, p)}: kept {[int(tensors[f'proc.{c}.{n}.kept'].numel()) for n in rows]}")


def spanning_stop_string(tok, ids):
    """A 4-character stop string around the boundary after generated token j (2 characters each
    side) that first occurs there and that no single token holds; where it starts in the text,
    and the number of tokens after which it is complete."""
    text = tok.decode(ids)
    for j in range(1, len(ids) - 1):
        head = tok.decode(ids[:j])
        b = len(head)
        s = text[b - 2:b + 2]
        if b < 2 or len(s) < 4 or " " in s or "\n" in s or not text.startswith(head) or text.find(s) != b - 2:
            continue
        m = next(m for m in range(1, len(ids) + 1) if s in tok.decode(ids[:m]))
        if s not in tok.decode(ids[m - 1:m]):
            return s, b - 2, m
    raise RuntimeError("no spanning stop string found")


def stop_fixtures(model, tok, tensors, meta):
    for i, text in enumerate(BEAM_PROMPTS[:2]):
        ids = tok(text, return_tensors="pt")["input_ids"]
        full = model.generate(ids, max_new_tokens=STOP_NEW_TOKENS, do_sample=False, pad_token_id=model.config.eos_token_id)[0, ids.shape[1]:]
        s, at, n_tokens = spanning_stop_string(tok, full.tolist())
        out = model.generate(ids, max_new_tokens=STOP_NEW_TOKENS, do_sample=False, stop_strings=[s], tokenizer=tok,
                             pad_token_id=model.config.eos_token_id)[0, ids.shape[1]:]
        assert out.shape[0] == n_tokens, (out.shape, n_tokens)
        tensors[f"stop.{i}.tokens"] = out.to(torch.int64)
        meta[f"stop.{i}.prompt"] = text
        meta[f"stop.{i}.string"] = s
        meta[f"stop.{i}.cut_text"] = tok.decode(out)[:at]
        print(f"stop [{i}] {s!r} after {n_tokens} tokens: {tok.decode(out)[:at]!r}")
    # Beam search with a stop string: hypotheses that reach it finish like those at <|im_end|>.
    ids = tok(BEAM_PROMPTS[0], return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=BEAM_NEW_TOKENS, num_beams=4, do_sample=False, stop_strings=[BEAM_STOP], tokenizer=tok,
                         output_scores=True, return_dict_in_generate=True, pad_token_id=model.config.eos_token_id)
    n = int((out.beam_indices[0] >= 0).sum())
    tensors["stop.beam.tokens"] = out.sequences[0, ids.shape[1]:ids.shape[1] + n].to(torch.int64)
    tensors["stop.beam.score"] = out.sequences_scores[:1].to(torch.float32)
    meta["stop.beam.string"] = BEAM_STOP
    print(f"beam 4 stop {BEAM_STOP!r}: {tok.decode(tensors['stop.beam.tokens'])!r}")


def make_generation(gguf_path: Path, out: Path, reference: dict):
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = LlamaForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32,
                                             attn_implementation="eager").eval()
    tensors, meta = {}, base_metadata()
    meta.update({"model": gguf_path.name, "beam_new_tokens": str(BEAM_NEW_TOKENS), "beams": json.dumps(BEAMS),
                 "stop_new_tokens": str(STOP_NEW_TOKENS), "eos_token_id": json.dumps(model.generation_config.eos_token_id)})
    with torch.no_grad():
        beam_fixtures(model, tok, tensors, meta)
        processor_fixtures(reference, tensors, meta)
        stop_fixtures(model, tok, tensors, meta)
    (out / "smollm2").mkdir(parents=True, exist_ok=True)
    write_reference(out / "smollm2" / "generation.safetensors", tensors, meta)
