"""Writes the GGUF fixtures: quantised blocks with the `gguf` package's dequantisation, the
real SmolLM2 file's tensors as transformers loads them, and its tokens (see README.md).

Run with a Python that has the `gguf` package next to torch and transformers (the baseline venv
plus gguf==0.19.0, see README.md):
    /root/.cache/polyadapt-llama/venv/bin/python tests/reference/make_gguf_fixtures.py

Outputs (under tests/fixtures/gguf/):
    quants.gguf               random blocks of every supported type (+ one unsupported), every
                              metadata value type, a rank-3 and a rank-1 tensor
    quants_expected.safetensors  gguf.quants.dequantize of each tensor, f32, Hugging Face shape
    quants_metadata.json      the metadata written, as (type, value)
    smollm2_tensors.json      per tensor of the real file: type, shape, checksum of
                              gguf.dequantize; per parameter of transformers' LlamaForCausalLM
                              loaded from the same file: checksum (Q/K un-permuted there)
    smollm2_tokens.json       token ids of transformers' tokenizer built from the file
"""

import argparse
import json
import sys
from pathlib import Path

sys.dont_write_bytecode = True

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T
import torch

from reference_common import write_reference

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_GGUF = Path.home() / ".cache/polyadapt/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
SEED = 20250207

# Byte offsets of the f16 scales of each block type (randomised blocks get finite scales there).
F16_OFFSETS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208], T.Q2_K: [80, 82],
}
LEGACY = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
K_QUANTS = [T.Q4_K, T.Q5_K, T.Q6_K]

PROMPTS = [
    "The capital of France is",
    "In 2024, 12345 people visited the museum; 3.14159 is pi.",
    "Bună ziua! Mă numesc Ana și locuiesc în București, lângă Dâmbovița.",
    "東京は日本の首都です。今日はいい天気ですね。",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)  # recursion\n",
    "Emojis: 🙂🚀🇷🇴 and ZWJ 👩‍💻, tabs\tand   spaces.",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "  leading spaces, trailing newline\n\nand CRLF\r\n<|endoftext|>done",
]


def checksum(values: np.ndarray) -> str:
    """sum_i bits(v_i) * (i % 65521 + 1) mod 2^64 over the f32 bit patterns: any changed bit
    changes it, and the Rust side computes it exactly (wrapping u64 arithmetic)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).reshape(-1).view(np.uint32).astype(np.uint64)
    weights = (np.arange(bits.size, dtype=np.uint64) % np.uint64(65521)) + np.uint64(1)
    return str(int(np.sum(bits * weights, dtype=np.uint64)))


def random_blocks(rng, qtype, rows, cols):
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = rows * cols // block_elems
    raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    for off in F16_OFFSETS[qtype]:
        scale = rng.uniform(-0.5, 0.5, size=n_blocks).astype(np.float16)
        raw[:, off:off + 2] = scale.view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(rows, -1)


def make_quants(out: Path):
    rng = np.random.default_rng(SEED)
    path = out / "quants.gguf"
    w = gguf.GGUFWriter(str(path), "test")
    meta = {}

    def put(key, vtype, value, sub=None):
        w.add_key_value(key, value, vtype, sub_type=sub)
        meta[key] = [vtype.name, value]

    V = gguf.GGUFValueType
    put("t.u8", V.UINT8, 200)
    put("t.i8", V.INT8, -100)
    put("t.u16", V.UINT16, 60000)
    put("t.i16", V.INT16, -30000)
    put("t.u32", V.UINT32, 4000000000)
    put("t.i32", V.INT32, -2000000000)
    put("t.f32", V.FLOAT32, 0.25)
    put("t.bool", V.BOOL, True)
    put("t.string", V.STRING, "Bună ziua, 東京 🙂")
    put("t.u64", V.UINT64, 2**63 + 5)
    put("t.i64", V.INT64, -(2**62))
    put("t.f64", V.FLOAT64, -1.5e-300)
    put("t.array_i32", V.ARRAY, [1, -2, 3], V.INT32)
    put("t.array_str", V.ARRAY, ["a", "", "ĠĊ"], V.STRING)
    put("t.array_f32", V.ARRAY, [0.5, -4.0], V.FLOAT32)

    rows, cols = 3, 512
    expected = {}
    for qtype in [T.F32, T.F16, T.BF16] + LEGACY + K_QUANTS + [T.Q2_K]:
        name = f"q.{qtype.name}"
        if qtype in (T.F32, T.F16):
            data = rng.standard_normal((rows, cols)).astype(np.float32 if qtype == T.F32 else np.float16)
            w.add_tensor(name, data)
            raw = data.view(np.uint8)
        elif qtype == T.BF16:
            raw = gguf.quants.quantize(rng.standard_normal((rows, cols)).astype(np.float32), T.BF16)
            w.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=qtype)
        else:
            raw = random_blocks(rng, qtype, rows, cols)
            if qtype in LEGACY:  # two rows as the quantiser writes them, one of random bytes
                raw[:2] = gguf.quants.quantize(rng.standard_normal((2, cols)).astype(np.float32) * 3, qtype)
            w.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=qtype)
        if qtype != T.Q2_K:
            expected[name] = np.ascontiguousarray(gguf.quants.dequantize(raw, qtype).reshape(rows, cols), dtype=np.float32)
    r3 = rng.standard_normal((2, 3, 64)).astype(np.float32)
    w.add_tensor("shape.rank3", r3)
    expected["shape.rank3"] = r3
    r1 = rng.standard_normal(32).astype(np.float32)
    w.add_tensor("shape.rank1", r1)
    expected["shape.rank1"] = r1

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # Read back through the package's reader, so the expected values are those of the bytes
    # in the file.
    reader = gguf.GGUFReader(str(path))
    for t in reader.tensors:
        if t.name in expected:
            got = gguf.quants.dequantize(t.data, t.tensor_type).reshape(expected[t.name].shape)
            assert np.array_equal(got, expected[t.name]), t.name
    write_reference(out / "quants_expected.safetensors", {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in expected.items()},
                    {"gguf": "0.19.0", "seed": str(SEED), "what": "gguf.quants.dequantize of each tensor of quants.gguf"})
    (out / "quants_metadata.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"quants.gguf: {path.stat().st_size} bytes, {len(expected)} expected tensors")


def make_real(gguf_path: Path, out: Path):
    from transformers import AutoTokenizer, LlamaForCausalLM

    reader = gguf.GGUFReader(str(gguf_path))
    tensors = {}
    for t in reader.tensors:
        values = gguf.dequantize(t.data, t.tensor_type)
        tensors[t.name] = {"type": t.tensor_type.name, "shape": [int(d) for d in reversed(t.shape)], "checksum": checksum(values)}
    model = LlamaForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    params = {name: checksum(p.detach().numpy()) for name, p in model.state_dict().items()}
    record = {
        "file": gguf_path.name,
        "gguf_tensors": tensors,
        "transformers_parameters": params,
        "tied_word_embeddings": bool(model.config.tie_word_embeddings),
        "versions": {"gguf": "0.19.0", "transformers": __import__("transformers").__version__, "torch": torch.__version__},
    }
    (out / "smollm2_tensors.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"smollm2_tensors.json: {len(tensors)} GGUF tensors, {len(params)} transformers parameters")

    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    rows = [{"text": p, "ids": tok(p)["input_ids"], "tokens": tok.convert_ids_to_tokens(tok(p)["input_ids"])} for p in PROMPTS]
    for r in rows:
        decoded = tok.decode(r["ids"], skip_special_tokens=False)
        r["decoded"] = decoded
    out_tok = {"tokenizer": f"transformers {__import__('transformers').__version__} AutoTokenizer.from_pretrained(gguf_file=...)", "prompts": rows}
    (out / "smollm2_tokens.json").write_text(json.dumps(out_tok, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    for r in rows:
        print(len(r["ids"]), r["tokens"][:12])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gguf", type=Path, default=DEFAULT_GGUF, help="the SmolLM2-135M-Instruct Q4_1 file (engine-train fetch-model smollm2-135m-instruct)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "tests/fixtures/gguf")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    make_quants(args.out)
    make_real(args.gguf, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
