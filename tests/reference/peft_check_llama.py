"""Decoder adapters against Hugging Face peft 0.21.2 on transformers' LlamaForCausalLM, in both
directions.

    /root/.cache/polyadapt-llama/venv/bin/python tests/reference/peft_check_llama.py [fixtures|real|all]

fixtures (committed; tests/llama_peft_fixtures.rs checks them without Python), on the tiny
random LLaMA of tests/fixtures/tiny-llama (GQA: 4 query heads over 2 key/value heads; untied
head) and the right-padded batch of its reference.safetensors:
  1. runs `cargo test --release --test llama_peft_fixtures write_llama_fixtures -- --ignored`
     with POLYADAPT_WRITE_PEFT_FIXTURES=1: the engine saves its adapters (seeded init, then
     random values) into tests/fixtures/peft/llama_from_engine/<case>/;
  2. loads each into transformers + peft (`PeftModel.from_pretrained`; a combination folder by
     folder: LoRA merged with `merge_and_unload`, bottleneck adapters as forward hooks on
     `o_proj` / `down_proj` written from their documented format, the prompt-learning adapter
     last) and writes the logits to <case>/peft_expected.safetensors (virtual-token rows of
     prompt tuning dropped);
  3. saves adapters with peft itself (random values) into tests/fixtures/peft/llama_from_peft/
     <case>/ with peft's logits; each is reloaded by peft and checked against the model in memory.
real (not committed): SmolLM2-135M-Instruct (the GGUF of `engine-train fetch-model
  smollm2-135m-instruct`, read by transformers through the gguf package): `engine-train train`
  runs of each method (a few steps of instruction tuning on the Romanian->English task of
  ../shared/data/niv2) write their adapter/; peft loads each onto `LlamaForCausalLM` and its
  logits on texts_multilingual.txt are compared with `engine-train hidden --logits --adapter`
  (relative error over real tokens, limit 1e-4), and with the plain model's (to show the
  comparison can tell); then `engine-train generate --adapter` (greedy, KV cache) against
  `PeftModel.generate`, token for token.
generate (committed, part of fixtures): peft's greedy generations with the peft-saved adapters
  of the tiny model, llama_from_peft/<case>/peft_generate.json.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_common import base_metadata, make_deterministic, rel_err, write_reference  # noqa: E402
from peft_check import PROMPT_TYPES, cargo, folders_of, peft_type, randomize_trainable  # noqa: E402

import peft  # noqa: E402
from peft import LoraConfig, PeftModel, PrefixTuningConfig, PromptTuningConfig, get_peft_model  # noqa: E402
from transformers import LlamaForCausalLM  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
TINY = FIX / "tiny-llama"
PEFT_FIX = FIX / "peft"
TOL_REAL = 1e-4
NIV2_TASK = ROOT.parent / "shared" / "data" / "niv2" / "tasks" / "task1435_ro_sts_parallel_language_translation_ro_to_en.json"


def load_tiny():
    return LlamaForCausalLM.from_pretrained(TINY, attn_implementation="eager", dtype=torch.float32).eval()


def tiny_inputs():
    ref = load_file(str(TINY / "reference.safetensors"))
    return {"input_ids": ref["input_ids"], "attention_mask": ref["attention_mask"]}


def add_bottleneck_hooks(model, folder: Path) -> int:
    """POLYADAPT_BOTTLENECK on a decoder (models/peft/README.md): `self_attn.adapter` follows the
    attention's output projection o_proj, `mlp.adapter` the feed-forward's down_proj; each
    adds up(act(down(h))) to that output."""
    cfg = json.loads((folder / "adapter_config.json").read_text())
    t = load_file(str(folder / "adapter_model.safetensors"))
    act = {"gelu": torch.nn.functional.gelu, "relu": torch.relu}[cfg["non_linearity"]]
    base = "base_model.model."
    n = 0
    for key in sorted(t):
        if not key.endswith(".adapter.down.weight"):
            continue
        module = key[len(base) : -len(".adapter.down.weight")]  # model.layers.<l>.self_attn | mlp
        stem = key[: -len("down.weight")]
        dw, db, uw, ub = (t[stem + p] for p in ("down.weight", "down.bias", "up.weight", "up.bias"))
        inner = module + (".o_proj" if module.endswith("self_attn") else ".down_proj")

        def hook(_m, _inp, out, dw=dw, db=db, uw=uw, ub=ub):
            return out + torch.nn.functional.linear(act(torch.nn.functional.linear(out, dw, db)), uw, ub)

        model.get_submodule(inner).register_forward_hook(hook)
        n += 1
    return n


def apply_adapter(base, adir: Path):
    """Returns (model, virtual prompt tokens to drop from the logits)."""
    folders = folders_of(adir)
    if not folders:
        raise RuntimeError(f"{adir}: no adapter")
    combined = len(folders) > 1
    model, drop = base, 0
    for f in [f for f in folders if peft_type(f) == "LORA"]:
        model = PeftModel.from_pretrained(model, f)
        if combined:
            model = model.merge_and_unload()
    for f in [f for f in folders if peft_type(f) == "POLYADAPT_BOTTLENECK"]:
        add_bottleneck_hooks(model.get_base_model() if isinstance(model, PeftModel) else model, f)
    for f in [f for f in folders if peft_type(f) in PROMPT_TYPES]:
        model = PeftModel.from_pretrained(model, f)
        if peft_type(f) == "PROMPT_TUNING":
            drop = model.peft_config["default"].num_virtual_tokens
    return model.eval(), drop


def logits_of(model, inputs, drop: int):
    with torch.no_grad():
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], return_dict=True)
    return out.logits[:, drop:].contiguous()


def expected_file(path: Path, inputs, logits, meta):
    tensors = {**{k: v.to(torch.int64) for k, v in inputs.items()}, "logits": logits}
    write_reference(path, tensors, {**base_metadata(), "peft_version": peft.__version__, **meta})


# ---------------------------------------------------------------------------------------------
# Committed fixtures (tiny LLaMA)


def engine_fixtures():
    cargo("test", "--release", "--test", "llama_peft_fixtures", "write_llama_fixtures", "--", "--ignored", "--exact",
          env={"POLYADAPT_WRITE_PEFT_FIXTURES": "1"})
    inputs = tiny_inputs()
    for adir in sorted((PEFT_FIX / "llama_from_engine").iterdir()):
        folders = folders_of(adir)
        make_deterministic(0)
        model, drop = apply_adapter(load_tiny(), adir)
        logits = logits_of(model, inputs, drop)
        expected_file(adir / "peft_expected.safetensors", inputs, logits,
                      {"case": adir.name, "adapter": "saved by the engine", "folders": ",".join(f.name for f in folders)})
        print(f"llama_from_engine/{adir.name}: {[peft_type(f) for f in folders]}")


def peft_cases():
    all7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    return [
        ("lora_all", LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=all7), 21, 0.3),
        ("lora_layer0_rslora", LoraConfig(task_type="CAUSAL_LM", r=2, lora_alpha=3, target_modules=["q_proj", "v_proj", "up_proj"],
                                          layers_to_transform=[0], use_rslora=True), 22, 0.3),
        ("prefix", PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4), 23, 1.0),
        ("prefix_proj", PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3, prefix_projection=True, encoder_hidden_size=8), 24, 0.5),
        ("prompt", PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3), 25, 1.0),
    ]


def peft_fixtures():
    inputs = tiny_inputs()
    for name, config, seed, scale in peft_cases():
        make_deterministic(seed)
        model = get_peft_model(load_tiny(), config)
        randomize_trainable(model, seed, scale)
        model.eval()
        drop = config.num_virtual_tokens if config.peft_type.value == "PROMPT_TUNING" else 0
        want = logits_of(model, inputs, drop)
        out = PEFT_FIX / "llama_from_peft" / name
        model.save_pretrained(out)
        reloaded, d2 = apply_adapter(load_tiny(), out)
        e = rel_err(logits_of(reloaded, inputs, d2), want)
        if e > 1e-6:
            raise RuntimeError(f"{name}: peft's reload differs from peft's model in memory: {e:.2e}")
        expected_file(out / "peft_expected.safetensors", inputs, want, {"case": name, "adapter": "saved by peft"})
        print(f"llama_from_peft/{name}: {config.peft_type.value}, saved and reloaded by peft")


GEN_NEW_TOKENS = 8
REAL_NEW_TOKENS = 16


def greedy(model, ids: list[int], new: int) -> list[int]:
    """peft's greedy continuation of one unpadded prompt (the new tokens only)."""
    x = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=new, do_sample=False,
                             num_beams=1, pad_token_id=0)
    return out[0, len(ids):].tolist()


def peft_generations():
    """Greedy generations (KV cache) of the peft-saved adapters, one prompt at a time: the real
    tokens of each row of the tiny model's reference batch, written to <case>/peft_generate.json."""
    inputs = tiny_inputs()
    prompts = [row[mask.bool()].tolist() for row, mask in zip(inputs["input_ids"], inputs["attention_mask"])]
    for name, *_ in peft_cases():
        out = PEFT_FIX / "llama_from_peft" / name
        model, _ = apply_adapter(load_tiny(), out)
        gens = [greedy(model, p, GEN_NEW_TOKENS) for p in prompts]
        doc = {"case": name, "max_new_tokens": GEN_NEW_TOKENS, "prompts": prompts, "generations": gens,
               "peft_version": peft.__version__, **base_metadata()}
        (out / "peft_generate.json").write_text(json.dumps(doc, indent=1) + "\n")
        print(f"llama_from_peft/{name}: greedy generations {gens}")


# ---------------------------------------------------------------------------------------------
# SmolLM2 end to end: `engine-train train` runs, their adapters in peft


def smollm2_gguf() -> Path:
    cache = Path(os.environ.get("POLYADAPT_CACHE", Path.home() / ".cache" / "polyadapt"))
    found = sorted((cache / "models" / "smollm2-135m-instruct").glob("*.gguf"))
    if not found:
        raise SystemExit("SmolLM2 is not in the cache: run `target/release/engine-train fetch-model smollm2-135m-instruct`")
    return found[0]


RUN_METHODS = {
    "lora": '[methods.lora]\nr = 4\nalpha = 8\ntargets = ["q", "k", "v", "o", "gate", "up", "down"]\n',
    "prefix": "[methods.prefix]\nvirtual_tokens = 4\n",
    "prefix_proj": "[methods.prefix]\nvirtual_tokens = 3\nprojection = 32\n",
    "prompt": "[methods.prompt]\nvirtual_tokens = 4\n",
    "lora_prompt": '[methods.lora]\nr = 2\nalpha = 4\ntargets = ["q", "v"]\n\n[methods.prompt]\nvirtual_tokens = 2\n',
}


def run_config(methods: str) -> str:
    return f"""
[model]
name = "smollm2-135m-instruct"

[run]
seed = 3
steps = 3
batch_size = 2
max_seq_len = 96
checkpoint_every = 0

[optim]
lr = 2e-2
clip_norm = 0.0

{methods}
[[tasks]]
name = "ro-en"
kind = "gen"
train = {{ path = "{NIV2_TASK}", sample = 6 }}
eval = [{{ name = "test", path = "{NIV2_TASK}", sample = 2 }}]

[tasks.gen]
format = "chat"
max_new_tokens = 8
metrics = ["bleu", "rouge_l"]
"""


def engine(*args):
    exe = ROOT / "target" / "release" / "engine-train"
    subprocess.run([str(exe), *args], check=True)


def real_check():
    cargo("build", "--release", "--bin", "engine-train")
    gguf = smollm2_gguf()
    work = ROOT / "target" / "peft-check-llama"
    work.mkdir(parents=True, exist_ok=True)
    texts = FIX / "texts_multilingual.txt"
    engine("hidden", "--model", "smollm2-135m-instruct", "--texts", str(texts), "--layers", "0", "--logits", "--quiet",
           "--out", str(work / "plain.safetensors"))
    plain = load_file(str(work / "plain.safetensors"))
    inputs = {"input_ids": plain["input_ids"], "attention_mask": plain["attention_mask"]}
    real = inputs["attention_mask"].bool()
    worst = 0.0
    for case, methods in RUN_METHODS.items():
        run = work / case
        if run.exists():
            subprocess.run(["rm", "-rf", str(run)], check=True)
        cfg = work / f"{case}.toml"
        cfg.write_text(run_config(methods))
        engine("train", "--config", str(cfg), "--out", str(run))
        out = work / f"{case}.safetensors"
        engine("hidden", "--model", "smollm2-135m-instruct", "--texts", str(texts), "--layers", "0", "--logits", "--quiet",
               "--adapter", str(run / "adapter"), "--out", str(out))
        eng = load_file(str(out))
        base = LlamaForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, attn_implementation="eager", dtype=torch.float32)
        model, drop = apply_adapter(base.eval(), run / "adapter")
        want = logits_of(model, inputs, drop)
        e = rel_err(eng["logits"][real], want[real])
        moved = rel_err(eng["logits"][real], plain["logits"][real])
        print(f"  {case:<12} logits relative error {e:.2e} (the trained adapter moves the logits by {moved:.3f})")
        if moved < 1e-3:
            raise RuntimeError(f"{case}: the adapter barely changes the logits; the check would not tell")
        worst = max(worst, e)
        # Greedy generation with the KV cache: `engine-train generate --adapter` against
        # PeftModel.generate, token for token.
        gen = work / f"{case}.jsonl"
        engine("generate", "--model", "smollm2-135m-instruct", "--adapter", str(run / "adapter"), "--prompts", str(texts),
               "--max-new-tokens", str(REAL_NEW_TOKENS), "--output", str(gen))
        got = [json.loads(line)["tokens"] for line in gen.read_text().splitlines()]
        prompts = [row[m].tolist() for row, m in zip(inputs["input_ids"], real)]
        want = [greedy(model, p, REAL_NEW_TOKENS) for p in prompts]
        same = sum(g == w for g, w in zip(got, want))
        print(f"  {case:<12} greedy generations identical to peft's: {same} of {len(want)}")
        if same != len(want):
            bad = [(i, g, w) for i, (g, w) in enumerate(zip(got, want)) if g != w]
            raise RuntimeError(f"{case}: generations differ from peft's: {bad}")
    print(f"worst relative error over the SmolLM2 runs: {worst:.2e} (limit {TOL_REAL:.0e})")
    if worst > TOL_REAL:
        raise SystemExit(1)


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what not in ("fixtures", "generate", "real", "all"):
        raise SystemExit(__doc__)
    print(f"torch {torch.__version__}, peft {peft.__version__}")
    if what in ("fixtures", "all"):
        engine_fixtures()
        peft_fixtures()
    if what in ("fixtures", "generate", "all"):
        peft_generations()
    if what in ("real", "all"):
        real_check()


if __name__ == "__main__":
    main()
