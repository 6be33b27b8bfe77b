//! The crate's one error type.
//!
//! Every variant names what the user can act on: the file, and inside it the tensor, the field
//! or the line. Display strings do not repeat the source error; the binary prints the whole
//! chain (`a: b: c`) by walking [`std::error::Error::source`].

use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened, read, written or renamed.
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file's overall structure is wrong (truncated, bad magic, bad header).
    #[error("{}: {msg}", path.display())]
    Format { path: PathBuf, msg: String },

    /// One named tensor of a weight file is missing, or has the wrong shape, dtype or size.
    #[error("{}: tensor `{name}`: {msg}", path.display())]
    Tensor { path: PathBuf, name: String, msg: String },

    /// One field of a configuration file is missing, has the wrong type or a bad value.
    #[error("{}: field `{field}`: {msg}", path.display())]
    Config { path: PathBuf, field: String, msg: String },

    /// A tokenizer file could not be loaded, or text could not be tokenised.
    #[error("{}: {msg}", path.display())]
    Tokenizer { path: PathBuf, msg: String },

    /// One line or record of an input text/data file is bad.
    #[error("{}:{line}: {msg}", path.display())]
    Input { path: PathBuf, line: usize, msg: String },

    /// Operands of an operation do not fit together.
    #[error("{op}: {msg}")]
    Shape { op: &'static str, msg: String },

    /// A model could not be fetched or converted.
    #[error("fetching model `{model}`: {msg}")]
    Fetch { model: String, msg: String },

    /// A bad argument or option given by the user.
    #[error("{0}")]
    Usage(String),

    /// A compute device (a CUDA GPU, or the host shim that runs the CUDA kernels on the CPU)
    /// refused or failed an operation: allocation, copy, module load, kernel launch.
    #[error("{device}: {msg}")]
    Device { device: String, msg: String },

    /// An error with a sentence of context on top.
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    pub fn io(action: &'static str, path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io { action, path: path.as_ref().to_path_buf(), source }
    }

    pub fn format(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Format { path: path.as_ref().to_path_buf(), msg: msg.into() }
    }

    pub fn tensor(path: impl AsRef<Path>, name: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Tensor { path: path.as_ref().to_path_buf(), name: name.into(), msg: msg.into() }
    }

    pub fn config(path: impl AsRef<Path>, field: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Config { path: path.as_ref().to_path_buf(), field: field.into(), msg: msg.into() }
    }

    pub fn tokenizer(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Tokenizer { path: path.as_ref().to_path_buf(), msg: msg.into() }
    }

    pub fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Shape { op, msg: msg.into() }
    }

    pub fn device(device: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Device { device: device.into(), msg: msg.into() }
    }

    /// Wraps `self` under a sentence of context.
    pub fn context(self, context: impl Into<String>) -> Self {
        Error::Context { context: context.into(), source: Box::new(self) }
    }

    /// The whole chain on one line: `outer: inner: innermost`.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(self);
        while let Some(e) = cur {
            out.push_str(": ");
            out.push_str(&e.to_string());
            cur = e.source();
        }
        out
    }
}

/// `.context("...")` on any `Result<T, Error>`.
pub trait ResultExt<T> {
    fn context(self, context: impl Into<String>) -> Result<T>;
    fn with_context<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|e| e.context(context))
    }
    fn with_context<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| e.context(f()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_joins_every_level() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = Error::io("cannot open", "/m/config.json", io).context("loading model /m");
        assert_eq!(e.chain(), "loading model /m: cannot open /m/config.json: no such file");
    }
}
