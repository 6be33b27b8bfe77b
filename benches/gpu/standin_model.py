#!/usr/bin/env python3
"""A stand-in multilingual-e5-small for the GPU machine, which cannot fetch the real one (470 MB,
over the device tool's 64 MiB carry) and has no Rust toolchain to run `fetch-model`.

    standin_model.py stats MODEL_DIR OUT_DIR [--real]  # here: config, tokenizer, marker, stats
    standin_model.py make  IN_DIR  CACHE_DIR            # there: CACHE_DIR/models/multilingual-e5-small
    standin_model.py ids   TOKENIZER_JSON TSV...        # the token ids of texts (needs `tokenizers`)

With `--real`, every tensor is also kept, rounded to f16 (42 MB), except the word embeddings
(the 250k x 384 table is 80% of the file), of which only the rows of the ids listed in
e5_fixture_ids.txt are kept: those of the sentences tests/cuda_train_step.rs feeds the model
(`ids` made the list from tests/fixtures/pseudo/pairs_{de,en}.tsv; ids 0-15, the special tokens,
too). On those sentences the stand-in is then the real model in f16 precision. `make` takes those where present and draws the others from a normal
distribution with the real tensor's mean and standard deviation, seeded, in the real file's
names, shapes and dtype (f32). An all-random stand-in is enough for timing (the step bench) but
not for tests/cuda_train_step.rs: random layers are badly conditioned (the bf16 gradients of
one LoRA matrix differed from the CPU's by 25% on the host shim), so the GPU run of that test
uses `--real`. Either way, results on it are never model-quality numbers. `stats` needs only
the standard library; `make` needs numpy.
"""
import array, json, math, os, shutil, struct, sys

NAME = "multilingual-e5-small"
WORDS = "embeddings.word_embeddings.weight"
IDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "e5_fixture_ids.txt")
COPIED = [".complete", "config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)), 8 + n


def stats(model_dir, out_dir, real=False):
    os.makedirs(out_dir, exist_ok=True)
    for name in COPIED:
        if os.path.exists(os.path.join(model_dir, name)):
            shutil.copy(os.path.join(model_dir, name), os.path.join(out_dir, name))
    path = os.path.join(model_dir, "model.safetensors")
    head, start = header(path)
    out = {}
    blob = open(os.path.join(out_dir, "real.f16"), "wb") if real else None
    with open(path, "rb") as f:
        for name, t in head.items():
            if name == "__metadata__":
                continue
            if t["dtype"] != "F32":
                sys.exit(f"standin_model.py: {path}: tensor {name} is {t['dtype']}, expected F32")
            b, e = t["data_offsets"]
            f.seek(start + b)
            a = array.array("f")
            a.frombytes(f.read(e - b))
            n = len(a)
            mean = math.fsum(a) / n
            var = math.fsum((x - mean) ** 2 for x in a) / n
            out[name] = {"shape": t["shape"], "mean": mean, "std": math.sqrt(var)}
            if blob and name == WORDS:
                width = t["shape"][1]
                rows = sorted(kept_ids())
                h = array.array("H", (f32_to_f16_bits(x) for r in rows for x in a[r * width : (r + 1) * width]))
                out[name].update(f16_offset=blob.tell(), f16_rows=rows)
                blob.write(h.tobytes())
            elif blob:
                h = array.array("H", (f32_to_f16_bits(x) for x in a))
                out[name]["f16_offset"] = blob.tell()
                blob.write(h.tobytes())
    if blob:
        blob.close()
    with open(os.path.join(out_dir, "stats.json"), "w") as f:
        json.dump(out, f, indent=0, sort_keys=True)


def kept_ids():
    with open(IDS) as f:
        return {int(line) for line in f if line.strip() and not line.startswith("#")}


def ids(tokenizer, *tsvs):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer)
    out = set(range(16))
    for path in tsvs:
        with open(path) as f:
            for line in f:
                for col in line.rstrip("\n").split("\t")[:2]:
                    out.update(tok.encode(col).ids)
    print("# token ids of tests/fixtures/pseudo/pairs_{de,en}.tsv (standin_model.py ids)")
    print("\n".join(str(i) for i in sorted(out)))


def f32_to_f16_bits(x):
    return struct.unpack("<H", struct.pack("<e", x))[0]


def make(in_dir, cache):
    import numpy as np

    dest = os.path.join(cache, "models", NAME)
    os.makedirs(dest, exist_ok=True)
    for name in COPIED:
        if os.path.exists(os.path.join(in_dir, name)):
            shutil.copy(os.path.join(in_dir, name), os.path.join(dest, name))
    with open(os.path.join(in_dir, "stats.json")) as f:
        st = json.load(f)
    rng = np.random.default_rng(20261124)
    real_path = os.path.join(in_dir, "real.f16")
    real = np.memmap(real_path, dtype="<f2", mode="r") if os.path.exists(real_path) else None
    head, blobs, off = {}, [], 0
    for name in sorted(st):
        s = st[name]
        if real is not None and "f16_rows" in s:
            a = rng.normal(s["mean"], s["std"], size=s["shape"]).astype("<f4")
            rows, o = s["f16_rows"], s["f16_offset"] // 2
            width = s["shape"][1]
            a[rows] = np.asarray(real[o : o + len(rows) * width], dtype="<f4").reshape(len(rows), width)
        elif real is not None and "f16_offset" in s:
            n, o = math.prod(s["shape"]), s["f16_offset"] // 2
            a = np.asarray(real[o : o + n], dtype="<f4").reshape(s["shape"])
        else:
            a = rng.normal(s["mean"], s["std"], size=s["shape"]).astype("<f4")
        head[name] = {"dtype": "F32", "shape": s["shape"], "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(head).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(dest, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)
    print(dest)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--real"]
    if args[:1] == ["ids"] and len(args) >= 3:
        ids(*args[1:])
    elif len(args) != 3 or args[0] not in ("stats", "make"):
        sys.exit(__doc__)
    elif args[0] == "stats":
        stats(args[1], args[2], real="--real" in sys.argv)
    else:
        make(args[1], args[2])
