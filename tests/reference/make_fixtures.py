"""Writes the reference fixtures the Rust encoder tests compare against (see README.md).

Run from anywhere:
    /root/.cache/polyadapt-baseline/venv/bin/python tests/reference/make_fixtures.py

Outputs (under tests/fixtures/):
    texts_multilingual.txt                    8 sentences in 8 languages
    minilm_reference.safetensors              all-MiniLM-L6-v2 hidden states, layers 0, 3, 6
    me5_reference.safetensors                 multilingual-e5-small hidden states, layers 0, 6, 12
    tiny-xlmr/, tiny-bert-tanh/               tiny random checkpoints + reference.safetensors
"""

import argparse
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # keep tests/reference free of __pycache__

import torch
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from reference_common import (
    base_metadata,
    check_eager,
    file_size,
    fmt_err,
    make_deterministic,
    noise_floor,
    run_encoder,
    sha256_of,
    write_reference,
    dir_size,
)
from tiny_models import make_tiny_bert_tanh, make_tiny_xlmr

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS = Path("/root/.cache/polyadapt-baseline/models")
SEED = 20240601

# One sentence per language, 5-15 words, lengths varied so the batch needs padding.
# The English line carries the punctuation / numbers / mixed-case cases.
TEXTS = [
    "On 3 March 2024, Dr. O'Neil's NASA team measured 42.5°C - twice the forecast!",
    "Der kleine Hund schläft jeden Nachmittag unter dem alten Küchentisch.",
    "¿Dónde está la biblioteca más cercana?",
    "Вчера вечером мы долго гуляли по набережной.",
    "मेरी दादी हर सुबह बगीचे में पौधों को पानी देती हैं।",
    "يحب الأطفال اللعب في الحديقة بعد انتهاء المدرسة.",
    "今天下午我们在图书馆里一起学习了三个小时。",
    "Watoto wadogo wanacheza mpira uwanjani leo.",
]
LANGUAGES = ["en", "de", "es", "ru", "hi", "ar", "zh", "sw"]


def write_texts(path: Path) -> None:
    # No newline after the last line: every line reader then sees exactly 8 lines.
    path.write_bytes("\n".join(TEXTS).encode("utf-8"))


def tokenize(tok, lines):
    enc = tok(lines, padding=True, add_special_tokens=True, truncation=False, return_tensors="pt")
    input_ids = enc["input_ids"].to(torch.long)
    attention_mask = enc["attention_mask"].to(torch.long)
    if "token_type_ids" in enc:
        token_type_ids, source = enc["token_type_ids"].to(torch.long), "tokenizer"
    else:
        # The XLM-R style tokenizer of me5 returns none; BertModel would then use zeros itself.
        token_type_ids, source = torch.zeros_like(input_ids), "zeros (tokenizer returns none)"
    return input_ids, attention_mask, token_type_ids, source


def describe_tokens(tok, input_ids, attention_mask):
    """Per line: token strings (real tokens only) and [UNK] count."""
    rows = []
    for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
        real = [i for i, m in zip(ids, mask) if m == 1]
        tokens = tok.convert_ids_to_tokens(real)
        unk = sum(1 for i in real if i == tok.unk_token_id)
        rows.append((tokens, unk))
    return rows


def make_real_reference(name: str, model_dir: Path, layers_wanted, out_path: Path, lines) -> dict:
    tok = AutoTokenizer.from_pretrained(model_dir)
    input_ids, attention_mask, token_type_ids, tt_source = tokenize(tok, lines)
    if bool(attention_mask.all()):
        raise RuntimeError(f"{name}: no padding in the batch; vary the sentence lengths")
    if not bool((input_ids[attention_mask == 0] == tok.pad_token_id).all()):
        raise RuntimeError(f"{name}: padded positions do not hold the pad id {tok.pad_token_id}")

    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    if type(model).__name__ != "BertModel":
        raise RuntimeError(f"{name}: expected BertModel, got {type(model).__name__}")
    check_eager(model, name)
    n_layers = model.config.num_hidden_layers
    layers = [0, n_layers // 2, n_layers]
    if layers != layers_wanted:
        raise RuntimeError(f"{name}: layers {layers} != expected {layers_wanted}")

    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    hidden = run_encoder(model, **inputs)
    if len(hidden) != n_layers + 1:
        raise RuntimeError(f"{name}: {len(hidden)} hidden states for {n_layers} layers")
    floor = noise_floor(model, inputs, hidden, layers)

    token_rows = describe_tokens(tok, input_ids, attention_mask)
    tensors = dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    tensors.update({f"hidden.{l}": hidden[l] for l in layers})
    metadata = base_metadata()
    metadata.update(
        {
            "model": name,
            "model_dir": str(model_dir),
            "sha256.model.safetensors": sha256_of(model_dir / "model.safetensors"),
            "texts": "tests/fixtures/texts_multilingual.txt",
            "tokenizer": f"AutoTokenizer ({type(tok).__name__}), padding=True (longest), special tokens added",
            "pad_token_id": str(tok.pad_token_id),
            "token_type_ids_source": tt_source,
            "layers": ",".join(map(str, layers)),
            "unk_per_line": ",".join(str(unk) for _, unk in token_rows),
        }
    )
    metadata.update({f"f32_vs_f64_rel_err.{l}": fmt_err(e) for l, e in floor.items()})
    write_reference(out_path, tensors, metadata)

    print(f"\n== {name}: tokens per line (real tokens only) ==")
    for lang, (tokens, unk) in zip(LANGUAGES, token_rows):
        print(f"  [{lang}] {len(tokens):2d} tokens, {unk} unk: {' '.join(tokens)}")
    return dict(name=name, path=out_path, tensors=tensors, floor=floor, extra="", size_dir=None)


def print_summary(results, fixtures: Path) -> None:
    print("\n== summary ==")
    print(f"{'fixture':<16} {'tensor':<16} {'dtype':<8} {'shape':<16} f32 vs f64 rel err")
    for r in results:
        for tname, t in sorted(r["tensors"].items()):
            layer = int(tname.split(".")[1]) if tname.startswith("hidden.") else None
            err = fmt_err(r["floor"][layer]) if layer is not None else ""
            dtype = str(t.dtype).replace("torch.", "")
            print(f"{r['name']:<16} {tname:<16} {dtype:<8} {str(list(t.shape)):<16} {err}")
        size = dir_size(r["size_dir"]) if r["size_dir"] else file_size(r["path"])
        what = r["size_dir"].name + "/" if r["size_dir"] else r["path"].name
        print(f"{'':<16} size of {what}: {size / 1024:.1f} KiB {r['extra']}")
    total = dir_size(fixtures)
    print(f"total size of {fixtures}: {total / 1024:.1f} KiB")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minilm", type=Path, default=MODELS / "all-MiniLM-L6-v2")
    parser.add_argument("--me5", type=Path, default=MODELS / "me5-small")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "tests" / "fixtures")
    args = parser.parse_args(argv)

    hf_logging.disable_progress_bar()
    make_deterministic(SEED)
    fixtures = args.out
    fixtures.mkdir(parents=True, exist_ok=True)
    texts_path = fixtures / "texts_multilingual.txt"
    write_texts(texts_path)
    lines = texts_path.read_text(encoding="utf-8").split("\n")
    assert lines == TEXTS

    results = [
        make_real_reference("all-MiniLM-L6-v2", args.minilm, [0, 3, 6], fixtures / "minilm_reference.safetensors", lines),
        make_real_reference("me5-small", args.me5, [0, 6, 12], fixtures / "me5_reference.safetensors", lines),
        make_tiny_xlmr(fixtures / "tiny-xlmr"),
        make_tiny_bert_tanh(fixtures / "tiny-bert-tanh"),
    ]
    print_summary(results, fixtures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
