//! The E5S1 reader and importer, on small synthetic files with known values.

use std::path::Path;

use half::f16;
use polyadapt::models::config::BertConfig;
use polyadapt::models::e5s::{import_e5s, me5_config_json, read_e5s};
use polyadapt::models::weights::Weights;
use polyadapt::Error;

use crate::common::{assert_mentions, chain, hidden_entries, pseudo_random_bytes, TempDir};

const PIECES: [&str; 6] = ["<s>", "<pad>", "</s>", "<unk>", "▁hello", "▁world"];

/// One tensor directory entry with its data.
struct Entry {
    name: String,
    dtype: u8,
    elements: u32,
    data: Vec<u8>,
    /// Overrides of what the directory says (to make broken files).
    offset: Option<u64>,
    nbytes: Option<u64>,
}

/// A synthetic E5S1 model: 1 layer, hidden 32, 2 heads, ffn 64, 8 embeddings for 6 pieces.
struct Synth {
    hidden: usize,
    ffn: usize,
    vocab: usize,
    max_pos: usize,
    type_vocab: usize,
    entries: Vec<Entry>,
}

/// Section start offsets of a built file.
struct Layout {
    tokenizer: usize,
    norm: usize,
    directory: usize,
    data: usize,
}

fn q4_entry(name: &str, rows: usize, cols: usize, seed: u64) -> Entry {
    let blocks = rows * cols / 32;
    let mut data = pseudo_random_bytes(seed, blocks * 18);
    for b in 0..blocks {
        // Known, finite scales of both signs, including tiny (subnormal-in-f16) ones.
        let d = match b % 5 {
            0 => 0.0123,
            1 => -0.5,
            2 => 3.0e-6,
            3 => 1.75,
            _ => -0.000977,
        };
        data[b * 18..b * 18 + 2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    }
    Entry { name: name.into(), dtype: 1, elements: (rows * cols) as u32, data, offset: None, nbytes: None }
}

fn f32_entry(name: &str, n: usize, seed: u64) -> Entry {
    let vals: Vec<f32> = (0..n).map(|i| ((i as u64 * 7 + seed) % 23) as f32 * 0.125 - 1.0).collect();
    Entry {
        name: name.into(),
        dtype: 0,
        elements: n as u32,
        data: bytemuck::cast_slice(&vals).to_vec(),
        offset: None,
        nbytes: None,
    }
}

impl Synth {
    fn new() -> Synth {
        let (h, ff, vocab, max_pos, tv) = (32, 64, 8, 8, 2);
        let mut e = vec![
            q4_entry("emb.word", vocab, h, 1),
            f32_entry("emb.pos", max_pos * h, 2),
            f32_entry("emb.type", tv * h, 3),
            f32_entry("emb.ln.w", h, 4),
            f32_entry("emb.ln.b", h, 5),
        ];
        let mut seed = 10;
        for (short, rows, cols) in
            [("q", h, h), ("k", h, h), ("v", h, h), ("ao", h, h), ("fi", ff, h), ("fo", h, ff)]
        {
            e.push(q4_entry(&format!("l0.{short}.w"), rows, cols, seed));
            e.push(f32_entry(&format!("l0.{short}.b"), rows, seed + 1));
            seed += 2;
        }
        for short in ["aln", "oln"] {
            e.push(f32_entry(&format!("l0.{short}.w"), h, seed));
            e.push(f32_entry(&format!("l0.{short}.b"), h, seed + 1));
            seed += 2;
        }
        Synth { hidden: h, ffn: ff, vocab, max_pos, type_vocab: tv, entries: e }
    }

    fn entry(&mut self, name: &str) -> &mut Entry {
        self.entries.iter_mut().find(|e| e.name == name).unwrap()
    }

    fn build(&self) -> (Vec<u8>, Layout) {
        let mut b = b"E5S1".to_vec();
        let i32s = |b: &mut Vec<u8>, v: &[usize]| v.iter().for_each(|&x| b.extend((x as i32).to_le_bytes()));
        b.extend(1u32.to_le_bytes());
        i32s(&mut b, &[self.hidden, 1, 2, self.ffn, self.vocab, self.max_pos, self.type_vocab]);
        b.extend(1e-12f32.to_le_bytes());
        i32s(&mut b, &[32]);
        let tokenizer = b.len();
        let blob: String = PIECES.concat();
        i32s(&mut b, &[PIECES.len(), 0, 2, 1, 3]);
        b.extend((blob.len() as u64).to_le_bytes());
        let mut off = 0u32;
        b.extend(off.to_le_bytes());
        for p in PIECES {
            off += p.len() as u32;
            b.extend(off.to_le_bytes());
        }
        for i in 0..PIECES.len() {
            b.extend((-(i as f32) * 0.5).to_le_bytes());
        }
        b.extend(blob.as_bytes());
        let norm = b.len();
        i32s(&mut b, &[2]);
        b.extend(10u32.to_le_bytes());
        b.extend([0xAB; 10]);
        let directory = b.len();
        i32s(&mut b, &[self.entries.len()]);
        let dir_len: usize = self.entries.iter().map(|e| 2 + e.name.len() + 1 + 4 + 8 + 8).sum();
        let mut data_off = (b.len() + dir_len).next_multiple_of(32);
        let data = data_off;
        let mut offsets = Vec::new();
        for e in &self.entries {
            offsets.push(data_off);
            data_off = (data_off + e.data.len()).next_multiple_of(32);
        }
        for (e, &o) in self.entries.iter().zip(&offsets) {
            b.extend((e.name.len() as u16).to_le_bytes());
            b.extend(e.name.as_bytes());
            b.push(e.dtype);
            b.extend(e.elements.to_le_bytes());
            b.extend(e.offset.unwrap_or(o as u64).to_le_bytes());
            b.extend(e.nbytes.unwrap_or(e.data.len() as u64).to_le_bytes());
        }
        for (e, &o) in self.entries.iter().zip(&offsets) {
            b.resize(o, 0);
            b.extend(&e.data);
        }
        (b, Layout { tokenizer, norm, directory, data })
    }
}

/// A Unigram tokenizer.json whose vocabulary is `pieces`.
fn tokenizer_json(pieces: &[&str]) -> String {
    let vocab: Vec<serde_json::Value> =
        pieces.iter().enumerate().map(|(i, p)| serde_json::json!([p, -(i as f64) * 0.5])).collect();
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": null,
        "post_processor": null, "decoder": null,
        "model": {"type": "Unigram", "unk_id": 3, "vocab": vocab}
    })
    .to_string()
}

/// Writes the model and a matching tokenizer into `dir`; returns their paths.
fn write_inputs(dir: &TempDir, bytes: &[u8]) -> (std::path::PathBuf, std::path::PathBuf) {
    let e5s = dir.join("model-q4.bin");
    let tok = dir.join("tokenizer.json");
    std::fs::write(&e5s, bytes).unwrap();
    std::fs::write(&tok, tokenizer_json(&PIECES)).unwrap();
    (e5s, tok)
}

/// The value at `index` of a Q4_0 tensor stored as `data`, with rows of `cols`: computed from
/// the format's definition, element by element.
fn q4_value(data: &[u8], cols: usize, index: usize) -> f32 {
    let (row, col) = (index / cols, index % cols);
    let block = &data[(row * cols / 32 + col / 32) * 18..][..18];
    let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
    let j = col % 32;
    let nibble = if j < 16 { block[2 + j] & 0x0F } else { block[2 + j - 16] >> 4 };
    (nibble as f32 - 8.0) * d
}

#[test]
fn import_round_trips_exact_values() {
    let dir = TempDir::new("e5s-import");
    let synth = Synth::new();
    let (bytes, _) = synth.build();
    let (e5s, tok) = write_inputs(&dir, &bytes);
    let out = dir.join("out");
    import_e5s(&e5s, &tok, &out).unwrap();
    assert_eq!(hidden_entries(dir.path()), Vec::<String>::new(), "temporary directory left behind");

    let model = read_e5s(&e5s).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("config.json")).unwrap(), me5_config_json(&model.header));
    let config = BertConfig::from_file(&out.join("config.json")).unwrap();
    assert_eq!((config.hidden_size, config.num_hidden_layers, config.num_attention_heads), (32, 1, 2));
    assert_eq!((config.intermediate_size, config.vocab_size, config.max_position_embeddings), (64, 8, 8));
    assert_eq!((config.type_vocab_size, config.layer_norm_eps), (2, 1e-12));
    assert_eq!(std::fs::read(out.join("tokenizer.json")).unwrap(), std::fs::read(&tok).unwrap());
    for f in ["special_tokens_map.json", "tokenizer_config.json"] {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join(f)).unwrap()).unwrap();
        assert_eq!(v["pad_token"], "<pad>", "{f}");
        assert_eq!(v["cls_token"], "<s>", "{f}");
    }

    let w = Weights::open(&out).unwrap();
    let h = 32;
    let mut checked = 0;
    let mut expect = |hf: &str, e5: &str, shape: &[usize]| {
        let e = synth.entries.iter().find(|e| e.name == e5).unwrap();
        let t = w.get(hf, shape).unwrap();
        let got = t.f32s();
        let want: Vec<f32> = if e.dtype == 1 {
            (0..got.len()).map(|i| q4_value(&e.data, shape[1], i)).collect()
        } else {
            bytemuck::pod_collect_to_vec(&e.data)
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(got), bits(&want), "{hf}");
        checked += 1;
    };
    expect("embeddings.word_embeddings.weight", "emb.word", &[8, h]);
    expect("embeddings.position_embeddings.weight", "emb.pos", &[8, h]);
    expect("embeddings.token_type_embeddings.weight", "emb.type", &[2, h]);
    expect("embeddings.LayerNorm.weight", "emb.ln.w", &[h]);
    expect("embeddings.LayerNorm.bias", "emb.ln.b", &[h]);
    let p = "encoder.layer.0.";
    for (short, long, rows, cols) in [
        ("q", "attention.self.query", h, h),
        ("k", "attention.self.key", h, h),
        ("v", "attention.self.value", h, h),
        ("ao", "attention.output.dense", h, h),
        ("fi", "intermediate.dense", 64, h),
        ("fo", "output.dense", h, 64),
    ] {
        expect(&format!("{p}{long}.weight"), &format!("l0.{short}.w"), &[rows, cols]);
        expect(&format!("{p}{long}.bias"), &format!("l0.{short}.b"), &[rows]);
    }
    for (short, long) in [("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")] {
        expect(&format!("{p}{long}.weight"), &format!("l0.{short}.w"), &[h]);
        expect(&format!("{p}{long}.bias"), &format!("l0.{short}.b"), &[h]);
    }
    assert_eq!(checked, w.len(), "the output holds exactly the expected tensors");
}

#[test]
fn reader_keeps_header_and_vocabulary() {
    let dir = TempDir::new("e5s-read");
    let (e5s, _) = write_inputs(&dir, &Synth::new().build().0);
    let m = read_e5s(&e5s).unwrap();
    assert_eq!((m.header.hidden, m.header.layers, m.header.heads, m.header.ffn), (32, 1, 2, 64));
    assert_eq!(
        (m.header.vocab, m.header.max_positions, m.header.type_vocab, m.header.block_size),
        (8, 8, 2, 32)
    );
    assert_eq!(m.header.layer_norm_eps, 1e-12f32);
    assert_eq!(m.vocab.pieces, PIECES);
    assert_eq!(m.vocab.scores[2], -1.0);
    assert_eq!((m.vocab.bos, m.vocab.eos, m.vocab.pad, m.vocab.unk), (0, 2, 1, 3));
    assert_eq!(m.tensors.len(), 21);
}

fn read_error(dir: &TempDir, bytes: &[u8]) -> String {
    let (e5s, _) = write_inputs(dir, bytes);
    chain(read_e5s(&e5s).map(|m| m.tensors.len()))
}

#[test]
fn bad_magic_version_and_sizes_are_refused() {
    let dir = TempDir::new("e5s-magic");
    let (mut bytes, _) = Synth::new().build();
    bytes[..4].copy_from_slice(b"GGUF");
    assert_mentions(&read_error(&dir, &bytes), &["model-q4.bin", "bad magic", "GGUF", "E5S1"]);
    let (mut bytes, _) = Synth::new().build();
    bytes[4] = 2;
    assert_mentions(&read_error(&dir, &bytes), &["version 2"]);
    let (mut bytes, _) = Synth::new().build();
    bytes[8..12].copy_from_slice(&(-32i32).to_le_bytes());
    assert_mentions(&read_error(&dir, &bytes), &["hidden size is -32"]);
    let (mut bytes, _) = Synth::new().build();
    bytes[40..44].copy_from_slice(&64i32.to_le_bytes());
    assert_mentions(&read_error(&dir, &bytes), &["block size 64"]);
}

#[test]
fn truncation_anywhere_is_an_error_naming_the_section() {
    let dir = TempDir::new("e5s-trunc");
    let (bytes, layout) = Synth::new().build();
    for (cut, section) in [
        (2, "header"),
        (20, "header"),
        (layout.tokenizer + 10, "tokenizer block"),
        (layout.norm - 3, "tokenizer block"),
        (layout.norm + 9, "normalisation map"),
        (layout.directory + 2, "tensor directory"),
        (layout.directory + 30, "tensor directory"),
        (layout.data + 5, "past the end of the file"),
        (bytes.len() - 1, "past the end of the file"),
    ] {
        let msg = read_error(&dir, &bytes[..cut]);
        assert_mentions(&msg, &["model-q4.bin", section]);
    }
    for cut in 0..bytes.len() {
        let msg = read_error(&dir, &bytes[..cut]);
        assert!(msg.contains("model-q4.bin"), "cut at {cut}: {msg}");
    }
}

#[test]
fn directory_entries_are_checked_against_the_file() {
    let dir = TempDir::new("e5s-dir");
    let mut s = Synth::new();
    s.entry("l0.k.w").offset = Some(1 << 40);
    let msg = read_error(&dir, &s.build().0);
    assert_mentions(&msg, &["model-q4.bin", "`l0.k.w`", "past the end of the file"]);

    let mut s = Synth::new();
    s.entry("l0.fi.w").nbytes = Some(64 * 32 / 32 * 18 - 18);
    let msg = read_error(&dir, &s.build().0);
    assert_mentions(&msg, &["`l0.fi.w`", "Q4_0", "needs 1152 bytes", "says 1134"]);

    let mut s = Synth::new();
    s.entry("emb.ln.w").nbytes = Some(31 * 4);
    assert_mentions(&read_error(&dir, &s.build().0), &["`emb.ln.w`", "F32", "needs 128 bytes"]);

    let mut s = Synth::new();
    s.entry("emb.ln.b").offset = Some(16);
    assert_mentions(&read_error(&dir, &s.build().0), &["`emb.ln.b`", "inside the headers"]);

    let mut s = Synth::new();
    s.entry("emb.type").dtype = 7;
    assert_mentions(&read_error(&dir, &s.build().0), &["`emb.type`", "dtype code 7"]);
}

fn import_error(dir: &TempDir, bytes: &[u8]) -> String {
    let (e5s, tok) = write_inputs(dir, bytes);
    let out = dir.join("out");
    let msg = chain(import_e5s(&e5s, &tok, &out));
    assert!(!out.exists(), "a failed import must not leave its output directory");
    assert!(hidden_entries(dir.path()).is_empty(), "a failed import must not leave a temporary directory");
    msg
}

#[test]
fn missing_or_mistyped_tensors_fail_the_import() {
    let dir = TempDir::new("e5s-missing");
    let mut s = Synth::new();
    s.entries.retain(|e| e.name != "l0.fo.b");
    let msg = import_error(&dir, &s.build().0);
    assert_mentions(&msg, &["model-q4.bin", "`l0.fo.b`", "missing"]);

    let mut s = Synth::new();
    s.entries.push(q4_entry("l0.q.w", 32, 32, 99));
    assert_mentions(&read_error(&dir, &s.build().0), &["`l0.q.w`", "twice"]);

    let mut s = Synth::new();
    let e = s.entry("emb.pos");
    *e = q4_entry("emb.pos", 8, 32, 5);
    let msg = import_error(&dir, &s.build().0);
    assert_mentions(&msg, &["`emb.pos`", "expected F32 [8, 32]", "found Q4_0"]);

    let mut s = Synth::new();
    *s.entry("l0.fo.w") = q4_entry("l0.fo.w", 16, 64, 5);
    let msg = import_error(&dir, &s.build().0);
    assert_mentions(&msg, &["`l0.fo.w`", "expected Q4_0 [32, 64] (2048 elements)", "1024 elements"]);
}

#[test]
fn tokenizer_must_load_and_match_the_model() {
    let dir = TempDir::new("e5s-tok");
    let (bytes, _) = Synth::new().build();
    let (e5s, tok) = write_inputs(&dir, &bytes);
    let out = dir.join("out");

    let mut other = PIECES;
    other[4] = "▁bonjour";
    std::fs::write(&tok, tokenizer_json(&other)).unwrap();
    let msg = chain(import_e5s(&e5s, &tok, &out));
    assert_mentions(&msg, &["tokenizer.json", "token 4", "▁bonjour", "▁hello", "not this model's tokenizer"]);

    std::fs::write(&tok, tokenizer_json(&PIECES[..5])).unwrap();
    assert_mentions(&chain(import_e5s(&e5s, &tok, &out)), &["tokenizer.json", "has 5 tokens", "6"]);

    std::fs::write(&tok, "{\"model\": {\"type\": \"Unigram\"").unwrap();
    assert_mentions(&chain(import_e5s(&e5s, &tok, &out)), &["tokenizer.json", "cannot load"]);

    std::fs::remove_file(&tok).unwrap();
    assert_mentions(&chain(import_e5s(&e5s, &tok, &out)), &["tokenizer.json"]);
    assert!(!out.exists());
    assert!(hidden_entries(dir.path()).is_empty());
}

#[test]
fn import_never_overwrites_an_existing_directory() {
    let dir = TempDir::new("e5s-exists");
    let (e5s, tok) = write_inputs(&dir, &Synth::new().build().0);
    let out = dir.join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "x").unwrap();
    let e = import_e5s(&e5s, &tok, &out).unwrap_err();
    assert!(matches!(e, Error::Usage(_)), "{e:?}");
    assert_mentions(&e.chain(), &["already exists"]);
    assert_eq!(std::fs::read_to_string(out.join("keep.txt")).unwrap(), "x");
    // An empty directory is filled.
    std::fs::remove_file(out.join("keep.txt")).unwrap();
    import_e5s(&e5s, &tok, &out).unwrap();
    assert!(Path::new(&out.join("model.safetensors")).is_file());
}
