"""Helpers shared by the fixture generators: determinism, error metric, file writing.

Everything here is plain torch + safetensors so that the only requirement is the baseline venv
(/root/.cache/polyadapt-baseline/venv).
"""

import hashlib
import json
import os
import struct
import sys
from pathlib import Path

import torch
import transformers
from safetensors import safe_open

# Reference runs use one thread: CPU matrix products split their reductions by thread count, so
# fixing it makes a rerun on the same machine reproduce the same bits.
REFERENCE_THREADS = 1


def make_deterministic(seed: int) -> None:
    torch.set_num_threads(REFERENCE_THREADS)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b||_F / ||b||_F over all elements (padding positions included), computed in f64."""
    a64 = a.detach().to(torch.float64)
    b64 = b.detach().to(torch.float64)
    return float(torch.linalg.vector_norm(a64 - b64) / torch.linalg.vector_norm(b64))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fmt_err(x: float) -> str:
    return f"{x:.3e}"


def base_metadata() -> dict:
    """Metadata every reference file carries (safetensors metadata must be str -> str)."""
    return {
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "dtype": "float32",
        "device": "cpu",
        "attn_implementation": "eager",
        "torch_num_threads": str(REFERENCE_THREADS),
        "rel_err_definition": "||a-b||_F / ||b||_F over all positions, padding included",
    }


SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64", torch.int32: "I32"}


def write_reference(path: Path, tensors: dict, metadata: dict) -> None:
    """Write a safetensors file with a byte-stable header.

    safetensors.torch.save_file serialises the metadata through a Rust HashMap, so its key order
    (and the file's bytes) change from run to run. Here the header is built by hand with sorted
    keys, then the file is read back with safetensors itself to prove it is valid and equal.
    """
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise TypeError(f"metadata {key!r} must be a string, got {type(value).__name__}")
    if sys.byteorder != "little":
        raise RuntimeError("safetensors data is little-endian; this writer assumes a little-endian host")
    header = {"__metadata__": dict(sorted(metadata.items()))}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        blob = t.numpy().tobytes()
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    header_bytes = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)  # keep the data 8-byte aligned
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for blob in blobs:
            f.write(blob)

    with safe_open(str(path), framework="pt") as f:
        if f.metadata() != metadata or sorted(f.keys()) != sorted(tensors):
            raise RuntimeError(f"{path}: metadata or tensor names did not survive the round trip")
        for name, t in tensors.items():
            if not torch.equal(f.get_tensor(name), t.detach().cpu()):
                raise RuntimeError(f"{path}: tensor {name} did not survive the round trip")


def run_encoder(model, input_ids, attention_mask, token_type_ids, position_ids=None):
    """All hidden states of an encoder (tuple: 0 = embeddings output, N = last layer)."""
    kwargs = dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        token_type_ids=token_type_ids,
        output_hidden_states=True,
        return_dict=True,
    )
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    with torch.no_grad():
        out = model(**kwargs)
    return out.hidden_states


def check_eager(model, where: str) -> None:
    impl = getattr(model.config, "_attn_implementation", None)
    if impl != "eager":
        raise RuntimeError(f"{where}: attention implementation is {impl!r}, expected 'eager'")


def noise_floor(model, inputs: dict, hidden32, layers) -> dict:
    """Relative error of the float32 run against the same weights run in float64, per layer."""
    import copy

    model64 = copy.deepcopy(model).double().eval()
    hidden64 = run_encoder(model64, **inputs)
    return {l: rel_err(hidden32[l], hidden64[l]) for l in layers}


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def file_size(path: Path) -> int:
    return os.path.getsize(path)
