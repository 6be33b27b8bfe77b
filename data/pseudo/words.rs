//! Words of a text, as the pseudo-data generators see them, and a text cut into pieces that can
//! be dropped, reordered or replaced and put back together with exact character offsets.
//!
//! A word is a run of non-whitespace characters, except that a punctuation character (Unicode
//! P* and ASCII symbols, MLQA's `PUNCT`) and a character of a script written without spaces
//! between words (CJK ideographs, kana, full-width forms) are words on their own, as MLQA's
//! "mixed segmentation" treats Chinese and BERT's basic tokenizer treats punctuation: `Brazil,`
//! is `Brazil` and `,`, so that code-switching replaces `Brazil` by `Brasilien` and leaves the
//! comma where it was.
//!
//! All offsets are characters (Unicode scalar values), the unit of SQuAD's `answer_start`.

use crate::data::metrics::mlqa::is_punct;

/// A character of a script written without spaces between words.
pub fn is_unspaced(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // hiragana, katakana
        | 0x3001..=0x303F    // CJK symbols and punctuation (U+3000 is whitespace)
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xF900..=0xFAFF    // CJK compatibility ideographs
        | 0xFF00..=0xFFEF    // half- and full-width forms
        | 0x20000..=0x2FFFF) // CJK extensions B..
}

/// A character that is a word by itself.
fn is_own_word(c: char) -> bool {
    is_unspaced(c) || is_punct(c)
}

/// Character spans `start..end` of the words of `chars`, in order, offset by `base`.
fn spans_of(chars: &[char], base: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (i, &c) in chars.iter().enumerate() {
        if c.is_whitespace() || is_own_word(c) {
            if let Some(s) = start.take() {
                out.push((base + s, base + i));
            }
            if is_own_word(c) {
                out.push((base + i, base + i + 1));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push((base + s, base + chars.len()));
    }
    out
}

/// Character spans of the words of `text`.
pub fn word_spans(text: &str) -> Vec<(usize, usize)> {
    spans_of(&text.chars().collect::<Vec<_>>(), 0)
}

/// One word of a [`Segmented`] text (or its fixed span), and the whitespace that follows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    pub text: String,
    /// Whitespace between this piece and the next (empty between CJK characters).
    pub gap: String,
    /// The fixed span (a QA answer): never dropped, moved by a swap or replaced.
    pub fixed: bool,
    /// Characters `start..end` of the original text this piece came from.
    pub span: (usize, usize),
}

/// A text as leading whitespace and pieces. Rendering an unmodified `Segmented` gives the text
/// back exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segmented {
    pub lead: String,
    pub pieces: Vec<Piece>,
}

impl Segmented {
    /// Cuts `text` into words; the characters `fixed` (start..end, within the text) form one
    /// piece whatever they hold, and words are cut on either side of it (a word running into
    /// the answer, `1542.` around the answer `1542`, leaves `.` a word of its own).
    pub fn new(text: &str, fixed: Option<(usize, usize)>) -> Segmented {
        let chars: Vec<char> = text.chars().collect();
        let mut spans: Vec<((usize, usize), bool)> = Vec::new();
        match fixed {
            Some((a, b)) if a <= b && b <= chars.len() => {
                spans.extend(spans_of(&chars[..a], 0).into_iter().map(|s| (s, false)));
                spans.push(((a, b), true));
                spans.extend(spans_of(&chars[b..], b).into_iter().map(|s| (s, false)));
            }
            _ => spans.extend(spans_of(&chars, 0).into_iter().map(|s| (s, false))),
        }
        let slice = |a: usize, b: usize| chars[a..b].iter().collect::<String>();
        let lead = slice(0, spans.first().map_or(chars.len(), |s| s.0 .0));
        let pieces = spans
            .iter()
            .enumerate()
            .map(|(k, &((a, b), fixed))| {
                let next = spans.get(k + 1).map_or(chars.len(), |s| s.0 .0);
                Piece { text: slice(a, b), gap: slice(b, next), fixed, span: (a, b) }
            })
            .collect();
        Segmented { lead, pieces }
    }

    /// The text, and the character offset of the fixed piece in it (if there is one).
    ///
    /// Where dropping, swapping or replacing has put two pieces side by side with no
    /// whitespace between them and both edges are letters of a spaced script (`ab` + `cd`
    /// after the `长` between them was dropped), a space goes between them, so that no new word
    /// appears. A piece and the fixed piece that were neighbours in the text stay glued.
    pub fn render(&self) -> (String, Option<usize>) {
        let mut out = self.lead.clone();
        let mut at = out.chars().count();
        let mut fixed_at = None;
        for (k, p) in self.pieces.iter().enumerate() {
            if k > 0 && self.pieces[k - 1].gap.is_empty() && would_merge(&self.pieces[k - 1], p) {
                out.push(' ');
                at += 1;
            }
            if p.fixed {
                fixed_at = Some(at);
            }
            out.push_str(&p.text);
            out.push_str(&p.gap);
            at += p.text.chars().count() + p.gap.chars().count();
        }
        (out, fixed_at)
    }

    /// Removes piece `k` (not the fixed one) with the whitespace after it; the last piece's
    /// whitespace goes to the one before, so that no trailing space appears.
    pub fn drop_piece(&mut self, k: usize) {
        debug_assert!(!self.pieces[k].fixed);
        let p = self.pieces.remove(k);
        if k == self.pieces.len() && k > 0 {
            self.pieces[k - 1].gap = p.gap;
        }
    }

    /// Swaps the pieces `at..at + a` with the `b` pieces after them; the whitespace stays
    /// where it was (the words move, the gaps do not).
    pub fn swap_spans(&mut self, at: usize, a: usize, b: usize) {
        let moved: Vec<(String, (usize, usize))> = self.pieces[at..at + a + b].iter().map(|p| (p.text.clone(), p.span)).collect();
        for (k, (text, span)) in moved[a..].iter().chain(&moved[..a]).enumerate() {
            self.pieces[at + k].text = text.clone();
            self.pieces[at + k].span = *span;
        }
    }
}

/// Whether `a` followed directly by `b` would read as one word that the text did not have.
fn would_merge(a: &Piece, b: &Piece) -> bool {
    let spaced = |c: Option<char>| c.is_some_and(|c| !c.is_whitespace() && !is_own_word(c));
    let neighbours = (a.fixed || b.fixed) && a.span.1 == b.span.0;
    spaced(a.text.chars().last()) && spaced(b.text.chars().next()) && !neighbours
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_on_whitespace_and_around_each_cjk_character() {
        assert_eq!(word_spans("  The river, 1542. "), vec![(2, 5), (6, 11), (11, 12), (13, 17), (17, 18)]);
        assert_eq!(word_spans("20,000 (U.S.)").len(), 9, "as BERT's basic tokenizer splits punctuation");
        // 他 在 1542 年 去 了 巴西 。 -> every ideograph a word, the digits one word.
        assert_eq!(word_spans("他在1542年去了巴西。"), vec![(0, 1), (1, 2), (2, 6), (6, 7), (7, 8), (8, 9), (9, 10), (10, 11), (11, 12)]);
        assert_eq!(word_spans("नमस्ते दुनिया"), vec![(0, 6), (7, 13)], "a virama does not split a Devanagari word");
        assert!(word_spans(" \t\n").is_empty());
    }

    #[test]
    fn segmenting_and_rendering_gives_the_text_back_with_the_fixed_offset() {
        let text = " The first European was Francisco de Orellana, in 1542.";
        let s = Segmented::new(text, Some((24, 45)));
        assert_eq!(s.render(), (text.to_string(), Some(24)));
        let fixed: Vec<&Piece> = s.pieces.iter().filter(|p| p.fixed).collect();
        assert_eq!(fixed.len(), 1);
        assert_eq!(fixed[0].text, "Francisco de Orellana");
        // The comma glued to the answer becomes a word of its own.
        let after = s.pieces.iter().position(|p| p.fixed).unwrap() + 1;
        assert_eq!((s.pieces[after].text.as_str(), s.pieces[after - 1].gap.as_str()), (",", ""));
    }

    #[test]
    fn dropping_and_swapping_keep_the_gaps_in_place() {
        let mut s = Segmented::new("a b c d", None);
        s.drop_piece(3);
        assert_eq!(s.render().0, "a b c");
        s.drop_piece(0);
        assert_eq!(s.render().0, "b c");
        let mut s = Segmented::new("one two three four", None);
        s.swap_spans(0, 1, 2);
        assert_eq!(s.render().0, "two three one four");
        let mut s = Segmented::new("我爱北京", None);
        s.swap_spans(1, 1, 2);
        assert_eq!(s.render().0, "我北京爱");
    }

    #[test]
    fn pieces_brought_together_never_merge_into_one_word() {
        let mut s = Segmented::new("ab长cd", None);
        s.drop_piece(1);
        assert_eq!(s.render().0, "ab cd");
        let mut s = Segmented::new("20,000", None);
        s.drop_piece(1);
        assert_eq!(s.render().0, "20 000");
        // `.` glued to the answer `1542` stays glued; a word swapped next to it does not glue.
        let mut s = Segmented::new("in 1542. then", Some((3, 7)));
        assert_eq!(s.render(), ("in 1542. then".to_string(), Some(3)));
        s.swap_spans(2, 1, 1);
        assert_eq!(s.render(), ("in 1542 then .".to_string(), Some(3)));
    }
}
