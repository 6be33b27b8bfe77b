//! Corpus BLEU as sacrebleu 2.x computes it by default (`corpus_bleu(hyps, [refs])`): the `13a`
//! tokenizer (mteval-v13a), n-grams up to 4, clipped counts summed over the corpus, the
//! brevity penalty against the summed reference length, exponential ("NIST") smoothing of
//! zero n-gram matches, case-sensitive, one reference per hypothesis.

use std::collections::HashMap;

use crate::engine::error::{Error, Result};

use super::squad::{is_py_space, split_python};

const MAX_ORDER: usize = 4;

/// sacrebleu's `Tokenizer13a` on a line (after `rstrip()`, which `corpus_bleu` applies first).
pub fn tokenize_13a(line: &str) -> String {
    let mut line = line.replace("<skipped>", "").replace("-\n", "").replace('\n', " ");
    if line.contains('&') {
        line = line.replace("&quot;", "\"").replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">");
    }
    let chars: Vec<char> = format!(" {line} ").chars().collect();
    // ([\{-\~\[-\` -\&\(-\+\:-\@\/]) -> ' \1 ': ASCII punctuation and symbols except ' . , -
    // and the space itself is in the class too (it becomes three spaces: no token changes).
    let mut a = Vec::with_capacity(chars.len() * 2);
    for &c in &chars {
        let split = matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/');
        if split {
            a.extend([' ', c, ' ']);
        } else {
            a.push(c);
        }
    }
    let digit = |c: char| c.is_ascii_digit();
    let point = |c: char| c == '.' || c == ',';
    // ([^0-9])([\.,]) -> '\1 \2 '
    let b = sub_pairs(&a, |x, y| !digit(x) && point(y), |x, y, out| out.extend([x, ' ', y, ' ']));
    // ([\.,])([^0-9]) -> ' \1 \2'
    let c = sub_pairs(&b, |x, y| point(x) && !digit(y), |x, y, out| out.extend([' ', x, ' ', y]));
    // ([0-9])(-) -> '\1 \2 '
    let d = sub_pairs(&c, |x, y| digit(x) && y == '-', |x, y, out| out.extend([x, ' ', y, ' ']));
    let s: String = d.into_iter().collect();
    split_python(&s).collect::<Vec<_>>().join(" ")
}

/// Python's `str.rstrip()`: also strips U+001C..U+001F, which Rust's `trim_end` keeps.
pub fn rstrip(s: &str) -> &str {
    s.trim_end_matches(is_py_space)
}

/// `re.sub` of a two-character pattern: scanning left to right, a match at `i` is replaced and
/// the scan goes on after it (matches never overlap).
fn sub_pairs(s: &[char], matches: impl Fn(char, char) -> bool, replace: impl Fn(char, char, &mut Vec<char>)) -> Vec<char> {
    let mut out = Vec::with_capacity(s.len() + s.len() / 4);
    let mut i = 0;
    while i < s.len() {
        if i + 1 < s.len() && matches(s[i], s[i + 1]) {
            replace(s[i], s[i + 1], &mut out);
            i += 2;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// Corpus BLEU and the statistics it comes from.
#[derive(Clone, Debug, PartialEq)]
pub struct BleuScore {
    /// In points (0-100).
    pub score: f64,
    /// Clipped n-gram matches, n = 1..4.
    pub counts: [u64; MAX_ORDER],
    /// Hypothesis n-grams, n = 1..4.
    pub totals: [u64; MAX_ORDER],
    pub sys_len: u64,
    pub ref_len: u64,
}

/// n-gram counts of a tokenised line (tokens joined by single spaces: the key is the text).
fn ngrams(tokens: &[&str]) -> HashMap<(usize, String), u64> {
    let mut m = HashMap::new();
    for n in 1..=MAX_ORDER {
        for w in tokens.windows(n) {
            *m.entry((n, w.join(" "))).or_insert(0) += 1;
        }
    }
    m
}

/// `sacrebleu.corpus_bleu(hypotheses, [references])`.
pub fn corpus_bleu(hypotheses: &[String], references: &[String]) -> Result<BleuScore> {
    if hypotheses.len() != references.len() {
        return Err(Error::Usage(format!("{} hypotheses for {} references", hypotheses.len(), references.len())));
    }
    let (mut counts, mut totals) = ([0u64; MAX_ORDER], [0u64; MAX_ORDER]);
    let (mut sys_len, mut ref_len) = (0u64, 0u64);
    for (h, r) in hypotheses.iter().zip(references) {
        let (h, r) = (tokenize_13a(rstrip(h)), tokenize_13a(rstrip(r)));
        let (ht, rt): (Vec<&str>, Vec<&str>) = (split_python(&h).collect(), split_python(&r).collect());
        sys_len += ht.len() as u64;
        ref_len += rt.len() as u64;
        let refs = ngrams(&rt);
        for ((n, g), c) in ngrams(&ht) {
            totals[n - 1] += c;
            if let Some(&rc) = refs.get(&(n, g)) {
                counts[n - 1] += c.min(rc);
            }
        }
    }
    Ok(BleuScore { score: compute_bleu(&counts, &totals, sys_len, ref_len), counts, totals, sys_len, ref_len })
}

/// `BLEU.compute_bleu` with `smooth_method='exp'`, no effective order.
fn compute_bleu(counts: &[u64; MAX_ORDER], totals: &[u64; MAX_ORDER], sys_len: u64, ref_len: u64) -> f64 {
    let bp = if sys_len < ref_len {
        if sys_len > 0 { (1.0 - ref_len as f64 / sys_len as f64).exp() } else { 0.0 }
    } else {
        1.0
    };
    if counts.iter().all(|&c| c == 0) {
        return 0.0;
    }
    let mut precisions = [0.0f64; MAX_ORDER];
    let mut smooth = 1.0f64;
    for n in 0..MAX_ORDER {
        if totals[n] == 0 {
            break;
        }
        precisions[n] = if counts[n] == 0 {
            smooth *= 2.0;
            100.0 / (smooth * totals[n] as f64)
        } else {
            100.0 * counts[n] as f64 / totals[n] as f64
        };
    }
    // `my_log`: log(0) is floored at -9999999999 (an order with no n-grams at all).
    let log_sum: f64 = precisions.iter().map(|&p| if p == 0.0 { -9_999_999_999.0 } else { p.ln() }).sum();
    bp * (log_sum / MAX_ORDER as f64).exp()
}
