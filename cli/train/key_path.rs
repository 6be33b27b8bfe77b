//! Key paths into a TOML document, as a sweep names configuration keys: dotted table keys
//! with array indices, `optim.lr`, `methods.prefix.virtual_tokens`, `tasks[0].train.sample`,
//! and `[*]` for every element of an array, `tasks[*].eval[*].sample`.
//!
//! Setting a table merges it key by key into the table already there (so a variant can add
//! `methods.lora = { r = 8 }` without repeating the rest); any other value replaces what was
//! there. Missing tables on the way are created; missing array elements are an error, as is
//! removing a key that is not there (a misspelt removal would otherwise do nothing).

use std::fmt;

use toml::Value;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
    Every,
}

/// A parsed key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPath {
    text: String,
    steps: Vec<Step>,
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl KeyPath {
    /// Parses `a.b[0].c`; the error says what is wrong with the path.
    pub fn parse(text: &str) -> Result<KeyPath, String> {
        let mut steps = Vec::new();
        for part in text.split('.') {
            let (name, mut rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(format!("`{text}` is not a key path (like `optim.lr` or `tasks[0].train.sample`)"));
            }
            steps.push(Step::Key(name.to_string()));
            while !rest.is_empty() {
                let close = rest.find(']').filter(|_| rest.starts_with('[')).ok_or_else(|| format!("`{text}`: unbalanced `[`"))?;
                let inner = &rest[1..close];
                steps.push(match inner {
                    "*" => Step::Every,
                    n => Step::Index(n.parse().map_err(|_| format!("`{text}`: `[{n}]` is not an array index or `[*]`"))?),
                });
                rest = &rest[close + 1..];
            }
        }
        Ok(KeyPath { text: text.to_string(), steps })
    }

    /// Sets the value at this path (merging tables), creating missing tables.
    pub fn set(&self, root: &mut Value, value: &Value) -> Result<(), String> {
        self.walk(root, 0, &mut |slot: &mut Value| {
            merge(slot, value);
            Ok(())
        }, true)
    }

    /// Removes the key this path ends with.
    pub fn remove(&self, root: &mut Value) -> Result<(), String> {
        let (last, parent) = match self.steps.split_last() {
            Some((Step::Key(k), parent)) => (k.clone(), parent.to_vec()),
            _ => return Err(format!("`{}`: only a key can be removed, not an array element", self.text)),
        };
        let parent = KeyPath { text: self.text.clone(), steps: parent };
        parent.walk(root, 0, &mut |slot: &mut Value| match slot.as_table_mut().and_then(|t| t.remove(&last)) {
            Some(_) => Ok(()),
            None => Err(format!("cannot remove `{}`: there is no such key", self.text)),
        }, false)
    }

    /// Whether `other` is this path (used to keep overrides off grid axes).
    pub fn same_as(&self, other: &KeyPath) -> bool {
        self.steps == other.steps
    }

    /// Walks to every slot the path names and calls `at` on each. `create` makes missing
    /// tables (for `set`).
    fn walk(&self, cur: &mut Value, i: usize, at: &mut dyn FnMut(&mut Value) -> Result<(), String>, create: bool) -> Result<(), String> {
        let Some(step) = self.steps.get(i) else { return at(cur) };
        let so_far = || self.prefix(i);
        match step {
            Step::Key(k) => {
                let table = cur.as_table_mut().ok_or_else(|| format!("`{}`: `{}` is not a table", self.text, so_far()))?;
                if !table.contains_key(k) {
                    let last = i + 1 == self.steps.len();
                    if !create || (!last && !matches!(self.steps[i + 1], Step::Key(_))) {
                        return Err(format!("`{}`: there is no `{}`", self.text, self.prefix(i + 1)));
                    }
                    table.insert(k.clone(), Value::Table(toml::Table::new()));
                }
                self.walk(table.get_mut(k).expect("present"), i + 1, at, create)
            }
            Step::Index(n) => {
                let array = cur.as_array_mut().ok_or_else(|| format!("`{}`: `{}` is not an array", self.text, so_far()))?;
                let len = array.len();
                let item = array.get_mut(*n).ok_or_else(|| format!("`{}`: `{}` has {len} element(s), no [{n}]", self.text, so_far()))?;
                self.walk(item, i + 1, at, create)
            }
            Step::Every => {
                let array = cur.as_array_mut().ok_or_else(|| format!("`{}`: `{}` is not an array", self.text, so_far()))?;
                array.iter_mut().try_for_each(|item| self.walk(item, i + 1, at, create))
            }
        }
    }

    /// The path text of the first `n` steps.
    fn prefix(&self, n: usize) -> String {
        let mut out = String::new();
        for s in &self.steps[..n] {
            match s {
                Step::Key(k) if out.is_empty() => out.push_str(k),
                Step::Key(k) => out.push_str(&format!(".{k}")),
                Step::Index(i) => out.push_str(&format!("[{i}]")),
                Step::Every => out.push_str("[*]"),
            }
        }
        out
    }
}

/// Puts `value` into `slot`: a table into a table key by key (recursively), anything else by
/// replacement.
fn merge(slot: &mut Value, value: &Value) {
    match (slot, value) {
        (Value::Table(dst), Value::Table(src)) => {
            for (k, v) in src {
                match dst.get_mut(k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        dst.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, value) => *slot = value.clone(),
    }
}

/// The (path, value) pairs of a table of overrides, `{ "methods.lora.r" = 8, "run.steps" = 2 }`.
/// A key written unquoted (`methods.lora.r = 8`) arrives as nested tables under its first part;
/// since tables merge, it means the same.
pub fn overrides(table: &toml::Table, what: &str) -> Result<Vec<(KeyPath, Value)>, String> {
    let mut out = Vec::new();
    for (k, v) in table {
        let path = KeyPath::parse(k).map_err(|e| format!("{what}: {e}"))?;
        out.push((path, v.clone()));
    }
    Ok(out)
}

/// `key=value` as `--set` reads it (train and sweep): the key as a path, the value as TOML (a
/// number, a boolean, a quoted string, an array, an inline table), else as a plain string.
pub fn parse_set(spec: &str) -> polyadapt::Result<(KeyPath, Value)> {
    let (key, raw) = spec.split_once('=').ok_or_else(|| polyadapt::Error::Usage(format!("--set {spec}: expected key=value")))?;
    let path = KeyPath::parse(key.trim()).map_err(|m| polyadapt::Error::Usage(format!("--set {spec}: {m}")))?;
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_string()));
    Ok((path, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Value {
        Value::Table(toml::from_str(text).unwrap())
    }

    #[test]
    fn set_merges_tables_creates_tables_and_indexes_arrays() {
        let mut d = doc("[a]\nx = 1\ny = 2\n[[t]]\ns = 1\n[[t]]\ns = 2\n");
        KeyPath::parse("a").unwrap().set(&mut d, &doc("x = 5")).unwrap();
        assert_eq!(d["a"]["x"].as_integer(), Some(5));
        assert_eq!(d["a"]["y"].as_integer(), Some(2), "merged, not replaced");
        KeyPath::parse("b.c.d").unwrap().set(&mut d, &Value::Float(0.5)).unwrap();
        assert_eq!(d["b"]["c"]["d"].as_float(), Some(0.5));
        KeyPath::parse("t[1].s").unwrap().set(&mut d, &Value::Integer(9)).unwrap();
        assert_eq!((d["t"][0]["s"].as_integer(), d["t"][1]["s"].as_integer()), (Some(1), Some(9)));
        KeyPath::parse("t[*].u").unwrap().set(&mut d, &Value::Integer(3)).unwrap();
        assert_eq!((d["t"][0]["u"].as_integer(), d["t"][1]["u"].as_integer()), (Some(3), Some(3)));
        let e = KeyPath::parse("t[2].s").unwrap().set(&mut d, &Value::Integer(1)).unwrap_err();
        assert!(e.contains("`t` has 2 element(s), no [2]"), "{e}");
        let e = KeyPath::parse("a.x.z").unwrap().set(&mut d, &Value::Integer(1)).unwrap_err();
        assert!(e.contains("`a.x` is not a table"), "{e}");
    }

    #[test]
    fn remove_needs_the_key_to_exist() {
        let mut d = doc("[a]\nx = 1\n[b]\ny = 1\n");
        KeyPath::parse("b").unwrap().remove(&mut d).unwrap();
        KeyPath::parse("a.x").unwrap().remove(&mut d).unwrap();
        assert_eq!(d, doc("[a]\n"));
        let e = KeyPath::parse("c").unwrap().remove(&mut d).unwrap_err();
        assert!(e.contains("cannot remove `c`"), "{e}");
    }

    #[test]
    fn bad_paths_are_refused() {
        for bad in ["", "a..b", "a[", "a[x]", "a]b", "a b"] {
            assert!(KeyPath::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(KeyPath::parse("tasks[0].eval[*].sample").unwrap().to_string(), "tasks[0].eval[*].sample");
    }
}
