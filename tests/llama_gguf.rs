//! GGUF reading: metadata of every value type and every supported tensor type against the
//! `gguf` Python package (fixtures from tests/reference/make_gguf_fixtures.py, compared bit for
//! bit), versions, row reordering, and broken files (each an error naming the file and, where
//! there is one, the tensor; never a panic).

mod common;
#[path = "llama_support/gguf_builder.rs"]
mod gguf_builder;

use std::path::{Path, PathBuf};

use gguf_builder::GgufBuilder;
use half::bf16;
use polyadapt::engine::tensor::DType;
use polyadapt::models::gguf::{parse, unpermute_qk_rows, GgufFile, Value};
use serde_json::Value as Json;

fn fixture(name: &str) -> PathBuf {
    common::fixtures_dir().join("gguf").join(name)
}

fn err_of(path: &Path, bytes: &[u8]) -> String {
    match parse::parse(path, bytes) {
        Ok(_) => panic!("{} parsed", path.display()),
        Err(e) => e.chain(),
    }
}

#[test]
fn metadata_of_every_value_type() {
    let f = GgufFile::open(&fixture("quants.gguf")).unwrap();
    assert_eq!(f.version, 3);
    let want: serde_json::Map<String, Json> = serde_json::from_str(&std::fs::read_to_string(fixture("quants_metadata.json")).unwrap()).unwrap();
    fn same(v: &Value, w: &Json) -> bool {
        match (v, w) {
            (Value::Bool(b), Json::Bool(c)) => b == c,
            (Value::String(s), Json::String(t)) => s == t,
            (Value::F32(x), Json::Number(n)) => *x as f64 == n.as_f64().unwrap(),
            // serde_json's default float parser is not correctly rounded (-1.5e-300 reads one
            // ulp off), so f64 values are compared to within a few ulps.
            (Value::F64(x), Json::Number(n)) => (*x - n.as_f64().unwrap()).abs() <= 4.0 * f64::EPSILON * x.abs(),
            (Value::Array(items), Json::Array(ws)) => items.len() == ws.len() && items.iter().zip(ws).all(|(a, b)| same(a, b)),
            (v, Json::Number(n)) => v.as_int().is_some_and(|i| Some(i) == n.as_i64().map(|x| x as i128).or(n.as_u64().map(|x| x as i128))),
            _ => false,
        }
    }
    let types = [
        ("UINT8", "uint8"), ("INT8", "int8"), ("UINT16", "uint16"), ("INT16", "int16"), ("UINT32", "uint32"), ("INT32", "int32"),
        ("FLOAT32", "float32"), ("BOOL", "bool"), ("STRING", "string"), ("ARRAY", "array"), ("UINT64", "uint64"), ("INT64", "int64"), ("FLOAT64", "float64"),
    ];
    for (key, tv) in &want {
        let v = f.get(key).unwrap_or_else(|| panic!("{key} missing"));
        let ty = tv[0].as_str().unwrap();
        assert_eq!(types.iter().find(|t| t.0 == ty).unwrap().1, v.type_name(), "{key}");
        assert!(same(v, &tv[1]), "{key}: {v:?} != {}", tv[1]);
    }
    assert_eq!(want.len(), 15);
}

#[test]
fn every_supported_type_dequantises_as_gguf_py_does() {
    let f = GgufFile::open(&fixture("quants.gguf")).unwrap();
    let want = common::read_safetensors(&fixture("quants_expected.safetensors"));
    assert_eq!(want.len(), 13);
    for (name, w) in &want {
        let t = f.tensor(name, &w.shape, DType::F32).unwrap();
        let got = t.f32s();
        let bad = got.iter().zip(&w.data).filter(|(g, e)| (**g as f64).to_bits() != e.to_bits()).count();
        assert_eq!(bad, 0, "{name}: {bad} of {} values differ from gguf.quants.dequantize", got.len());
        let b = f.tensor(name, &w.shape, DType::BF16).unwrap();
        assert_eq!(b.dtype(), DType::BF16);
        let same = b.to_f32_cow().iter().zip(&w.data).all(|(g, e)| g.to_bits() == bf16::from_f32(*e as f32).to_f32().to_bits());
        assert!(same, "{name}: bf16 output is not the rounded f32 value");
    }
    // F32 data in the file is read in place, not copied.
    assert!(f.tensor("q.F32", &[3, 512], DType::F32).unwrap().is_mapped());
    assert!(f.tensor("q.F16", &[3, 512], DType::F16).unwrap().is_mapped());
    assert!(!f.tensor("q.Q4_K", &[3, 512], DType::F32).unwrap().is_mapped());
}

#[test]
fn rows_can_be_reordered_while_dequantising() {
    let f = GgufFile::open(&fixture("quants.gguf")).unwrap();
    let want = common::read_safetensors(&fixture("quants_expected.safetensors"));
    for name in ["q.Q6_K", "q.Q5_1", "q.F32"] {
        let t = f.tensor_rows(name, &[3, 512], DType::F32, Some(&[2, 0, 1])).unwrap();
        let w = &want[name].data;
        for (i, src) in [2usize, 0, 1].into_iter().enumerate() {
            assert!(t.f32s()[i * 512..(i + 1) * 512].iter().zip(&w[src * 512..(src + 1) * 512]).all(|(a, b)| *a as f64 == *b), "{name} row {i}");
        }
    }
    let e = f.tensor_rows("q.Q8_0", &[3, 512], DType::F32, Some(&[0, 0, 1])).unwrap_err().chain();
    common_mentions(&e, &["q.Q8_0", "permutation"]);
}

#[test]
fn unpermutation_inverts_llama_cpp_permute() {
    // convert_hf_to_gguf.py: w.reshape(heads, 2, d/2, ...).swapaxes(1, 2): file row h*d + 2j + s
    // holds transformers row h*d + s*d/2 + j.
    for (heads, d) in [(1, 4), (9, 64), (3, 64), (4, 2), (2, 128)] {
        let rows = heads * d;
        let mut file_rows = vec![0usize; rows];
        for h in 0..heads {
            for j in 0..d / 2 {
                for s in 0..2 {
                    file_rows[h * d + 2 * j + s] = h * d + s * d / 2 + j;
                }
            }
        }
        let order = unpermute_qk_rows(rows, heads).unwrap();
        let restored: Vec<usize> = order.iter().map(|&r| file_rows[r]).collect();
        assert_eq!(restored, (0..rows).collect::<Vec<_>>(), "heads {heads} d {d}");
    }
    assert_eq!(unpermute_qk_rows(4, 1).unwrap(), vec![0, 2, 1, 3]);
    assert!(unpermute_qk_rows(6, 4).is_none());
    assert!(unpermute_qk_rows(9, 3).is_none());
}

fn common_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "error message lacks {p:?}: {msg}");
    }
}

#[test]
fn unsupported_types_shapes_and_names_are_clear_errors() {
    let path = fixture("quants.gguf");
    let f = GgufFile::open(&path).unwrap();
    let e = f.tensor("q.Q2_K", &[3, 512], DType::F32).unwrap_err().chain();
    common_mentions(&e, &["quants.gguf", "q.Q2_K", "Q2_K", "Q4_K"]);
    let e = f.tensor("q.Q4_0", &[512, 3], DType::F32).unwrap_err().chain();
    common_mentions(&e, &["q.Q4_0", "[512, 3]", "[3, 512]"]);
    let e = f.tensor("q.nothing", &[1], DType::F32).unwrap_err().chain();
    common_mentions(&e, &["quants.gguf", "q.nothing", "not found"]);
    assert_eq!(f.tensor("shape.rank3", &[2, 3, 64], DType::F32).unwrap().shape(), &[2, 3, 64]);
}

#[test]
fn versions_two_and_three_are_read_and_others_refused() {
    let path = fixture("quants.gguf");
    let bytes = std::fs::read(&path).unwrap();
    let mut v2 = bytes.clone();
    v2[4..8].copy_from_slice(&2u32.to_le_bytes());
    let h = parse::parse(&path, &v2).unwrap();
    assert_eq!((h.version, h.tensors.len()), (2, 14));
    let mut v1 = bytes.clone();
    v1[4..8].copy_from_slice(&1u32.to_le_bytes());
    common_mentions(&err_of(&path, &v1), &["quants.gguf", "version 1", "not supported"]);
    let mut big = bytes.clone();
    big[4..8].copy_from_slice(&3u32.to_be_bytes());
    common_mentions(&err_of(&path, &big), &["big-endian"]);
    let mut magic = bytes.clone();
    magic[..4].copy_from_slice(b"GGML");
    common_mentions(&err_of(&path, &magic), &["quants.gguf", "not a GGUF file", "GGML"]);
}

#[test]
fn every_truncation_is_an_error() {
    let path = fixture("quants.gguf");
    let bytes = std::fs::read(&path).unwrap();
    let h = parse::parse(&path, &bytes).unwrap();
    let last = h.tensors.iter().max_by_key(|t| t.offset).unwrap();
    // The writer pads after the last tensor; cuts in that padding leave a valid file.
    let end = (h.data_start + last.offset + last.size) as usize;
    for cut in 0..end {
        let e = err_of(&path, &bytes[..cut]);
        assert!(e.contains("quants.gguf"), "cut {cut}: {e}");
        if cut as u64 >= h.data_start + last.offset {
            // Inside the last tensor's data: the error names it.
            common_mentions(&e, &[&last.name, "out of bounds"]);
        } else if (cut as u64) + 64 < h.data_start {
            assert!(e.contains("truncated") || e.contains("claims") || e.contains("out of bounds"), "cut {cut}: {e}");
        }
    }
}

#[test]
fn corrupted_headers_are_errors_naming_what_is_wrong() {
    let p = Path::new("crafted.gguf");
    let ok = GgufBuilder::new().tensor("a", &[32, 2], 8, 0).data(68);
    parse::parse(p, &ok.build()).unwrap();
    let cases: Vec<(GgufBuilder, Vec<&str>)> = vec![
        (GgufBuilder::new().tensor("w.bad", &[32], 99, 0).data(64), vec!["w.bad", "unknown ggml type id 99"]),
        (GgufBuilder::new().tensor("w.odd", &[30], 2, 0).data(64), vec!["w.odd", "whole blocks of 32"]),
        (GgufBuilder::new().tensor("w.mis", &[8], 0, 4).data(64), vec!["w.mis", "not a multiple of the alignment 32"]),
        (GgufBuilder::new().tensor("w.far", &[32, 4], 0, 0).data(100), vec!["w.far", "out of bounds", "512 bytes"]),
        (GgufBuilder::new().tensor("w.rank", &[1, 1, 1, 1, 1], 0, 0).data(64), vec!["w.rank", "5 dimensions"]),
        (GgufBuilder::new().tensor("dup", &[8], 0, 0).tensor("dup", &[8], 0, 32).data(64), vec!["dup", "twice"]),
        (GgufBuilder::new().tensor("huge", &[u64::MAX, 2], 0, 0).data(64), vec!["huge", "do not fit"]),
        (GgufBuilder::new().kv_raw("k.bool", 7, &[2]), vec!["k.bool", "bool of byte value 2"]),
        (GgufBuilder::new().kv_raw("k.type", 13, &[0; 8]), vec!["k.type", "unknown value type 13"]),
        (GgufBuilder::new().kv_raw("k.str", 8, &u64::MAX.to_le_bytes()), vec!["k.str", "claims"]),
        (GgufBuilder::new().kv_raw("k.arr", 9, &[4, 0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 0]), vec!["k.arr", "claims"]),
        (GgufBuilder::new().kv_raw("k.utf8", 8, &[2, 0, 0, 0, 0, 0, 0, 0, 0xC3, 0x28]), vec!["k.utf8", "UTF-8"]),
        (GgufBuilder::new().kv_raw("general.alignment", 4, &24u32.to_le_bytes()), vec!["general.alignment", "power of two"]),
        (GgufBuilder::new().counts(u64::MAX, 0), vec!["tensor table", "claims"]),
    ];
    for (b, parts) in cases {
        let e = err_of(p, &b.build());
        common_mentions(&e, &parts);
        assert!(e.contains("crafted.gguf"), "{e}");
    }
    // Arrays nested deeper than four levels.
    let mut nested = vec![9u8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
    for _ in 0..5 {
        let mut outer = vec![9u8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        outer.extend(&nested);
        nested = outer;
    }
    let e = err_of(p, &GgufBuilder::new().kv_raw("k.deep", 9, &nested).build());
    common_mentions(&e, &["k.deep", "nests arrays"]);
}
