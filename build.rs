//! Build script.
//!
//! 1. Records the source revision so that every run can say which code produced it
//!    (`engine-train --version`).
//! 2. Feature `cuda`: the kernels of `kernels/*.cu`. When an `nvcc` is found (`POLYADAPT_NVCC`,
//!    else `CUDA_HOME`/`CUDA_PATH`, else `PATH`; `POLYADAPT_NVCC=none` turns it off), each file
//!    is compiled into a fat binary holding machine code for sm_80 and sm_90 plus compute_80
//!    PTX (which newer GPUs compile at load time). `ptxas -v` reports registers, shared memory,
//!    stack and spills per kernel; any spill or local-memory use fails the build, and the
//!    report goes to `$OUT_DIR/kernel_report.txt` (embedded as `KERNEL_REPORT`). Without nvcc
//!    the sources are embedded alone and compiled with NVRTC when the GPU is first used. The
//!    sources are embedded either way (with `#include "..."` expanded, as NVRTC has no files).
//! 3. Feature `cuda-shim`: the same `.cu` files compiled by the host C++ compiler with
//!    `kernels/shim/cuda_shim.h` (see there) into a static library that runs the kernels on the
//!    CPU. `POLYADAPT_SHIM_SANITIZE=address|thread` builds it instrumented
//!    (scripts/cuda/sanitize.sh).

use std::collections::BTreeSet;
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    revision();
    if env::var_os("CARGO_FEATURE_CUDA").is_some() {
        cuda_kernels();
    }
    #[cfg(feature = "cuda-shim")]
    shim::build();
}

fn revision() {
    let rev = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| !o.stdout.is_empty());
    println!("cargo:rustc-env=POLYADAPT_REVISION={rev}{}", if dirty { "-dirty" } else { "" });
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
}

/// The kernel files, sorted by name: (stem, path).
fn kernel_files() -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = fs::read_dir("kernels")
        .expect("kernels/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    v.sort();
    v
}

/// The source with every `#include "file"` replaced by the file (once each), for NVRTC.
fn expand_includes(path: &Path, seen: &mut BTreeSet<PathBuf>, out: &mut String) {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("#include \"") {
            let name = rest.split('"').next().unwrap();
            let inc = path.parent().unwrap().join(name);
            if seen.insert(inc.clone()) {
                expand_includes(&inc, seen, out);
            }
        } else if t != "#pragma once" {
            out.push_str(line);
            out.push('\n');
        }
    }
}

fn find_nvcc() -> Option<PathBuf> {
    if let Ok(v) = env::var("POLYADAPT_NVCC") {
        return (!v.is_empty() && v != "none").then(|| PathBuf::from(v));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(root) = env::var_os(var) {
            let p = Path::new(&root).join("bin/nvcc");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    env::split_paths(&env::var_os("PATH")?).map(|d| d.join("nvcc")).find(|p| p.is_file())
}

/// What ptxas said about one kernel for one architecture.
struct KernelInfo {
    name: String,
    arch: String,
    registers: u32,
    smem: u32,
    stack: u32,
    spill_stores: u32,
    spill_loads: u32,
}

/// Parses `ptxas -v` output: "Compiling entry function 'k' for 'sm_80'", then "N bytes stack
/// frame, N bytes spill stores, N bytes spill loads", then "Used N registers, ... N bytes smem".
fn parse_ptxas(log: &str) -> Vec<KernelInfo> {
    let num_before = |s: &str, key: &str| -> u32 {
        s.find(key)
            .and_then(|i| s[..i].split_whitespace().last()?.parse().ok())
            .unwrap_or(0)
    };
    let mut out: Vec<KernelInfo> = Vec::new();
    for line in log.lines() {
        if let Some(i) = line.find("Compiling entry function '") {
            let rest = &line[i + 26..];
            let name = rest.split('\'').next().unwrap_or("").to_string();
            let arch = rest.split("for '").nth(1).and_then(|s| s.split('\'').next()).unwrap_or("").to_string();
            out.push(KernelInfo { name, arch, registers: 0, smem: 0, stack: 0, spill_stores: 0, spill_loads: 0 });
        } else if let Some(k) = out.last_mut() {
            if line.contains("bytes stack frame") {
                k.stack = num_before(line, "bytes stack frame");
                k.spill_stores = num_before(line, "bytes spill stores");
                k.spill_loads = num_before(line, "bytes spill loads");
            } else if line.contains("Used ") && line.contains("registers") {
                k.registers = num_before(line, "registers");
                k.smem = num_before(line, "bytes smem");
            }
        }
    }
    out
}

fn cuda_kernels() {
    println!("cargo:rerun-if-changed=kernels");
    for v in ["POLYADAPT_NVCC", "CUDA_HOME", "CUDA_PATH"] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let files = kernel_files();
    let nvcc = find_nvcc();
    let nvcc_version = nvcc.as_ref().map(|n| {
        let o = Command::new(n)
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("running {} --version: {e}", n.display()));
        String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.contains("release")).collect::<String>()
    });
    let mut report = String::new();
    let mut compiled: Vec<Option<PathBuf>> = vec![None; files.len()];
    if let (Some(nvcc), Some(version)) = (&nvcc, &nvcc_version) {
        let results = compile_all(nvcc, version, &files, &out_dir);
        let mut worst: Option<(u32, String)> = None;
        let mut failures = Vec::new();
        writeln!(report, "# kernels compiled by {} ({version})", nvcc.display()).unwrap();
        writeln!(report, "# kernel arch registers smem_bytes stack_bytes spill_store_bytes spill_load_bytes").unwrap();
        for (i, (fatbin, infos)) in results.into_iter().enumerate() {
            for k in &infos {
                writeln!(report, "{} {} {} {} {} {} {}", k.name, k.arch, k.registers, k.smem, k.stack, k.spill_stores, k.spill_loads)
                    .unwrap();
                if k.stack > 0 || k.spill_stores > 0 || k.spill_loads > 0 {
                    failures.push(format!(
                        "{} ({}): {} bytes stack frame, {} bytes spill stores, {} bytes spill loads",
                        k.name, k.arch, k.stack, k.spill_stores, k.spill_loads
                    ));
                }
                if worst.as_ref().is_none_or(|w| k.registers > w.0) {
                    worst = Some((k.registers, format!("{} ({})", k.name, k.arch)));
                }
            }
            compiled[i] = Some(fatbin);
        }
        fs::write(out_dir.join("kernel_report.txt"), &report).unwrap();
        if !failures.is_empty() {
            panic!("kernels use local memory (spills or a stack frame), which the build treats as an error:\n{}\nfull report: {}",
                failures.join("\n"), out_dir.join("kernel_report.txt").display());
        }
        let n = report.lines().filter(|l| !l.starts_with('#')).count();
        let (regs, name) = worst.unwrap_or((0, "-".into()));
        println!(
            "cargo:warning=compiled {} kernel files ({n} kernel/arch pairs) with {version}: no spills; most registers: {regs} in {name}; report: {}",
            files.len(),
            out_dir.join("kernel_report.txt").display()
        );
    } else {
        report.push_str("# no nvcc found at build time: kernels are compiled with NVRTC at run time\n");
        fs::write(out_dir.join("kernel_report.txt"), &report).unwrap();
    }
    // The embedded modules.
    let mut rs = String::from("// Generated by build.rs.\n");
    writeln!(rs, "pub const NVCC: Option<&str> = {:?};", nvcc.as_ref().filter(|_| nvcc_version.is_some()).map(|p| p.display().to_string())).unwrap();
    writeln!(rs, "pub const NVCC_VERSION: Option<&str> = {nvcc_version:?};").unwrap();
    writeln!(rs, "pub const KERNEL_REPORT: &str = include_str!({:?});", out_dir.join("kernel_report.txt").display().to_string()).unwrap();
    rs.push_str("pub const MODULES: &[KernelModule] = &[\n");
    for ((stem, path), fatbin) in files.iter().zip(&compiled) {
        let mut src = String::new();
        expand_includes(path, &mut BTreeSet::new(), &mut src);
        let src_path = out_dir.join(format!("{stem}.nvrtc.cu"));
        fs::write(&src_path, src).unwrap();
        let fat = match fatbin {
            Some(p) => format!("Some(include_bytes!({:?}))", p.display().to_string()),
            None => "None".into(),
        };
        writeln!(rs, "    KernelModule {{ name: {stem:?}, source: include_str!({:?}), fatbin: {fat} }},", src_path.display().to_string()).unwrap();
    }
    rs.push_str("];\n");
    fs::write(out_dir.join("kernels.rs"), rs).unwrap();
}

/// Compiles every file (two at a time, or NUM_JOBS), reusing a previous result when the
/// expanded source and the compiler are unchanged (the build script reruns on every commit,
/// because it records the revision, and nvcc is slow).
fn compile_all(nvcc: &Path, version: &str, files: &[(String, PathBuf)], out_dir: &Path) -> Vec<(PathBuf, Vec<KernelInfo>)> {
    let jobs: usize = env::var("NUM_JOBS").ok().and_then(|v| v.parse().ok()).unwrap_or(2).max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<(PathBuf, Vec<KernelInfo>), String>>>> =
        files.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..jobs.min(files.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= files.len() {
                    break;
                }
                let r = compile_one(nvcc, version, &files[i].0, &files[i].1, out_dir);
                *results[i].lock().unwrap() = Some(r);
            });
        }
    });
    results
        .into_iter()
        .map(|m| m.into_inner().unwrap().unwrap())
        .collect::<Result<Vec<_>, String>>()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn compile_one(nvcc: &Path, version: &str, stem: &str, path: &Path, out_dir: &Path) -> Result<(PathBuf, Vec<KernelInfo>), String> {
    let fatbin = out_dir.join(format!("{stem}.fatbin"));
    let log_path = out_dir.join(format!("{stem}.ptxas.log"));
    let key_path = out_dir.join(format!("{stem}.key"));
    let mut src = String::new();
    expand_includes(path, &mut BTreeSet::new(), &mut src);
    let args: Vec<String> = [
        "-fatbin", "-std=c++17", "-O3", "-Ikernels",
        // sm_80 and sm_90 machine code, plus compute_80 PTX for anything newer.
        "-gencode=arch=compute_80,code=[sm_80,compute_80]",
        "-gencode=arch=compute_90,code=sm_90",
        "-Xptxas=-v,--warn-on-spills,--warn-on-local-memory-usage",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let key = format!("{version}\n{args:?}\n{src}");
    if fs::read_to_string(&key_path).ok().as_deref() == Some(key.as_str()) && fatbin.is_file() {
        let log = fs::read_to_string(&log_path).unwrap_or_default();
        return Ok((fatbin, parse_ptxas(&log)));
    }
    let out = Command::new(nvcc)
        .args(&args)
        .arg("-o")
        .arg(&fatbin)
        .arg(path)
        .output()
        .map_err(|e| format!("running {}: {e}", nvcc.display()))?;
    let log = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("nvcc failed on {}:\n{log}", path.display()));
    }
    fs::write(&log_path, &log).unwrap();
    fs::write(&key_path, key).unwrap();
    Ok((fatbin, parse_ptxas(&log)))
}

#[cfg(feature = "cuda-shim")]
mod shim {
    use super::*;

    pub fn build() {
        println!("cargo:rerun-if-changed=kernels");
        println!("cargo:rerun-if-env-changed=POLYADAPT_SHIM_SANITIZE");
        let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
        let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
        let files = kernel_files();
        let mut b = cc::Build::new();
        b.cpp(true).std("c++17").opt_level(2).include(root.join("kernels")).include(root.join("kernels/shim"));
        b.flag_if_supported("-Wno-unused-parameter");
        // `#pragma unroll` is for nvcc; g++ unrolls by its own judgement.
        b.flag_if_supported("-Wno-unknown-pragmas");
        // Kernels read pairs of 16-bit values as one 32-bit word, as CUDA code does.
        b.flag("-fno-strict-aliasing");
        b.file(root.join("kernels/shim/shim.cpp"));
        let mut register = String::from("// Generated by build.rs.\n");
        for (stem, path) in &files {
            // One translation unit per kernel file: the shim header, then the file itself.
            let unit = out_dir.join(format!("shim_{stem}.cpp"));
            let text = format!("#include \"cuda_shim.h\"\n#include \"{}\"\n", root.join(path).display());
            fs::write(&unit, text).unwrap();
            b.file(unit);
            writeln!(register, "extern \"C\" void polyadapt_shim_module_{stem}();").unwrap();
        }
        register.push_str("extern \"C\" void polyadapt_shim_register_all() {\n");
        for (stem, _) in &files {
            writeln!(register, "    polyadapt_shim_module_{stem}();").unwrap();
        }
        register.push_str("}\n");
        let reg = out_dir.join("shim_register_all.cpp");
        fs::write(&reg, register).unwrap();
        b.file(reg);
        match env::var("POLYADAPT_SHIM_SANITIZE").as_deref() {
            Ok("address") => {
                b.flag("-fsanitize=address").flag("-fno-omit-frame-pointer").flag("-g");
                println!("cargo:rustc-link-lib=dylib=asan");
            }
            Ok("thread") => {
                b.flag("-fsanitize=thread").flag("-g");
                println!("cargo:rustc-link-lib=dylib=tsan");
            }
            Ok("") | Err(_) => {}
            Ok(other) => panic!("POLYADAPT_SHIM_SANITIZE={other}: expected address or thread"),
        }
        b.compile("polyadapt_shim");
    }
}
