"""The engine's adapters against Hugging Face peft 0.21.2 itself, in both directions.

    /root/.cache/polyadapt-baseline/venv/bin/python tests/reference/peft_check.py [fixtures|real|all]

fixtures (committed, checked by tests/peft_fixtures.rs without Python):
  1. runs `cargo test --test peft_fixtures write_engine_fixtures -- --ignored` with
     POLYADAPT_WRITE_PEFT_FIXTURES=1: the engine saves its adapters (tiny models, random values)
     into tests/fixtures/peft/from_engine/<case>/;
  2. loads each into transformers + peft (`PeftModel.from_pretrained`; a combination folder by
     folder: LoRA merged with `merge_and_unload`, bottleneck adapters as forward hooks written
     from their documented format, the prompt-learning adapter last) and writes what peft
     computes to <case>/peft_expected.safetensors;
  3. saves adapters with peft itself (random values) into tests/fixtures/peft/from_peft/<case>/
     with peft's outputs next to them.
real (not committed): on multilingual-e5-small and all-MiniLM-L6-v2, the engine's adapters
  (written by `write_real_model_adapters`) and peft-saved ones, run through
  `engine-train hidden --adapter` and through peft on the 8 lines of texts_multilingual.txt;
  prints the relative error per layer (real tokens) and fails above 1e-4.

Also checked and printed: peft behaviours the engine matches or documents (position shift under
prefix tuning, token_type_ids dropped under prompt learning and by the QA wrapper, the mixed
model refusing prefix tuning).
"""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_common import base_metadata, make_deterministic, rel_err, write_reference  # noqa: E402

import peft  # noqa: E402
import transformers  # noqa: E402
from peft import LoraConfig, PeftModel, PrefixTuningConfig, PromptTuningConfig, get_peft_model  # noqa: E402
from transformers import AutoConfig, AutoModel, AutoModelForQuestionAnswering, AutoTokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
PEFT_FIX = FIX / "peft"
HF_MODELS = Path("/root/.cache/polyadapt-baseline/models")
REAL = {"multilingual-e5-small": HF_MODELS / "me5-small", "all-minilm-l6-v2": HF_MODELS / "all-MiniLM-L6-v2"}
TOL_REAL = 1e-4
TOL_TINY = 1e-5
PROMPT_TYPES = ("PREFIX_TUNING", "PROMPT_TUNING")

warnings.filterwarnings("ignore", category=FutureWarning)
# Load reports (the tiny BERT checkpoint carries a classifier, QA heads start random) and
# progress bars would drown the results.
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


def cargo(*args, env=None):
    cmd = ["cargo", *args]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, **(env or {})})


# ---------------------------------------------------------------------------------------------
# Base models and inputs


def load_base(model_dir: Path, qa: bool):
    kw = dict(attn_implementation="eager", dtype=torch.float32)
    if qa:
        m = AutoModelForQuestionAnswering.from_pretrained(model_dir, num_labels=2, **kw)
    else:
        m = AutoModel.from_pretrained(model_dir, add_pooling_layer=False, **kw)
    return m.eval()


def tiny_inputs(name: str, type_ids: bool):
    ref = load_file(str(FIX / name / "reference.safetensors"))
    ids, mask = ref["input_ids"], ref["attention_mask"]
    types = ref["token_type_ids"] if type_ids else torch.zeros_like(ids)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def randomize_trainable(model, seed: int, scale: float):
    """Uniform values in +-scale for every trainable parameter (a stand-in for training)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            if p.requires_grad:
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * scale)


# ---------------------------------------------------------------------------------------------
# Loading an adapter folder (or a combination) into transformers + peft


def folders_of(adir: Path):
    if (adir / "adapter_config.json").exists():
        return [adir]
    return [adir / m for m in ("lora", "adapter", "prefix", "prompt") if (adir / m / "adapter_config.json").exists()]


def peft_type(folder: Path) -> str:
    return json.loads((folder / "adapter_config.json").read_text())["peft_type"]


def add_bottleneck_hooks(model, folder: Path):
    """The engine's POLYADAPT_BOTTLENECK format (models/peft/README.md), as forward hooks on the
    dense layer that ends BertSelfOutput / BertOutput: h + up(act(down(h)))."""
    cfg = json.loads((folder / "adapter_config.json").read_text())
    t = load_file(str(folder / "adapter_model.safetensors"))
    act = {"gelu": torch.nn.functional.gelu, "relu": torch.relu}[cfg["non_linearity"]]
    base = "base_model.model."
    for key in sorted(t):
        if not key.endswith(".adapter.down.weight"):
            continue
        module = key[len(base) : -len(".adapter.down.weight")]  # <prefix>encoder.layer.<l>.<site module>
        stem = key[: -len("down.weight")]
        dw, db, uw, ub = (t[stem + p] for p in ("down.weight", "down.bias", "up.weight", "up.bias"))
        dense = model.get_submodule(module + ".dense")

        def hook(_m, _inp, out, dw=dw, db=db, uw=uw, ub=ub):
            return out + torch.nn.functional.linear(act(torch.nn.functional.linear(out, dw, db)), uw, ub)

        dense.register_forward_hook(hook)
    return len([k for k in t if k.endswith(".adapter.down.weight")])


def apply_adapter(base, adir: Path):
    """Returns (model, virtual prompt tokens to drop from the outputs)."""
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


def run(model, inputs, drop: int):
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True, return_dict=True)
    res = {f"hidden.{l}": h[:, drop:].contiguous() for l, h in enumerate(out.hidden_states)}
    if getattr(out, "start_logits", None) is not None:
        res["start_logits"] = out.start_logits[:, drop:].contiguous()
        res["end_logits"] = out.end_logits[:, drop:].contiguous()
    return res


def expected_file(path: Path, inputs, outputs, meta):
    tensors = {**{k: v.to(torch.int64) for k, v in inputs.items()}, **outputs}
    write_reference(path, tensors, {**base_metadata(), "peft_version": peft.__version__, **meta})


# ---------------------------------------------------------------------------------------------
# Committed fixtures (tiny models)


def engine_fixtures():
    cargo("test", "--test", "peft_fixtures", "write_engine_fixtures", "--", "--ignored", "--exact",
          env={"POLYADAPT_WRITE_PEFT_FIXTURES": "1"})
    for adir in sorted((PEFT_FIX / "from_engine").iterdir()):
        folders = folders_of(adir)
        cfg0 = json.loads((folders[0] / "adapter_config.json").read_text())
        model_name = Path(cfg0["base_model_name_or_path"]).name
        qa = cfg0.get("task_type") == "QUESTION_ANS"
        prompt_learning = any(peft_type(f) in PROMPT_TYPES for f in folders)
        # peft drops token_type_ids under prompt learning and in its QA wrapper: zeros there.
        inputs = tiny_inputs(model_name, type_ids=not (prompt_learning or qa))
        make_deterministic(0)
        model, drop = apply_adapter(load_base(FIX / model_name, qa), adir)
        outputs = run(model, inputs, drop)
        expected_file(adir / "peft_expected.safetensors", inputs, outputs,
                      {"case": adir.name, "adapter": "saved by the engine", "folders": ",".join(f.name for f in folders)})
        print(f"from_engine/{adir.name}: {[peft_type(f) for f in folders]}, {len(outputs)} outputs")


def peft_cases():
    """(name, model, qa, config, seed, scale): adapters peft saves."""
    return [
        ("bert_lora_all", "tiny-bert-tanh", False,
         LoraConfig(task_type="FEATURE_EXTRACTION", r=4, lora_alpha=6, target_modules=["query", "key", "value", "dense"],
                    layers_to_transform=[0, 2], use_rslora=True), 11, 0.3),
        ("xlmr_lora_qa", "tiny-xlmr", True,
         LoraConfig(task_type="QUESTION_ANS", r=2, lora_alpha=4, target_modules=["query", "value"]), 12, 0.3),
        ("bert_prefix", "tiny-bert-tanh", False, PrefixTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=4), 13, 1.0),
        ("xlmr_prefix_proj", "tiny-xlmr", False,
         PrefixTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=3, prefix_projection=True, encoder_hidden_size=16), 14, 0.5),
        ("bert_prompt", "tiny-bert-tanh", False, PromptTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=3), 15, 1.0),
        ("xlmr_prompt_qa", "tiny-xlmr", True, PromptTuningConfig(task_type="QUESTION_ANS", num_virtual_tokens=4), 16, 1.0),
    ]


def peft_fixtures():
    for name, model_name, qa, config, seed, scale in peft_cases():
        make_deterministic(seed)
        model = get_peft_model(load_base(FIX / model_name, qa), config)
        randomize_trainable(model, seed, scale)
        model.eval()
        prompt_learning = config.peft_type.value in PROMPT_TYPES
        inputs = tiny_inputs(model_name, type_ids=not (prompt_learning or qa))
        drop = config.num_virtual_tokens if config.peft_type.value == "PROMPT_TUNING" else 0
        outputs = run(model, inputs, drop)
        out = PEFT_FIX / "from_peft" / name
        model.save_pretrained(out)
        # What was saved computes what the model in memory did (prefix_projection: peft saves
        # the MLP's output and reloads it as a table).
        reloaded, d2 = apply_adapter(load_base(FIX / model_name, qa), out)
        again = run(reloaded, inputs, d2)
        for k in outputs:
            e = rel_err(again[k], outputs[k])
            if e > 1e-6:
                raise RuntimeError(f"{name}: peft's reload differs from peft's model in memory: {k} {e:.2e}")
        expected_file(out / "peft_expected.safetensors", inputs, outputs, {"case": name, "adapter": "saved by peft"})
        print(f"from_peft/{name}: {config.peft_type.value}, saved and reloaded by peft")


# ---------------------------------------------------------------------------------------------
# Real models, end to end through `engine-train hidden --adapter`


def engine_hidden(model: str, adapter: Path, texts: Path, out: Path):
    exe = ROOT / "target" / "debug" / "engine-train"
    cmd = [str(exe), "hidden", "--model", model, "--texts", str(texts), "--layers", "all", "--out", str(out), "--quiet"]
    if adapter is not None:
        cmd += ["--adapter", str(adapter)]
    subprocess.run(cmd, check=True)
    return load_file(str(out))


def compare(label: str, eng, peft_out, mask, plain) -> float:
    """Worst relative error over the layers (real tokens); also prints how far the adapter
    moves the last layer from the plain model, to show the comparison can tell."""
    worst = 0.0
    real = mask.bool()
    errs = []
    keys = sorted((k for k in peft_out if k.startswith("hidden.")), key=lambda s: int(s.split(".")[1]))
    for k in keys:
        e = rel_err(eng[k][real], peft_out[k][real])
        errs.append(f"{k.split('.')[1]}:{e:.1e}")
        worst = max(worst, e)
    moved = rel_err(eng[keys[-1]][real], plain[keys[-1]][real])
    print(f"  {label:<26} worst {worst:.2e} (adapter moves the last layer by {moved:.2f})  per layer {' '.join(errs)}")
    if moved < 1e-2:
        raise RuntimeError(f"{label}: the adapter barely changes the output; the check would not tell")
    return worst


def real_check():
    cargo("build", "--bin", "engine-train")
    work = ROOT / "target" / "peft-check"
    cargo("test", "--test", "peft_fixtures", "write_real_model_adapters", "--", "--ignored", "--exact",
          env={"POLYADAPT_PEFT_CHECK_OUT": str(work / "engine")})
    texts = FIX / "texts_multilingual.txt"
    worst = 0.0
    for name, hf_dir in REAL.items():
        print(f"{name}:")
        plain = engine_hidden(name, None, texts, work / f"{name}-plain.safetensors")
        inputs = {"input_ids": plain["input_ids"], "attention_mask": plain["attention_mask"],
                  "token_type_ids": torch.zeros_like(plain["input_ids"])}
        tok = AutoTokenizer.from_pretrained(hf_dir)
        hf_ids = tok(texts.read_text().split("\n"), padding=True, return_tensors="pt")["input_ids"]
        if not torch.equal(hf_ids, inputs["input_ids"]):
            raise RuntimeError(f"{name}: the engine's token ids differ from AutoTokenizer's")
        # Adapters the engine saved.
        for adir in sorted((work / "engine" / name).iterdir()):
            qa = json.loads((folders_of(adir)[0] / "adapter_config.json").read_text()).get("task_type") == "QUESTION_ANS"
            model, drop = apply_adapter(load_base(hf_dir, qa), adir)
            eng = engine_hidden(name, adir, texts, work / f"{name}-{adir.name}.safetensors")
            worst = max(worst, compare(f"engine-saved {adir.name}", eng, run(model, inputs, drop), inputs["attention_mask"], plain))
        # Adapters peft saved.
        cases = [("lora_qv", LoraConfig(task_type="FEATURE_EXTRACTION", r=8, lora_alpha=16, target_modules=["query", "value"]), 0.05),
                 ("prefix20", PrefixTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=20), 0.5),
                 ("prefix20_proj", PrefixTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=20, prefix_projection=True,
                                                      encoder_hidden_size=64), 0.3),
                 ("prompt20", PromptTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=20), 1.0)]
        for case, config, scale in cases:
            make_deterministic(5)
            model = get_peft_model(load_base(hf_dir, False), config)
            randomize_trainable(model, 5, scale)
            model.eval()
            drop = config.num_virtual_tokens if config.peft_type.value == "PROMPT_TUNING" else 0
            want = run(model, inputs, drop)
            adir = work / "peft" / name / case
            model.save_pretrained(adir)
            eng = engine_hidden(name, adir, texts, work / f"{name}-peft-{case}.safetensors")
            worst = max(worst, compare(f"peft-saved {case}", eng, want, inputs["attention_mask"], plain))
    print(f"worst relative error over all real-model cases: {worst:.2e} (limit {TOL_REAL:.0e})")
    if worst > TOL_REAL:
        raise SystemExit(1)


# ---------------------------------------------------------------------------------------------
# peft behaviours worth knowing


def behaviours():
    make_deterministic(0)
    d = FIX / "tiny-bert-tanh"
    inp = tiny_inputs("tiny-bert-tanh", type_ids=True)
    base = load_base(d, False)
    # 1. Prefix tuning shifts the real tokens' positions by P: the same model with a zero-width
    #    effect (keys and values that every query ignores cannot be made, so compare the
    #    embeddings output, which the prefix does not touch).
    m = get_peft_model(load_base(d, False), PrefixTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=5))
    with torch.no_grad():
        h0 = m(**{**inp, "token_type_ids": None}, output_hidden_states=True).hidden_states[0]
        pos = torch.arange(5, 5 + inp["input_ids"].shape[1]).unsqueeze(0)
        shifted = base(input_ids=inp["input_ids"], attention_mask=inp["attention_mask"], position_ids=pos,
                       output_hidden_states=True).hidden_states[0]
    print(f"prefix tuning: embeddings output equals positions shifted by P=5: rel err {rel_err(h0, shifted):.1e}")
    # 2. Prompt learning drops token_type_ids (feature extraction): the same outputs with and without.
    with torch.no_grad():
        a = m(**inp, output_hidden_states=True).hidden_states[-1]
        b = m(**{**inp, "token_type_ids": torch.zeros_like(inp["token_type_ids"])}, output_hidden_states=True).hidden_states[-1]
    print(f"prefix tuning: token_type_ids ignored: rel err with vs without {rel_err(a, b):.1e}")
    # 3. The QA wrapper never forwards token_type_ids, even with LoRA.
    qa = get_peft_model(load_base(d, True), LoraConfig(task_type="QUESTION_ANS", r=2, target_modules=["query"]))
    with torch.no_grad():
        a = qa(**inp).start_logits
        b = qa(**{**inp, "token_type_ids": torch.zeros_like(inp["token_type_ids"])}).start_logits
        c = qa.get_base_model()(**inp).start_logits
    print(f"QA + LoRA: token_type_ids ignored by peft: {rel_err(a, b):.1e}; the bare model uses them: {rel_err(c, a):.1e}")
    # 4. The mixed model refuses prefix tuning (LoRA + prefix are combined by merging LoRA first).
    try:
        mixed = get_peft_model(load_base(d, False), LoraConfig(r=2, target_modules=["query"]), mixed=True)
        mixed.add_adapter("p", PrefixTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=2))
        print("mixed model: accepted prefix tuning (unexpected)")
    except Exception as e:  # noqa: BLE001
        print(f"mixed model + prefix tuning: {type(e).__name__}: {str(e)[:120]}")


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what not in ("fixtures", "real", "all", "behaviours"):
        raise SystemExit(__doc__)
    print(f"torch {torch.__version__}, peft {peft.__version__}")
    if what in ("fixtures", "all"):
        engine_fixtures()
        peft_fixtures()
    if what in ("behaviours", "all"):
        behaviours()
    if what in ("real", "all"):
        real_check()


if __name__ == "__main__":
    main()
