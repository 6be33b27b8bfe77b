//! Tokenisation with the real tokenizers: truncation keeps the special tokens, pairs are cut
//! longest first, short inputs are untouched, batches pad on the right.

mod common;

use common::*;
use polyadapt::data::{EncodedBatch, TextTokenizer};

#[test]
fn truncation_keeps_special_tokens_and_cuts_pairs_longest_first() {
    for name in ["all-minilm-l6-v2", "multilingual-e5-small"] {
        let dir = real_model(name);
        let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"), None).unwrap();
        let short = vec!["A short sentence.".to_string()];
        let long = vec!["word ".repeat(100)];
        let plain = tok.encode_batch(&short, 512).unwrap();
        let t = tok.encode_truncated(&short, None, 16).unwrap();
        assert_eq!(t[0].ids, plain.ids[..plain.lengths[0]], "{name}: short text untouched");
        let t = tok.encode_truncated(&long, None, 16).unwrap();
        let full = tok.encode_batch(&long, 512).unwrap();
        assert_eq!(t[0].ids.len(), 16);
        assert_eq!(t[0].ids[0], full.ids[0], "{name}: first special token kept");
        assert_eq!(t[0].ids[15], full.ids[full.lengths[0] - 1], "{name}: last special token kept");
        // Pairs: the longer side loses tokens first; both sides keep some.
        let p = tok.encode_truncated(&short, Some(&long), 24).unwrap();
        assert_eq!(p[0].ids.len(), 24);
        let first_len = tok.encode_truncated(&short, None, 512).unwrap()[0].ids.len();
        assert!(p[0].ids[..first_len - 1] == tok.encode_truncated(&short, None, 512).unwrap()[0].ids[..first_len - 1], "{name}: the short side is kept whole");
        // Padding a batch of them.
        let b = EncodedBatch::from_sequences(&[(&t[0].ids, &t[0].type_ids), (&p[0].ids[..5], &p[0].type_ids[..5])], tok.pad_id());
        assert_eq!((b.batch, b.len, b.lengths.clone()), (2, 16, vec![16, 5]));
        assert!(b.ids[16 + 5..].iter().all(|&i| i == tok.pad_id()));
        assert_eq!(b.mask.iter().filter(|&&m| m == 1.0).count(), 21);
    }
}
