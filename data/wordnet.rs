//! The part of WordNet 3.0 that METEOR's synonym stage needs, read from the database files of
//! Debian's `wordnet-base` package (`/usr/share/wordnet`): the four index files (lemma ->
//! synset offsets per part of speech), the four exception lists of morphy, and the lemma names
//! of every synset from the four data files. Glosses, pointers and frames are skipped.
//!
//! [`WordNet::synonyms`] gives what nltk 3.x's `WordNetCorpusReader` answers for
//! `{l.name() for s in wn.synsets(word) for l in s.lemmas()}`: `synsets` lower-cases the word,
//! runs `_morphy` for nouns, verbs, adjectives and adverbs in turn (the exception list when the
//! word is in it, otherwise one pass of the detachment rules; the word itself and the
//! candidates that the index has for that part of speech), and collects the synsets of every
//! candidate; a lemma name is the data file's word with its adjective marker (`(a)`, `(p)`,
//! `(ip)`) removed.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::data::metrics::squad::split_python;
use crate::engine::error::{Error, Result};

/// Where WordNet is looked for when neither `--wordnet` nor this variable is given.
pub const DEFAULT_DIR: &str = "/usr/share/wordnet";
/// The environment variable naming a WordNet directory.
pub const DIR_VAR: &str = "POLYADAPT_WORDNET";

const INSTALL: &str = "it comes with Debian's `wordnet-base` package (apt-get install wordnet-base \
                       wordnet-sense-index), or give another directory with --wordnet DIR or $POLYADAPT_WORDNET";

/// nltk's `POS_LIST` order, with each part of speech's file suffix and index tag.
const POS: [(&str, &str); 4] = [("noun", "n"), ("verb", "v"), ("adj", "a"), ("adv", "r")];

/// `MORPHOLOGICAL_SUBSTITUTIONS`, in nltk's order, per part of speech of [`POS`].
const DETACHMENT: [&[(&str, &str)]; 4] = [
    &[("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"), ("ies", "y")],
    &[("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")],
    &[("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
    &[],
];

/// A run of `len` items from `start` in one of [`WordNet`]'s flat arrays or texts.
#[derive(Clone, Copy, Default, Debug)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..(self.start + self.len) as usize
    }
}

/// One part of speech's index: lemmas (spans of `text`, the index file itself) sorted by
/// their bytes, each with a span of [`WordNet::synset_ids`]. A sorted array searched by
/// bisection (as WordNet's own library searches the file) loads faster than a hash map.
#[derive(Default)]
struct PosIndex {
    text: String,
    lemmas: Vec<(Span, Span)>,
}

impl PosIndex {
    fn lemma(&self, s: Span) -> &str {
        &self.text[s.range()]
    }

    fn get(&self, form: &str) -> Option<Span> {
        self.lemmas.binary_search_by(|&(l, _)| self.lemma(l).cmp(form)).ok().map(|i| self.lemmas[i].1)
    }
}

/// WordNet's lemma index, morphy's exception lists and the synsets' lemma names.
pub struct WordNet {
    index: [PosIndex; 4],
    /// Synset ids (positions in `synsets`) of every index entry, entry after entry.
    synset_ids: Vec<u32>,
    /// Per synset: a span of `names`. Only names without `_` are kept: METEOR drops the others.
    synsets: Vec<Span>,
    /// Per lemma name: a span of `name_text`.
    names: Vec<Span>,
    name_text: String,
    /// Per part of speech: inflected form -> base forms.
    exceptions: [HashMap<Box<str>, Vec<Box<str>>>; 4],
}

impl WordNet {
    /// The directory to read: `explicit` (from `--wordnet`), else `$POLYADAPT_WORDNET` when set
    /// and not empty, else [`DEFAULT_DIR`].
    pub fn locate(explicit: Option<&Path>) -> PathBuf {
        if let Some(p) = explicit {
            return p.to_path_buf();
        }
        match std::env::var_os(DIR_VAR) {
            Some(v) if !v.is_empty() => PathBuf::from(v),
            _ => PathBuf::from(DEFAULT_DIR),
        }
    }

    /// Reads the twelve files METEOR needs from `dir`. A missing or malformed file is an error
    /// naming it (and the line) and the package that provides it.
    pub fn load(dir: &Path) -> Result<WordNet> {
        if !dir.is_dir() {
            return Err(Error::Usage(format!("WordNet directory {} does not exist: {INSTALL}", dir.display())));
        }
        let mut wn = WordNet {
            index: Default::default(),
            synset_ids: Vec::with_capacity(210_000),
            synsets: Vec::with_capacity(120_000),
            names: Vec::with_capacity(130_000),
            name_text: String::with_capacity(1 << 20),
            exceptions: Default::default(),
        };
        for (p, (file, _)) in POS.iter().enumerate() {
            let offsets = wn.read_data(p, &dir.join(format!("data.{file}")))?;
            wn.read_index(p, &dir.join(format!("index.{file}")), &offsets)?;
            wn.exceptions[p] = read_exceptions(&dir.join(format!("{file}.exc")))?;
        }
        Ok(wn)
    }

    /// Number of index entries (lemma and part of speech) and of synsets read.
    pub fn counts(&self) -> (usize, usize) {
        (self.index.iter().map(|x| x.lemmas.len()).sum(), self.synsets.len())
    }

    /// `data.<pos>`: every synset's lemma names. Returns the synsets' byte offsets (ascending,
    /// as the lines are) and the id of the first.
    fn read_data(&mut self, p: usize, path: &Path) -> Result<(Vec<u32>, u32)> {
        let text = read_text(path)?;
        let tag = POS[p].1;
        let first_id = self.synsets.len() as u32;
        let mut offsets = Vec::with_capacity(90_000);
        let mut pos = 0usize;
        for (i, line) in text.split_inclusive('\n').enumerate() {
            let start = pos;
            pos += line.len();
            // The licence at the top: lines that start with a space.
            if line.starts_with(' ') {
                continue;
            }
            let bad = |msg: String| Error::Input { path: path.to_path_buf(), line: i + 1, msg: format!("{msg} ({})", provided_by(path)) };
            let mut f = split_python(line);
            let offset = f.next().unwrap_or("");
            if offset.len() != 8 || !offset.bytes().all(|b| b.is_ascii_digit()) || offset.parse::<u32>().ok() != Some(start as u32) {
                return Err(bad(format!("synset offset `{offset}` is not the line's byte offset {start:08}")));
            }
            let _lexicographer_file = f.next();
            match f.next() {
                Some(t) if t == tag || (tag == "a" && t == "s") => {}
                t => return Err(bad(format!("synset type `{}` where `{tag}` was expected", t.unwrap_or("")))),
            }
            let count = f.next().and_then(|c| u32::from_str_radix(c, 16).ok()).filter(|&c| c > 0);
            let Some(count) = count else { return Err(bad("expected a hexadecimal word count above 0".into())) };
            let first = self.names.len() as u32;
            for _ in 0..count {
                let (Some(word), Some(_lex_id)) = (f.next(), f.next()) else {
                    return Err(bad(format!("the line ends before its {count} words and lexical ids")));
                };
                let name = strip_marker(word);
                if !name.contains('_') {
                    self.names.push(Span { start: self.name_text.len() as u32, len: name.len() as u32 });
                    self.name_text.push_str(name);
                }
            }
            offsets.push(start as u32);
            self.synsets.push(Span { start: first, len: self.names.len() as u32 - first });
        }
        Ok((offsets, first_id))
    }

    /// `index.<pos>`: lemma -> synset offsets, resolved through the offsets of `data.<pos>`.
    fn read_index(&mut self, p: usize, path: &Path, (offsets, first_id): &(Vec<u32>, u32)) -> Result<()> {
        let text = read_text(path)?;
        let tag = POS[p].1;
        let mut lemmas = Vec::with_capacity(text.len() / 32);
        let mut pos = 0usize;
        for (i, line) in text.split_inclusive('\n').enumerate() {
            let start = pos;
            pos += line.len();
            if line.starts_with(' ') {
                continue;
            }
            let bad = |msg: String| Error::Input { path: path.to_path_buf(), line: i + 1, msg: format!("{msg} ({})", provided_by(path)) };
            let mut f = split_python(line);
            let lemma = f.next().ok_or_else(|| bad("empty line".into()))?;
            if f.next() != Some(tag) {
                return Err(bad(format!("expected part of speech `{tag}` after `{lemma}`")));
            }
            let number = |f: &mut dyn Iterator<Item = &str>, what: &str| -> Result<usize> {
                f.next().and_then(|n| n.parse().ok()).ok_or_else(|| bad(format!("`{lemma}`: expected {what}")))
            };
            let synsets = number(&mut f, "the synset count")?;
            let pointers = number(&mut f, "the pointer count")?;
            for _ in 0..pointers {
                f.next().ok_or_else(|| bad(format!("`{lemma}`: the line ends inside its {pointers} pointer symbols")))?;
            }
            let senses = number(&mut f, "the sense count")?;
            if synsets == 0 || senses != synsets {
                return Err(bad(format!("`{lemma}`: {synsets} synsets but {senses} senses")));
            }
            number(&mut f, "the tagged sense count")?;
            let ids = Span { start: self.synset_ids.len() as u32, len: synsets as u32 };
            for _ in 0..synsets {
                let o = f.next().ok_or_else(|| bad(format!("`{lemma}`: the line ends before its {synsets} synset offsets")))?;
                let k = o.parse::<u32>().ok().and_then(|o| offsets.binary_search(&o).ok());
                let k = k.ok_or_else(|| bad(format!("`{lemma}`: offset `{o}` is no synset of data.{}", POS[p].0)))?;
                self.synset_ids.push(first_id + k as u32);
            }
            // `lemma` is a slice of `line`: its position in the file, without a search.
            let at = start + (lemma.as_ptr() as usize - line.as_ptr() as usize);
            lemmas.push((Span { start: at as u32, len: lemma.len() as u32 }, ids));
        }
        let mut index = PosIndex { text, lemmas };
        sort_keep_last(&mut index);
        self.index[p] = index;
        Ok(())
    }

    /// `_morphy(form, pos)`: the synsets of the form and of its base forms that the index lists
    /// for the part of speech, each form once.
    fn morphy(&self, form: &str, p: usize) -> Vec<&[u32]> {
        let mut forms: Vec<std::borrow::Cow<str>> = vec![form.into()];
        match self.exceptions[p].get(form) {
            Some(bases) => forms.extend(bases.iter().map(|b| b.as_ref().into())),
            None => {
                for (old, new) in DETACHMENT[p] {
                    if let Some(stem) = form.strip_suffix(old) {
                        forms.push(format!("{stem}{new}").into());
                    }
                }
            }
        }
        let mut seen: Vec<&str> = Vec::new();
        let mut out = Vec::new();
        for f in &forms {
            if let Some(ids) = self.index[p].get(f) {
                if !seen.contains(&f.as_ref()) {
                    seen.push(f.as_ref());
                    out.push(&self.synset_ids[ids.range()]);
                }
            }
        }
        out
    }

    /// The lemma names without `_` of `wn.synsets(word)` (all parts of speech).
    pub fn synonyms(&self, word: &str) -> HashSet<&str> {
        let lower = word.to_lowercase();
        let mut out = HashSet::new();
        for p in 0..POS.len() {
            for ids in self.morphy(&lower, p) {
                for &id in ids {
                    out.extend(self.names[self.synsets[id as usize].range()].iter().map(|n| &self.name_text[n.range()]));
                }
            }
        }
        out
    }
}

/// Sorts an index by lemma (WordNet's files already are) and keeps the last line of a lemma
/// listed twice, as nltk's dictionary does.
fn sort_keep_last(index: &mut PosIndex) {
    let text = &index.text;
    let key = |s: Span| &text[s.range()];
    if index.lemmas.windows(2).all(|w| key(w[0].0) < key(w[1].0)) {
        return;
    }
    index.lemmas.sort_by(|a, b| key(a.0).cmp(key(b.0)));
    let mut kept: Vec<(Span, Span)> = Vec::with_capacity(index.lemmas.len());
    for &e in &index.lemmas {
        match kept.last_mut() {
            Some(last) if key(last.0) == key(e.0) => *last = e,
            _ => kept.push(e),
        }
    }
    index.lemmas = kept;
}

/// `<pos>.exc`: one inflected form and its base forms per line.
fn read_exceptions(path: &Path) -> Result<HashMap<Box<str>, Vec<Box<str>>>> {
    let text = read_text(path)?;
    let mut map = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let mut f = split_python(line);
        let Some(form) = f.next() else {
            return Err(Error::Input { path: path.to_path_buf(), line: i + 1, msg: format!("empty line ({})", provided_by(path)) });
        };
        map.insert(form.into(), f.map(Into::into).collect());
    }
    Ok(map)
}

/// nltk's `re.match(r"(.*?)(\(.*\))?$", word)`: a trailing `(...)` marker goes from the first
/// `(` to the end.
fn strip_marker(word: &str) -> &str {
    match word.find('(') {
        Some(i) if word.ends_with(')') => &word[..i],
        _ => word,
    }
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Error::io("cannot read", path, e).context(format!("reading WordNet's {name}: {INSTALL}"))
    })?;
    String::from_utf8(bytes).map_err(|e| Error::format(path, format!("not UTF-8 at byte {} ({})", e.utf8_error().valid_up_to(), provided_by(path))))
}

fn provided_by(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    format!("WordNet 3.0's {name}, from Debian's `wordnet-base` package")
}

#[cfg(test)]
mod tests {
    use super::strip_marker;

    #[test]
    fn adjective_markers() {
        assert_eq!(strip_marker("galore(ip)"), "galore");
        assert_eq!(strip_marker("ready_to_hand(p)"), "ready_to_hand");
        assert_eq!(strip_marker("x(y)(z)"), "x");
        assert_eq!(strip_marker("a(b)c"), "a(b)c");
        assert_eq!(strip_marker("plain"), "plain");
    }
}
