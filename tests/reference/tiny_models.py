"""Tiny random checkpoints for code paths the two real models do not exercise.

tiny-xlmr:       model_type xlm-roberta (positions start at pad_token_id + 1 and skip padding),
                 odd intermediate size, type_vocab_size 1, no pooler, sharded safetensors.
tiny-bert-tanh:  BertForSequenceClassification ("bert." prefix + classifier head to ignore),
                 hidden_act gelu_new (tanh form), layer_norm_eps 1e-5, sentence-pair token types.

Weights: transformers' default init (std 0.02, LayerNorm = 1/0) would make attention almost
uniform and every LayerNorm an identity, so a loader that swapped q/k or dropped a LayerNorm
bias could still pass. All parameters are overwritten from a seeded generator instead, at
scales that keep activations O(1): then the fixtures also tell gelu from gelu_new and shifted
positions from plain ones (the "discrimination" numbers printed and stored in the metadata).
"""

import math
from pathlib import Path

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    XLMRobertaConfig,
    XLMRobertaModel,
)
from transformers.models.xlm_roberta.modeling_xlm_roberta import XLMRobertaEmbeddings

from reference_common import (
    base_metadata,
    check_eager,
    fmt_err,
    noise_floor,
    rel_err,
    run_encoder,
    sha256_of,
    write_reference,
)

XLMR_SEED = 1234
BERT_TANH_SEED = 5678
XLMR_SHARD_BYTES = 32 * 1024  # ~78 KB of f32 weights -> 3 shards


def randomize_parameters(model, seed: int) -> None:
    """Overwrite every parameter deterministically (order = named_parameters order)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            elif "embeddings" in name:
                p.copy_(noise)
            else:  # Linear weight [out, in]: unit-variance outputs for unit-variance inputs
                p.copy_(noise / math.sqrt(p.shape[1]))


def weight_files(model_dir: Path) -> list:
    return sorted(p for p in model_dir.iterdir() if p.suffix == ".safetensors" and p.name != "reference.safetensors")


def weights_metadata(model_dir: Path) -> dict:
    return {f"sha256.{p.name}": sha256_of(p) for p in weight_files(model_dir)}


def check_roundtrip(saved_model, reloaded_model, where: str) -> None:
    """The reference must come from the files on disk, so the reload must equal the original."""
    a = saved_model.state_dict()
    b = reloaded_model.state_dict()
    if set(a) != set(b):
        raise RuntimeError(f"{where}: reloaded names differ: {sorted(set(a) ^ set(b))}")
    for name in a:
        if not torch.equal(a[name], b[name]):
            raise RuntimeError(f"{where}: reloaded tensor {name} differs from the saved one")


# ---------------------------------------------------------------------------------------------
# tiny-xlmr


def xlmr_inputs(gen: torch.Generator):
    """3 sequences of lengths 11, 7, 4: <s>=0, random ids in [3,120), </s>=2, padding 1."""
    lengths = [11, 7, 4]
    width = max(lengths)
    input_ids = torch.full((len(lengths), width), 1, dtype=torch.long)
    attention_mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for row, n in enumerate(lengths):
        body = torch.randint(3, 120, (n - 2,), generator=gen, dtype=torch.long)
        input_ids[row, :n] = torch.cat([torch.tensor([0]), body, torch.tensor([2])])
        attention_mask[row, :n] = 1
    token_type_ids = torch.zeros_like(input_ids)
    return input_ids, attention_mask, token_type_ids


def make_tiny_xlmr(out_dir: Path) -> dict:
    torch.manual_seed(XLMR_SEED)
    config = XLMRobertaConfig(
        vocab_size=120,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        hidden_act="gelu",
    )
    model = XLMRobertaModel(config, add_pooling_layer=False)
    randomize_parameters(model, XLMR_SEED)
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, max_shard_size=XLMR_SHARD_BYTES)
    shards = weight_files(out_dir)
    if not (2 <= len(shards) <= 3) or not (out_dir / "model.safetensors.index.json").exists():
        raise RuntimeError(f"tiny-xlmr: expected 2-3 shards plus an index, got {[p.name for p in shards]}")

    ref_model = XLMRobertaModel.from_pretrained(
        out_dir, add_pooling_layer=False, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    check_eager(ref_model, "tiny-xlmr")
    check_roundtrip(model, ref_model, "tiny-xlmr")

    gen = torch.Generator().manual_seed(XLMR_SEED + 1)
    input_ids, attention_mask, token_type_ids = xlmr_inputs(gen)
    position_ids = XLMRobertaEmbeddings.create_position_ids_from_input_ids(input_ids, config.pad_token_id)

    # Capture the position ids the model really feeds its position embedding table.
    used = {}
    hook = ref_model.embeddings.position_embeddings.register_forward_hook(
        lambda _m, args, _out: used.__setitem__("position_ids", args[0].clone())
    )
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    hidden = run_encoder(ref_model, **inputs)
    hook.remove()
    if not torch.equal(used["position_ids"], position_ids):
        raise RuntimeError("tiny-xlmr: position ids used by the model differ from create_position_ids_from_input_ids")

    layers = list(range(config.num_hidden_layers + 1))
    floor = noise_floor(ref_model, inputs, hidden, layers)
    # How far off an engine would be that used BERT-style positions 0..n-1 (no offset, no skip).
    plain_positions = torch.arange(input_ids.shape[1]).expand_as(input_ids)
    hidden_plain = run_encoder(ref_model, **inputs, position_ids=plain_positions)
    last = layers[-1]
    discrimination = rel_err(hidden_plain[last], hidden[last])

    tensors = dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        token_type_ids=token_type_ids,
        position_ids=position_ids,
    )
    tensors.update({f"hidden.{l}": hidden[l] for l in layers})
    metadata = base_metadata()
    metadata.update(weights_metadata(out_dir))
    metadata.update(
        {
            "model": "tiny-xlmr (XLMRobertaModel, random weights)",
            "seed": str(XLMR_SEED),
            "layers": ",".join(map(str, layers)),
            "position_ids_source": "XLMRobertaEmbeddings.create_position_ids_from_input_ids, checked by a hook",
            f"discrimination.plain_positions_rel_err.{last}": fmt_err(discrimination),
        }
    )
    metadata.update({f"f32_vs_f64_rel_err.{l}": fmt_err(e) for l, e in floor.items()})
    write_reference(out_dir / "reference.safetensors", tensors, metadata)
    return dict(
        name="tiny-xlmr",
        path=out_dir / "reference.safetensors",
        tensors=tensors,
        floor=floor,
        extra=f"rel err with plain 0..n-1 positions (layer {last}): {fmt_err(discrimination)}; "
        f"shards: {', '.join(p.name for p in shards)}",
        size_dir=out_dir,
    )


# ---------------------------------------------------------------------------------------------
# tiny-bert-tanh

CLS_ID, SEP_ID, PAD_ID = 2, 3, 0


def pair_inputs(gen: torch.Generator):
    """2 sentence pairs [CLS] a.. [SEP] b.. [SEP]; types 0 for [CLS]+a+[SEP], 1 for b+[SEP]."""
    segment_lengths = [(4, 5), (2, 3)]
    rows = []
    for len_a, len_b in segment_lengths:
        a = torch.randint(5, 90, (len_a,), generator=gen, dtype=torch.long).tolist()
        b = torch.randint(5, 90, (len_b,), generator=gen, dtype=torch.long).tolist()
        ids = [CLS_ID] + a + [SEP_ID] + b + [SEP_ID]
        types = [0] * (len_a + 2) + [1] * (len_b + 1)
        rows.append((ids, types))
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    token_type_ids = torch.zeros((len(rows), width), dtype=torch.long)  # padding gets type 0
    for r, (ids, types) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        attention_mask[r, : len(ids)] = 1
        token_type_ids[r, : len(ids)] = torch.tensor(types)
    return input_ids, attention_mask, token_type_ids


def make_tiny_bert_tanh(out_dir: Path) -> dict:
    torch.manual_seed(BERT_TANH_SEED)
    config = BertConfig(
        vocab_size=90,
        hidden_size=24,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=40,
        max_position_embeddings=40,
        type_vocab_size=2,
        layer_norm_eps=1e-5,
        hidden_act="gelu_new",
        pad_token_id=PAD_ID,
        num_labels=3,
    )
    model = BertForSequenceClassification(config)
    randomize_parameters(model, BERT_TANH_SEED)
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    if [p.name for p in weight_files(out_dir)] != ["model.safetensors"]:
        raise RuntimeError(f"tiny-bert-tanh: expected a single model.safetensors, got {weight_files(out_dir)}")

    ref_model = BertForSequenceClassification.from_pretrained(
        out_dir, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    check_eager(ref_model, "tiny-bert-tanh")
    check_roundtrip(model, ref_model, "tiny-bert-tanh")

    gen = torch.Generator().manual_seed(BERT_TANH_SEED + 1)
    input_ids, attention_mask, token_type_ids = pair_inputs(gen)
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    hidden = run_encoder(ref_model.bert, **inputs)
    layers = list(range(config.num_hidden_layers + 1))
    floor = noise_floor(ref_model.bert, inputs, hidden, layers)

    # How far off an engine would be that used the erf GELU instead of the tanh form.
    erf_model = BertForSequenceClassification.from_pretrained(
        out_dir, dtype=torch.float32, attn_implementation="eager", hidden_act="gelu"
    ).eval()
    hidden_erf = run_encoder(erf_model.bert, **inputs)
    last = layers[-1]
    discrimination = rel_err(hidden_erf[last], hidden[last])

    tensors = dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    tensors.update({f"hidden.{l}": hidden[l] for l in layers})
    metadata = base_metadata()
    metadata.update(weights_metadata(out_dir))
    metadata.update(
        {
            "model": "tiny-bert-tanh (BertForSequenceClassification, random weights; hidden of model.bert)",
            "seed": str(BERT_TANH_SEED),
            "layers": ",".join(map(str, layers)),
            f"discrimination.erf_gelu_rel_err.{last}": fmt_err(discrimination),
        }
    )
    metadata.update({f"f32_vs_f64_rel_err.{l}": fmt_err(e) for l, e in floor.items()})
    write_reference(out_dir / "reference.safetensors", tensors, metadata)
    return dict(
        name="tiny-bert-tanh",
        path=out_dir / "reference.safetensors",
        tensors=tensors,
        floor=floor,
        extra=f"rel err with erf gelu instead of gelu_new (layer {last}): {fmt_err(discrimination)}",
        size_dir=out_dir,
    )
