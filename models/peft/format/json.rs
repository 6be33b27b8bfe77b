//! `adapter_config.json`: typed reads that name the file and the field, and an atomic write.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::engine::error::{Error, Result};
use crate::models::weights::write_atomic;

/// A parsed config object and the file it came from.
pub struct ConfigFile {
    pub path: PathBuf,
    obj: Map<String, Value>,
}

impl ConfigFile {
    pub fn read(path: &Path) -> Result<ConfigFile> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| Error::format(path, format!("not valid JSON: {e}")))?;
        match value {
            Value::Object(obj) => Ok(ConfigFile { path: path.to_path_buf(), obj }),
            _ => Err(Error::format(path, "not a JSON object")),
        }
    }

    pub fn err(&self, field: &str, msg: impl Into<String>) -> Error {
        Error::config(&self.path, field, msg)
    }

    /// The field's value; `None` when absent or null.
    fn get(&self, field: &str) -> Option<&Value> {
        self.obj.get(field).filter(|v| !v.is_null())
    }

    fn required(&self, field: &str) -> Result<&Value> {
        self.get(field).ok_or_else(|| self.err(field, "missing"))
    }

    pub fn str(&self, field: &str) -> Result<&str> {
        let v = self.required(field)?;
        v.as_str().ok_or_else(|| self.err(field, format!("expected a string, found {v}")))
    }

    pub fn opt_str(&self, field: &str) -> Result<Option<&str>> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| self.err(field, format!("expected a string, found {v}"))),
        }
    }

    pub fn usize(&self, field: &str) -> Result<usize> {
        let v = self.required(field)?;
        as_usize(v).ok_or_else(|| self.err(field, format!("expected a non-negative integer, found {v}")))
    }

    pub fn usize_or(&self, field: &str, default: usize) -> Result<usize> {
        if self.get(field).is_none() {
            return Ok(default);
        }
        self.usize(field)
    }

    pub fn f32_or(&self, field: &str, default: f32) -> Result<f32> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v.as_f64().map(|x| x as f32).ok_or_else(|| self.err(field, format!("expected a number, found {v}"))),
        }
    }

    pub fn bool_or(&self, field: &str, default: bool) -> Result<bool> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.err(field, format!("expected true or false, found {v}"))),
        }
    }

    /// A list of strings, or one string (returned as `Err(string)` inside `Ok`: peft's regex
    /// form of `target_modules`).
    pub fn str_list_or_str(&self, field: &str) -> Result<Option<std::result::Result<Vec<String>, String>>> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(Err(s.clone()))),
            Some(Value::Array(a)) => {
                let list = a.iter().map(|v| v.as_str().map(str::to_string)).collect::<Option<Vec<_>>>();
                list.map(|l| Some(Ok(l))).ok_or_else(|| self.err(field, "expected a list of strings"))
            }
            Some(v) => Err(self.err(field, format!("expected a list of strings or a string, found {v}"))),
        }
    }

    pub fn opt_str_list(&self, field: &str) -> Result<Option<Vec<String>>> {
        match self.str_list_or_str(field)? {
            None => Ok(None),
            Some(Ok(l)) => Ok(Some(l)),
            Some(Err(_)) => Err(self.err(field, "expected a list of strings")),
        }
    }

    /// A list of integers, or one integer (peft's `layers_to_transform`).
    pub fn opt_usize_list(&self, field: &str) -> Result<Option<Vec<usize>>> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Array(a)) => {
                let list = a.iter().map(as_usize).collect::<Option<Vec<_>>>();
                list.map(Some).ok_or_else(|| self.err(field, "expected a list of non-negative integers"))
            }
            Some(v) => as_usize(v).map(|n| Some(vec![n])).ok_or_else(|| self.err(field, format!("expected integers, found {v}"))),
        }
    }

    /// An object field that must be empty or absent (features the engine does not support).
    pub fn expect_empty(&self, field: &str, what: &str) -> Result<()> {
        match self.get(field) {
            None => Ok(()),
            Some(Value::Object(o)) if o.is_empty() => Ok(()),
            Some(v) => Err(self.err(field, format!("{what} is not supported (found {v})"))),
        }
    }

    /// A field that must have this value when present.
    pub fn expect_value(&self, field: &str, want: &Value, what: &str) -> Result<()> {
        match self.get(field) {
            Some(v) if v != want => Err(self.err(field, format!("{what} is not supported (found {v}, expected {want})"))),
            _ => Ok(()),
        }
    }
}

fn as_usize(v: &Value) -> Option<usize> {
    v.as_u64().and_then(|n| usize::try_from(n).ok())
}

/// Writes `value` as pretty JSON with sorted keys (as peft does), replacing `path` atomically:
/// temporary file, fsync, rename.
pub fn write_json(path: &Path, value: &Value) -> Result<()> {
    // serde_json's Map is ordered by key (no `preserve_order` feature): sorted output.
    let mut text = serde_json::to_string_pretty(value).expect("a JSON value serialises");
    text.push('\n');
    write_atomic(path, text.as_bytes())
}
