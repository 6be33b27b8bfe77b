//! MLQA's answer normalisation, as its official evaluation script (`mlqa_evaluation_v1.py`)
//! computes it: lower case; remove every character of Unicode category P* and of Python's
//! `string.punctuation`; remove the language's articles; split on whitespace, and for Chinese
//! also around each CJK ideograph (U+4E00..U+9FA5) and punctuation character ("mixed
//! segmentation"). Exact match and F1 are then those of SQuAD ([`super::squad::evaluate`]).
//!
//! Articles, per the script: en `a an the`; es `un una unos unas el la los las`; de `ein eine
//! einen einem eines einer der die das den dem des`; vi `của là cái chiếc những`; ar: every
//! occurrence of `ال` (the script's pattern `\sال^|ال`: its first branch can never match);
//! hi, zh: none.
//!
//! Python semantics kept as in [`super::squad::SquadV1Normalizer`]: `\b` word characters are
//! letters (L*), numbers (N*) and `_` (Python's `str.isalnum`, so combining marks are not word
//! characters); `str.split()` whitespace. Categories come from the `unicode_categories` tables,
//! an older Unicode version than Python 3.11's 14.0: characters assigned since can differ.

use unicode_categories::UnicodeCategories;

use super::squad::{is_py_space, replace_words, split_python, AnswerNormalizer};
use crate::engine::error::{Error, Result};

/// The languages of MLQA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MlqaLang {
    En,
    Es,
    Hi,
    Vi,
    De,
    Ar,
    Zh,
}

impl MlqaLang {
    pub fn parse(code: &str) -> Result<MlqaLang> {
        Ok(match code {
            "en" => MlqaLang::En,
            "es" => MlqaLang::Es,
            "hi" => MlqaLang::Hi,
            "vi" => MlqaLang::Vi,
            "de" => MlqaLang::De,
            "ar" => MlqaLang::Ar,
            "zh" => MlqaLang::Zh,
            other => return Err(Error::Usage(format!("unknown MLQA language `{other}` (expected en, es, hi, vi, de, ar or zh)"))),
        })
    }

    fn articles(self) -> &'static [&'static str] {
        match self {
            MlqaLang::En => &["a", "an", "the"],
            MlqaLang::Es => &["un", "una", "unos", "unas", "el", "la", "los", "las"],
            MlqaLang::De => &["ein", "eine", "einen", "einem", "eines", "einer", "der", "die", "das", "den", "dem", "des"],
            MlqaLang::Vi => &["của", "là", "cái", "chiếc", "những"],
            MlqaLang::Hi | MlqaLang::Ar | MlqaLang::Zh => &[],
        }
    }
}

/// `PUNCT` of the script: Unicode P* plus `string.punctuation` (which adds ASCII symbols such
/// as `$ + < = > ^ ` | ~`).
pub fn is_punct(c: char) -> bool {
    c.is_ascii_punctuation() || c.is_punctuation()
}

/// A character of Python's `\w` in a `str` pattern.
fn is_word(c: char) -> bool {
    c.is_letter() || c.is_number() || c == '_'
}

fn is_cjk(c: char) -> bool {
    ('\u{4e00}'..='\u{9fa5}').contains(&c)
}

/// `normalize_answer(s, lang)` of the MLQA script.
#[derive(Clone, Copy, Debug)]
pub struct MlqaNormalizer {
    pub lang: MlqaLang,
}

impl MlqaNormalizer {
    fn remove_articles(&self, text: &str) -> String {
        if self.lang == MlqaLang::Ar {
            return text.replace("ال", " ");
        }
        let articles = self.lang.articles();
        if articles.is_empty() {
            return text.to_string();
        }
        replace_words(text, is_word, articles)
    }

    /// `white_space_fix`: the tokens joined by single spaces.
    fn tokens_of(&self, text: &str) -> Vec<String> {
        if self.lang != MlqaLang::Zh {
            return split_python(text).map(str::to_string).collect();
        }
        // mixed_segmentation: each ideograph and punctuation character is a token; the text
        // between them is split on whitespace.
        let mut out = Vec::new();
        let mut pending = String::new();
        for c in text.chars() {
            if is_cjk(c) || is_punct(c) {
                out.extend(split_python(&pending).map(str::to_string));
                pending.clear();
                out.push(c.to_string());
            } else {
                pending.push(c);
            }
        }
        out.extend(split_python(&pending).map(str::to_string));
        // `t.strip() != ''`: a lone whitespace character cannot come out of the split, but a
        // punctuation token that is whitespace cannot either; keep the script's filter anyway.
        out.retain(|t| !t.chars().all(is_py_space));
        out
    }
}

impl AnswerNormalizer for MlqaNormalizer {
    fn normalize(&self, text: &str) -> String {
        let lower = text.to_lowercase();
        let no_punct: String = lower.chars().filter(|&c| !is_punct(c)).collect();
        let no_articles = self.remove_articles(&no_punct);
        self.tokens_of(&no_articles).join(" ")
    }

    /// F1 splits the normalised answer with `str.split()` (Chinese tokens were joined by spaces).
    fn tokens<'a>(&self, normalized: &'a str) -> Vec<&'a str> {
        split_python(normalized).collect()
    }
}
