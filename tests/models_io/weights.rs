//! safetensors: writing, mapping, the prefix rule, sharded indexes, and every kind of bad file.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use half::{bf16, f16};
use polyadapt::engine::tensor::{DType, Tensor, View};
use polyadapt::models::weights::{write_safetensors, TensorData, Weights};

use crate::common::{assert_mentions, chain, hidden_entries, TempDir};

fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn seq(n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|i| (i as f32 - 3.0) * scale).collect()
}

/// A small model directory: two f32 matrices, a bf16 and an f16 vector, an i64 table.
fn write_model(dir: &Path, prefix: &str) {
    let bf: Vec<bf16> = seq(4, 0.5).into_iter().map(bf16::from_f32).collect();
    let hf: Vec<f16> = seq(3, 0.25).into_iter().map(f16::from_f32).collect();
    let bf_t = Tensor::from_storage(polyadapt::engine::tensor::Storage::BF16(bf), &[4]);
    let hf_t = Tensor::from_storage(polyadapt::engine::tensor::Storage::F16(hf), &[3]);
    let tensors = vec![
        (format!("{prefix}embeddings.word_embeddings.weight"), TensorData::f32(seq(12, 1.0), &[4, 3])),
        (
            format!("{prefix}encoder.layer.0.attention.self.query.weight"),
            TensorData::f32(seq(9, 0.1), &[3, 3]),
        ),
        (format!("{prefix}embeddings.LayerNorm.weight"), TensorData::from_tensor(&bf_t)),
        (format!("{prefix}embeddings.LayerNorm.bias"), TensorData::from_tensor(&hf_t)),
        (format!("{prefix}embeddings.position_ids"), TensorData::i64(vec![0i64, 1, 2, 3], &[1, 4])),
    ];
    write_safetensors(&dir.join("model.safetensors"), &tensors, &meta(&[("format", "pt")])).unwrap();
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_f32_cow().into_owned()
}

#[test]
fn written_file_reads_back_mapped_with_every_dtype() {
    let dir = TempDir::new("weights-good");
    write_model(dir.path(), "");
    assert!(hidden_entries(dir.path()).is_empty(), "temporary file left behind");
    let w = Weights::open(dir.path()).unwrap();
    assert_eq!(w.len(), 5);
    assert_eq!(w.prefix(), "");

    let t = w.get("embeddings.word_embeddings.weight", &[4, 3]).unwrap();
    assert!(t.is_mapped(), "an aligned f32 tensor must be read in place");
    assert_eq!(t.dtype(), DType::F32);
    assert_eq!(values(&t), seq(12, 1.0));

    let t = w.get("embeddings.LayerNorm.weight", &[4]).unwrap();
    assert!(t.is_mapped());
    assert!(matches!(t.view(), View::BF16(_)));
    assert_eq!(values(&t), seq(4, 0.5));
    let t = w.get("embeddings.LayerNorm.bias", &[3]).unwrap();
    assert!(matches!(t.view(), View::F16(_)));
    assert_eq!(values(&t), seq(3, 0.25));

    // get_as converts (and so copies).
    let t = w.get_as("encoder.layer.0.attention.self.query.weight", &[3, 3], DType::BF16).unwrap();
    assert_eq!(t.dtype(), DType::BF16);
    assert!(!t.is_mapped());
    let expected: Vec<f32> = seq(9, 0.1).into_iter().map(|x| bf16::from_f32(x).to_f32()).collect();
    assert_eq!(values(&t), expected);

    // Integer tensors are reachable as bytes.
    let info = w.info("embeddings.position_ids").unwrap();
    assert_eq!((info.dtype, info.shape), (safetensors::Dtype::I64, &[1usize, 4][..]));
    assert_eq!(bytemuck::pod_collect_to_vec::<u8, i64>(info.bytes), vec![0, 1, 2, 3]);
}

#[test]
fn writer_output_is_what_the_safetensors_library_writes() {
    let dir = TempDir::new("weights-lib");
    let path = dir.join("model.safetensors");
    let a = seq(6, 0.5);
    let ids = vec![5i64, -1, 7];
    let tensors = vec![
        ("b.weight".to_string(), TensorData::f32(&a[..], &[2, 3])),
        ("a.weight".to_string(), TensorData::f32(&a[..2], &[2])),
        ("input_ids".to_string(), TensorData::i64(&ids[..], &[1, 3])),
    ];
    write_safetensors(&path, &tensors, &meta(&[("format", "pt")])).unwrap();
    let ours = std::fs::read(&path).unwrap();

    let views: Vec<(String, safetensors::tensor::TensorView)> = vec![
        (
            "b.weight".into(),
            safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                vec![2, 3],
                bytemuck::cast_slice(&a),
            )
            .unwrap(),
        ),
        (
            "a.weight".into(),
            safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                vec![2],
                bytemuck::cast_slice(&a[..2]),
            )
            .unwrap(),
        ),
        (
            "input_ids".into(),
            safetensors::tensor::TensorView::new(
                safetensors::Dtype::I64,
                vec![1, 3],
                bytemuck::cast_slice(&ids),
            )
            .unwrap(),
        ),
    ];
    let md: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let theirs = safetensors::serialize(views, Some(md)).unwrap();
    assert_eq!(ours, theirs);
}

#[test]
fn writer_refuses_bad_tensors_and_leaves_nothing_behind() {
    let dir = TempDir::new("weights-write-bad");
    let path = dir.join("out.safetensors");
    let t = |n: usize, shape: &[usize]| TensorData::f32(vec![0.0; n], shape);
    let msg = chain(write_safetensors(&path, &[("x".into(), t(5, &[2, 3]))], &BTreeMap::new()));
    assert_mentions(&msg, &["out.safetensors", "`x`", "5 values", "[2, 3]"]);
    let msg = chain(write_safetensors(
        &path,
        &[("x".into(), t(1, &[1])), ("x".into(), t(1, &[1]))],
        &BTreeMap::new(),
    ));
    assert_mentions(&msg, &["`x`", "twice"]);
    let msg = chain(write_safetensors(
        &dir.join("no/such/dir/out.safetensors"),
        &[("x".into(), t(1, &[1]))],
        &BTreeMap::new(),
    ));
    assert_mentions(&msg, &["cannot create", "no/such/dir"]);
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "nothing may be left behind");
}

#[test]
fn prefixed_checkpoints_are_found_with_or_without_the_prefix() {
    let dir = TempDir::new("weights-prefix");
    write_model(dir.path(), "bert.");
    let w = Weights::open(dir.path()).unwrap();
    assert_eq!(w.prefix(), "bert.");
    assert!(w.contains("bert.embeddings.word_embeddings.weight"));
    assert!(!w.contains("embeddings.word_embeddings.weight"));
    let t = w.get_any("embeddings.word_embeddings.weight", &[4, 3]).unwrap();
    assert_eq!(values(&t), seq(12, 1.0));
    // A caller's prefix that the file does not use is swapped for the file's.
    assert!(w.get_any("roberta.embeddings.word_embeddings.weight", &[4, 3]).is_ok());
    assert_eq!(w.resolve("embeddings.LayerNorm.bias"), Some("bert.embeddings.LayerNorm.bias"));

    let plain = TempDir::new("weights-noprefix");
    write_model(plain.path(), "");
    let w = Weights::open(plain.path()).unwrap();
    assert!(w.get_any("bert.embeddings.word_embeddings.weight", &[4, 3]).is_ok());
}

#[test]
fn missing_tensor_names_file_tensor_and_closest_names() {
    let dir = TempDir::new("weights-missing");
    write_model(dir.path(), "");
    let w = Weights::open(dir.path()).unwrap();
    let msg = chain(w.get("encoder.layer.0.attention.self.qeury.weight", &[3, 3]));
    assert_mentions(
        &msg,
        &[
            "model.safetensors",
            "`encoder.layer.0.attention.self.qeury.weight`",
            "not found",
            "closest names: `encoder.layer.0.attention.self.query.weight`",
        ],
    );
    let prefixed = TempDir::new("weights-missing-prefixed");
    write_model(prefixed.path(), "roberta.");
    let w = Weights::open(prefixed.path()).unwrap();
    let msg = chain(w.get_any("encoder.layer.1.output.dense.weight", &[3, 3]));
    assert_mentions(
        &msg,
        &[
            "not found",
            "tried `encoder.layer.1.output.dense.weight`, `roberta.encoder.layer.1.output.dense.weight`",
        ],
    );
}

#[test]
fn wrong_shape_and_dtype_are_named() {
    let dir = TempDir::new("weights-shape");
    write_model(dir.path(), "");
    let w = Weights::open(dir.path()).unwrap();
    let msg = chain(w.get("embeddings.word_embeddings.weight", &[3, 4]));
    assert_mentions(
        &msg,
        &["model.safetensors", "`embeddings.word_embeddings.weight`", "expected shape [3, 4], found [4, 3]"],
    );
    let msg = chain(w.get("embeddings.position_ids", &[1, 4]));
    assert_mentions(&msg, &["`embeddings.position_ids`", "I64", "F32, BF16, F16"]);
}

#[test]
fn directory_without_weights_is_named() {
    let dir = TempDir::new("weights-none");
    let msg = chain(Weights::open(dir.path()));
    assert_mentions(
        &msg,
        &[dir.path().to_str().unwrap(), "model.safetensors", "model.safetensors.index.json"],
    );
}

/// A safetensors file from a raw JSON header (padded to 8 bytes) and data.
fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.as_bytes().to_vec();
    h.resize(h.len().next_multiple_of(8), b' ');
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

#[test]
fn misaligned_data_is_copied() {
    let dir = TempDir::new("weights-misaligned");
    let vals = [1.5f32, -2.25];
    let mut data = vec![7u8, 8, 9];
    data.extend_from_slice(bytemuck::cast_slice(&vals));
    let header = r#"{"flags":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},"w":{"dtype":"F32","shape":[2],"data_offsets":[3,11]}}"#;
    std::fs::write(dir.join("model.safetensors"), raw_file(header, &data)).unwrap();
    let w = Weights::open(dir.path()).unwrap();
    let t = w.get("w", &[2]).unwrap();
    assert!(!t.is_mapped(), "a misaligned tensor cannot be mapped");
    assert_eq!(t.f32s(), &vals);
}

/// Opens `bytes` written as a model file and returns the error chain.
fn open_error(dir: &TempDir, bytes: &[u8]) -> String {
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    chain(Weights::open(dir.path()).map(|w| w.len()))
}

#[test]
fn truncated_files_say_where_and_by_how_much() {
    let dir = TempDir::new("weights-trunc");
    write_model(dir.path(), "");
    let good = std::fs::read(dir.join("model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let data_len = good.len() - 8 - header_len;

    let msg = open_error(&dir, &good[..5]);
    assert_mentions(&msg, &["model.safetensors", "truncated", "5 bytes", "8-byte header length"]);
    let msg = open_error(&dir, &good[..8 + header_len / 2]);
    assert_mentions(&msg, &["truncated", &format!("header length field says {header_len} bytes")]);
    let msg = open_error(&dir, &good[..good.len() - 3]);
    assert_mentions(
        &msg,
        &[
            "truncated",
            &format!("header says {data_len} bytes of tensor data"),
            &format!("file has {} bytes", data_len - 3),
        ],
    );
    let mut longer = good.clone();
    longer.extend([0u8; 4]);
    assert_mentions(&open_error(&dir, &longer), &["4 bytes after the last tensor"]);
    // Every cut point fails cleanly.
    for cut in 0..good.len() {
        assert!(open_error(&dir, &good[..cut]).contains("model.safetensors"), "cut at {cut}");
    }
}

#[test]
fn corrupted_headers_are_refused() {
    let dir = TempDir::new("weights-corrupt");
    write_model(dir.path(), "");
    let good = std::fs::read(dir.join("model.safetensors")).unwrap();

    let mut bad = good.clone();
    bad[8] = b'x'; // the header's opening brace
    assert_mentions(&open_error(&dir, &bad), &["model.safetensors", "not a valid safetensors JSON header"]);

    let mut bad = good.clone();
    bad[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_mentions(&open_error(&dir, &bad), &["header length field", "not a safetensors file"]);

    let mut bad = good.clone();
    bad[12] = 0xFF;
    assert_mentions(&open_error(&dir, &bad), &["not UTF-8"]);

    // A tensor whose byte range does not match its shape.
    let header = r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
    let msg = open_error(&dir, &raw_file(header, &[0u8; 8]));
    assert_mentions(&msg, &["`w`", "needs 12 bytes", "span 8"]);
    // Overlapping tensors.
    let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    assert_mentions(&open_error(&dir, &raw_file(header, &[0u8; 12])), &["`b`", "offsets"]);
}

/// Writes a two-shard model and its index; returns the index path.
fn write_sharded(dir: &Path) -> std::path::PathBuf {
    let one = vec![("a.weight".to_string(), TensorData::f32(seq(4, 1.0), &[2, 2]))];
    let two = vec![("b.weight".to_string(), TensorData::f32(seq(3, 2.0), &[3]))];
    write_safetensors(&dir.join("model-00001-of-00002.safetensors"), &one, &BTreeMap::new()).unwrap();
    write_safetensors(&dir.join("model-00002-of-00002.safetensors"), &two, &BTreeMap::new()).unwrap();
    let index = dir.join("model.safetensors.index.json");
    let text = r#"{"metadata":{"total_size":28},"weight_map":{"a.weight":"model-00001-of-00002.safetensors","b.weight":"model-00002-of-00002.safetensors"}}"#;
    std::fs::write(&index, text).unwrap();
    index
}

#[test]
fn sharded_index_opens_every_shard() {
    let dir = TempDir::new("weights-shards");
    write_sharded(dir.path());
    let w = Weights::open(dir.path()).unwrap();
    assert_eq!(w.len(), 2);
    assert_eq!(values(&w.get("a.weight", &[2, 2]).unwrap()), seq(4, 1.0));
    let b = w.get("b.weight", &[3]).unwrap();
    assert!(b.is_mapped());
    assert_eq!(values(&b), seq(3, 2.0));
    assert!(w.info("b.weight").unwrap().file.ends_with("model-00002-of-00002.safetensors"));
}

#[test]
fn sharded_index_errors_name_the_index() {
    let dir = TempDir::new("weights-shards-bad");
    let index = write_sharded(dir.path());
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    let msg = chain(Weights::open(dir.path()).map(|w| w.len()));
    assert_mentions(
        &msg,
        &["model.safetensors.index.json", "model-00002-of-00002.safetensors", "missing", "b.weight"],
    );

    // A shard that lacks a tensor the index puts there.
    let dir = TempDir::new("weights-shards-lack");
    write_sharded(dir.path());
    let text = r#"{"weight_map":{"a.weight":"model-00001-of-00002.safetensors","c.weight":"model-00001-of-00002.safetensors"}}"#;
    std::fs::write(dir.join("model.safetensors.index.json"), text).unwrap();
    let msg = chain(Weights::open(dir.path()).map(|w| w.len()));
    assert_mentions(&msg, &["model.safetensors.index.json", "`c.weight`", "does not contain it"]);

    for (text, expect) in [
        ("{\"weight_map\": ", "not valid JSON"),
        ("{\"metadata\": {}}", "weight_map"),
        (r#"{"weight_map":{"a.weight":3}}"#, "`a.weight`"),
        (r#"{"weight_map":{"a.weight":"../model-00001-of-00002.safetensors"}}"#, "not a plain file name"),
    ] {
        std::fs::write(&index, text).unwrap();
        let msg = chain(Weights::open_index(&index).map(|w| w.len()));
        assert_mentions(&msg, &["model.safetensors.index.json", expect]);
    }
}
