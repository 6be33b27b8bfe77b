//! Stop strings: a sequence ends as soon as the text of its generated tokens contains one of
//! them, and its text is cut before the earliest occurrence.
//!
//! Matching is on the decoded text (special tokens kept, as `engine-train generate` prints
//! it), re-decoded after every token, so a stop string split over several tokens is found when
//! its last piece arrives, and a character whose bytes span tokens is only matched once whole.
//! The tokens are kept up to the one that completed the match (transformers' stop-string
//! criterion keeps them too); only the text is cut.

use crate::data::TextTokenizer;
use crate::engine::error::{Error, Result};

pub struct StopStrings<'a> {
    tokenizer: &'a TextTokenizer,
    strings: Vec<String>,
}

impl<'a> StopStrings<'a> {
    pub fn new(tokenizer: &'a TextTokenizer, strings: Vec<String>) -> Result<StopStrings<'a>> {
        if strings.iter().any(String::is_empty) {
            return Err(Error::Usage("a stop string is empty (it would stop before the first token)".into()));
        }
        Ok(StopStrings { tokenizer, strings })
    }

    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }

    /// The text of `tokens` and the byte offset of the earliest stop string in it, if any.
    pub fn find(&self, tokens: &[u32]) -> Result<(String, Option<usize>)> {
        let text = self.tokenizer.decode(tokens, false)?;
        let at = first_match(&text, &self.strings);
        Ok((text, at))
    }
}

/// The byte offset of the earliest occurrence of any of `strings` in `text`.
pub fn first_match(text: &str, strings: &[String]) -> Option<usize> {
    strings.iter().filter_map(|s| text.find(s.as_str())).min()
}
