"""Writes tests/fixtures/smollm2/chat_prompts.json: SmolLM2-135M-Instruct's chat template
rendered by transformers' `apply_chat_template` (Jinja, from the GGUF's
`tokenizer.chat_template`) for instruction-tuning prompts, with the token ids of the same call.
`tests/instruct.rs` renders the same cases with the engine's ChatML renderer
(`data::instruct`, which does not run Jinja) and compares text and ids.

Run with the baseline venv plus the `gguf` package (see README.md):
    /root/.cache/polyadapt-llama/venv/bin/python tests/reference/make_chat_fixtures.py

The engine's mapping of an example to chat messages (documented in data/instruct.rs) is
mirrored here: texts trimmed; the first user turn `{definition}\n\n{input}` (`{input}` without a
definition), later user turns `{input}`; each demonstration a user turn then an assistant turn
with its output. Per case the fixture holds the parts, the prompt (`add_generation_prompt=True`)
and its ids, and the whole conversation with the final answer (`add_generation_prompt=False`):
the engine's prompt followed by its target `{output}<|im_end|>` is that text less the final
newline.
"""

import argparse
import json
import sys
from pathlib import Path

sys.dont_write_bytecode = True

import transformers
from transformers import AutoTokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_GGUF = Path.home() / ".cache/polyadapt/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"

DEF = "Translate the given Romanian sentence into English."
CASES = [
    {"name": "zero_shot_ro", "definition": DEF, "demos": [], "input": "Un bărbat cântă la un flaut.", "output": "A man is playing a flute."},
    {
        "name": "two_demos",
        "definition": " " + DEF + "\n",
        "demos": [
            {"input": "Doi bărbați joacă șah.", "output": "Two men are playing chess."},
            {"input": " O femeie taie o ceapă. ", "output": "A woman is slicing an onion.\n"},
        ],
        "input": "Un câine aleargă prin zăpadă.",
        "output": "A dog runs through the snow.",
    },
    {"name": "no_definition", "definition": None, "demos": [], "input": "What is 2 + 3?", "output": "5"},
    {
        "name": "multiline_input",
        "definition": "Answer with True or False.\nThink about operator precedence.",
        "demos": [{"input": "not ( True ) and ( True ) is", "output": "False"}],
        "input": "\n  True and not False or ( False ) is  \n",
        "output": "True",
    },
]


def messages(case):
    d = case["definition"].strip() if case["definition"] else None

    def first(text):
        return f"{d}\n\n{text.strip()}" if d else text.strip()

    out = []
    for i, demo in enumerate(case["demos"]):
        out.append({"role": "user", "content": first(demo["input"]) if i == 0 else demo["input"].strip()})
        out.append({"role": "assistant", "content": demo["output"].strip()})
    out.append({"role": "user", "content": first(case["input"]) if not case["demos"] else case["input"].strip()})
    return out


def ids_of(enc):
    # transformers 5 returns a BatchEncoding from tokenize=True; 4.x a list.
    return list(enc["input_ids"]) if hasattr(enc, "keys") else list(enc)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gguf", type=Path, default=DEFAULT_GGUF, help="SmolLM2-135M-Instruct's GGUF (engine-train fetch-model smollm2-135m-instruct)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "tests/fixtures/smollm2/chat_prompts.json")
    args = p.parse_args(argv)
    tok = AutoTokenizer.from_pretrained(str(args.gguf.parent), gguf_file=args.gguf.name)
    rows = []
    for case in CASES:
        msgs = messages(case)
        prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        ids = ids_of(tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True))
        answered = msgs + [{"role": "assistant", "content": case["output"].strip()}]
        full = tok.apply_chat_template(answered, tokenize=False, add_generation_prompt=False)
        rows.append({**case, "messages": msgs, "prompt": prompt, "prompt_ids": ids, "conversation": full})
        print(case["name"], len(ids), repr(prompt[-60:]))
    doc = {"renderer": f"transformers {transformers.__version__} apply_chat_template, tokenizer from {args.gguf.name}", "cases": rows}
    args.out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
