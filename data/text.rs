//! Plain text input: one example per line.

use std::path::Path;

use crate::engine::error::{Error, Result};

/// The lines of a UTF-8 text file (`\n` or `\r\n`), without a trailing empty line. Invalid
/// UTF-8 is an error naming the line.
pub fn read_lines(path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("cannot read", path, e))?;
    let mut lines = Vec::new();
    let mut parts: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if parts.last().is_some_and(|l| l.is_empty()) {
        parts.pop();
    }
    for (i, raw) in parts.into_iter().enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let line = std::str::from_utf8(raw).map_err(|e| Error::Input {
            path: path.to_path_buf(),
            line: i + 1,
            msg: format!("not valid UTF-8 (byte {} of the line)", e.valid_up_to()),
        })?;
        lines.push(line.to_string());
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_crlf_trailing_newline_and_bad_utf8() {
        let dir = std::env::temp_dir().join(format!("polyadapt-text-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.txt");
        std::fs::write(&p, "one\r\ntwo\n\nfour\n").unwrap();
        assert_eq!(read_lines(&p).unwrap(), vec!["one", "two", "", "four"]);
        std::fs::write(&p, b"ok\nbad \xff here\n").unwrap();
        let e = read_lines(&p).unwrap_err().to_string();
        assert!(e.contains("a.txt:2: not valid UTF-8"), "{e}");
        let e = read_lines(&dir.join("missing.txt")).unwrap_err();
        assert!(e.chain().contains("missing.txt"), "{}", e.chain());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
