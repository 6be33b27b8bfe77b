//! The Porter stemmer as nltk 3.x's `nltk.stem.porter.PorterStemmer()` runs it by default
//! (`mode=NLTK_EXTENSIONS`): Porter's 1980 algorithm with Martin Porter's later changes and
//! nltk's own (a table of irregular forms, `ies`/`ied` on four-letter words, `y -> i` only
//! after a consonant that is not the whole stem, a two-letter `*o`, `alli`, `fulli`, `logi`).
//!
//! The rules below follow nltk's code line by line, including its quirks (METEOR's stem stage
//! must pair the same words nltk pairs): a rule whose suffix matches but whose condition fails
//! ends the rule list; the `*d` (double consonant) rule, when the word does not end in a double
//! consonant, is tried as the literal suffix `*d`. Words are sequences of Unicode scalar values
//! as in Python: every character other than a, e, i, o, u (and y after a vowel) is a consonant.

/// nltk's `irregular_forms`, inverted: form -> stem.
const IRREGULAR: [(&str, &str); 16] = [
    ("sky", "sky"),
    ("skies", "sky"),
    ("dying", "die"),
    ("lying", "lie"),
    ("tying", "tie"),
    ("news", "news"),
    ("innings", "inning"),
    ("inning", "inning"),
    ("outings", "outing"),
    ("outing", "outing"),
    ("cannings", "canning"),
    ("canning", "canning"),
    ("howe", "howe"),
    ("proceed", "proceed"),
    ("exceed", "exceed"),
    ("succeed", "succeed"),
];

/// `PorterStemmer().stem(word)` (lower-casing first, as `to_lowercase=True` does).
pub fn stem(word: &str) -> String {
    if let Some(&(_, s)) = IRREGULAR.iter().find(|(form, _)| *form == word) {
        return s.to_string();
    }
    let lower = word.to_lowercase();
    // The length test is on the word as given, not on its lower-cased form.
    if word.chars().count() <= 2 {
        return lower;
    }
    let mut w: Vec<char> = lower.chars().collect();
    w = step1a(w);
    w = step1b(w);
    w = step1c(w);
    w = step2(w);
    w = step3(w);
    w = step4(w);
    w = step5a(w);
    w = step5b(w);
    w.into_iter().collect()
}

/// `_is_consonant` for every position at once (a `y` is a consonant at the start or after a
/// vowel; nltk recurses leftwards, which gives the same answer).
fn consonants(w: &[char]) -> Vec<bool> {
    let mut out: Vec<bool> = Vec::with_capacity(w.len());
    for (i, &c) in w.iter().enumerate() {
        let cons = match c {
            'a' | 'e' | 'i' | 'o' | 'u' => false,
            'y' => i == 0 || !out[i - 1],
            _ => true,
        };
        out.push(cons);
    }
    out
}

/// The measure m of `[C](VC){m}[V]`: the number of vowel-to-consonant transitions.
fn measure(stem: &[char]) -> usize {
    let c = consonants(stem);
    c.windows(2).filter(|p| !p[0] && p[1]).count()
}

fn contains_vowel(stem: &[char]) -> bool {
    consonants(stem).iter().any(|&c| !c)
}

/// `*d`.
fn ends_double_consonant(w: &[char]) -> bool {
    let n = w.len();
    n >= 2 && w[n - 1] == w[n - 2] && consonants(w)[n - 1]
}

/// `*o`, with nltk's two-letter vowel-consonant case.
fn ends_cvc(w: &[char]) -> bool {
    let n = w.len();
    let c = consonants(w);
    (n >= 3 && c[n - 3] && !c[n - 2] && c[n - 1] && !matches!(w[n - 1], 'w' | 'x' | 'y')) || (n == 2 && !c[0] && c[1])
}

fn ends_with(w: &[char], suffix: &str) -> bool {
    let n = suffix.chars().count();
    w.len() >= n && w[w.len() - n..].iter().copied().eq(suffix.chars())
}

fn join(stem: &[char], tail: &str) -> Vec<char> {
    stem.iter().copied().chain(tail.chars()).collect()
}

/// One suffix rule: suffix, replacement, condition on the stem (None: unconditional).
type Rule<'a> = (&'a str, &'a str, Option<&'a dyn Fn(&[char]) -> bool>);

/// `_apply_rule_list`: the first rule whose suffix matches decides (its condition failing
/// leaves the word as it is).
fn apply_rules(w: Vec<char>, rules: &[Rule]) -> Vec<char> {
    for &(suffix, replacement, condition) in rules {
        let cut = if suffix == "*d" && ends_double_consonant(&w) {
            Some(w.len() - 2)
        } else if ends_with(&w, suffix) {
            Some(w.len() - suffix.chars().count())
        } else {
            None
        };
        if let Some(cut) = cut {
            let stem = &w[..cut];
            return if condition.is_none_or(|c| c(stem)) { join(stem, replacement) } else { w };
        }
    }
    w
}

fn positive_measure(stem: &[char]) -> bool {
    measure(stem) > 0
}

fn step1a(w: Vec<char>) -> Vec<char> {
    if ends_with(&w, "ies") && w.len() == 4 {
        return join(&w[..1], "ie");
    }
    apply_rules(w, &[("sses", "ss", None), ("ies", "i", None), ("ss", "ss", None), ("s", "", None)])
}

fn step1b(w: Vec<char>) -> Vec<char> {
    if ends_with(&w, "ied") {
        return join(&w[..w.len() - 3], if w.len() == 4 { "ie" } else { "i" });
    }
    if ends_with(&w, "eed") {
        let stem = &w[..w.len() - 3];
        return if measure(stem) > 0 { join(stem, "ee") } else { w };
    }
    // Step 1a can leave fewer letters than a suffix has: test the suffix before cutting.
    let intermediate = ["ed", "ing"].iter().filter(|s| ends_with(&w, s)).find_map(|s| {
        let stem = &w[..w.len() - s.len()];
        contains_vowel(stem).then(|| stem.to_vec())
    });
    let Some(stem) = intermediate else { return w };
    let last = stem[stem.len() - 1];
    let last_s = last.to_string();
    let single = |_: &[char]| !matches!(last, 'l' | 's' | 'z');
    let add_e = |s: &[char]| measure(s) == 1 && ends_cvc(s);
    apply_rules(
        stem,
        &[("at", "ate", None), ("bl", "ble", None), ("iz", "ize", None), ("*d", &last_s, Some(&single)), ("", "e", Some(&add_e))],
    )
}

fn step1c(w: Vec<char>) -> Vec<char> {
    let cond = |s: &[char]| s.len() > 1 && consonants(s)[s.len() - 1];
    apply_rules(w, &[("y", "i", Some(&cond))])
}

fn step2(w: Vec<char>) -> Vec<char> {
    if ends_with(&w, "alli") && positive_measure(&w[..w.len() - 4]) {
        return step2(join(&w[..w.len() - 4], "al"));
    }
    let pm: &dyn Fn(&[char]) -> bool = &positive_measure;
    // `logi`: the measure of the word less `ogi` (the stem plus its `l`).
    let word_less_3: Vec<char> = w[..w.len().saturating_sub(3)].to_vec();
    let logi = move |_: &[char]| positive_measure(&word_less_3);
    let rules: [Rule; 22] = [
        ("ational", "ate", Some(pm)),
        ("tional", "tion", Some(pm)),
        ("enci", "ence", Some(pm)),
        ("anci", "ance", Some(pm)),
        ("izer", "ize", Some(pm)),
        ("bli", "ble", Some(pm)),
        ("alli", "al", Some(pm)),
        ("entli", "ent", Some(pm)),
        ("eli", "e", Some(pm)),
        ("ousli", "ous", Some(pm)),
        ("ization", "ize", Some(pm)),
        ("ation", "ate", Some(pm)),
        ("ator", "ate", Some(pm)),
        ("alism", "al", Some(pm)),
        ("iveness", "ive", Some(pm)),
        ("fulness", "ful", Some(pm)),
        ("ousness", "ous", Some(pm)),
        ("aliti", "al", Some(pm)),
        ("iviti", "ive", Some(pm)),
        ("biliti", "ble", Some(pm)),
        ("fulli", "ful", Some(pm)),
        ("logi", "log", Some(&logi)),
    ];
    apply_rules(w, &rules)
}

fn step3(w: Vec<char>) -> Vec<char> {
    let pm: &dyn Fn(&[char]) -> bool = &positive_measure;
    apply_rules(
        w,
        &[
            ("icate", "ic", Some(pm)),
            ("ative", "", Some(pm)),
            ("alize", "al", Some(pm)),
            ("iciti", "ic", Some(pm)),
            ("ical", "ic", Some(pm)),
            ("ful", "", Some(pm)),
            ("ness", "", Some(pm)),
        ],
    )
}

fn step4(w: Vec<char>) -> Vec<char> {
    let gt1: &dyn Fn(&[char]) -> bool = &|s: &[char]| measure(s) > 1;
    let ion = |s: &[char]| measure(s) > 1 && matches!(s.last(), Some('s' | 't'));
    let rules: [Rule; 19] = [
        ("al", "", Some(gt1)),
        ("ance", "", Some(gt1)),
        ("ence", "", Some(gt1)),
        ("er", "", Some(gt1)),
        ("ic", "", Some(gt1)),
        ("able", "", Some(gt1)),
        ("ible", "", Some(gt1)),
        ("ant", "", Some(gt1)),
        ("ement", "", Some(gt1)),
        ("ment", "", Some(gt1)),
        ("ent", "", Some(gt1)),
        ("ion", "", Some(&ion)),
        ("ou", "", Some(gt1)),
        ("ism", "", Some(gt1)),
        ("ate", "", Some(gt1)),
        ("iti", "", Some(gt1)),
        ("ous", "", Some(gt1)),
        ("ive", "", Some(gt1)),
        ("ize", "", Some(gt1)),
    ];
    apply_rules(w, &rules)
}

fn step5a(w: Vec<char>) -> Vec<char> {
    if ends_with(&w, "e") {
        let stem = &w[..w.len() - 1];
        let m = measure(stem);
        if m > 1 || (m == 1 && !ends_cvc(stem)) {
            return stem.to_vec();
        }
    }
    w
}

fn step5b(w: Vec<char>) -> Vec<char> {
    // The measure is of the word less one `l`, not of the stem.
    let word_less_1: Vec<char> = w[..w.len().saturating_sub(1)].to_vec();
    let cond = move |_: &[char]| measure(&word_less_1) > 1;
    apply_rules(w, &[("ll", "l", Some(&cond))])
}

#[cfg(test)]
mod tests {
    use super::stem;

    /// Examples of Porter's paper and of nltk's docstrings, with nltk's own answers.
    #[test]
    fn paper_examples() {
        for (w, s) in [
            ("caresses", "caress"),
            ("ponies", "poni"),
            ("ties", "tie"),
            ("cats", "cat"),
            ("feed", "feed"),
            ("agreed", "agre"),
            ("plastered", "plaster"),
            ("motoring", "motor"),
            ("sing", "sing"),
            ("hopping", "hop"),
            ("falling", "fall"),
            ("filing", "file"),
            ("happy", "happi"),
            ("enjoy", "enjoy"),
            ("relational", "relat"),
            ("generalization", "gener"),
            ("skies", "sky"),
            ("dying", "die"),
            ("Running", "run"),
        ] {
            assert_eq!(stem(w), s, "{w}");
        }
    }
}
