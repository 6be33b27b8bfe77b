//! The machine code the build embedded: every tensor-core kernel (a name with `_mma_`) really
//! runs on the tensor cores, i.e. its SASS for sm_80 and for sm_90 holds HMMA instructions,
//! and no kernel of any file uses local memory (LDL/STL: spills or a stack array; build.rs
//! already refuses those from ptxas's report, this reads the code itself).
//!
//! Reads the fat binaries that build.rs compiled with nvcc (feature `cuda`) with `cuobjdump
//! -sass` from the same toolkit directory (scripts/cuda/install-toolchain.sh installs it).
//! Without nvcc at build time there is no machine code to inspect: the test says so and
//! passes, unless `REQUIRE_NVCC=1` (the CI sets it), where that is a failure.
#![cfg(feature = "cuda")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use polyadapt::engine::cuda::modules::{MODULES, NVCC};

/// The architectures build.rs compiles machine code for.
const ARCHS: [&str; 2] = ["sm_80", "sm_90"];

fn cuobjdump() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("POLYADAPT_CUOBJDUMP") {
        return Some(PathBuf::from(p));
    }
    let p = PathBuf::from(NVCC?).parent()?.join("cuobjdump");
    p.is_file().then_some(p)
}

/// Per (arch, kernel): its SASS lines.
fn sass(tool: &PathBuf, module: &str, fatbin: &[u8]) -> BTreeMap<(String, String), Vec<String>> {
    let path = std::env::temp_dir().join(format!("polyadapt-{}-{module}.fatbin", std::process::id()));
    std::fs::write(&path, fatbin).unwrap();
    let out = Command::new(tool).arg("-sass").arg(&path).output();
    let _ = std::fs::remove_file(&path);
    let out = out.unwrap_or_else(|e| panic!("running {}: {e}", tool.display()));
    assert!(out.status.success(), "{} -sass on module {module}: {}", tool.display(), String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut arch, mut func) = (String::new(), String::new());
    let mut code: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(a) = t.strip_prefix("code for ") {
            arch = a.trim().to_string();
        } else if let Some(f) = t.strip_prefix("Function : ") {
            func = f.trim().to_string();
            code.entry((arch.clone(), func.clone())).or_default();
        } else if !func.is_empty() && t.starts_with("/*") {
            code.get_mut(&(arch.clone(), func.clone())).unwrap().push(t.to_string());
        }
    }
    code
}

/// An instruction of `line` (`/*0120*/  HMMA.16816.F32 R4, ...`) is `op` or `op.<suffix>`.
fn has_op(line: &str, op: &str) -> bool {
    line.split_whitespace().any(|w| w == op || w.starts_with(&format!("{op}.")))
}

#[test]
fn tensor_core_kernels_emit_hmma_and_no_kernel_uses_local_memory() {
    let required = std::env::var("REQUIRE_NVCC").is_ok_and(|v| v == "1");
    let Some(tool) = cuobjdump() else {
        assert!(!required, "REQUIRE_NVCC=1 but the build found no nvcc (NVCC = {NVCC:?}) or no cuobjdump beside it");
        eprintln!("skipped: the kernels were not compiled ahead of time (no nvcc at build time), nothing to inspect");
        return;
    };
    let mut mma_kernels = BTreeSet::new();
    for m in MODULES {
        let fatbin = m.fatbin.unwrap_or_else(|| panic!("module {} has no machine code although nvcc was found", m.name));
        let code = sass(&tool, m.name, fatbin);
        for arch in ARCHS {
            assert!(code.keys().any(|(a, _)| a == arch), "module {}: no {arch} machine code", m.name);
        }
        for ((arch, func), lines) in &code {
            let local: Vec<&String> = lines.iter().filter(|l| has_op(l, "LDL") || has_op(l, "STL")).collect();
            assert!(local.is_empty(), "{func} ({arch}) uses local memory: {}", local[0]);
            if func.contains("_mma_") {
                let hmma = lines.iter().filter(|l| has_op(l, "HMMA")).count();
                assert!(hmma > 0, "{func} ({arch}) is a tensor-core kernel without an HMMA instruction");
                mma_kernels.insert((arch.clone(), func.clone()));
            }
        }
    }
    // The tensor-core kernels the launchers name (engine/cuda/kernels/{attention,lora}.rs):
    // each head dimension or rank bucket and 16-bit type, for both architectures.
    for arch in ARCHS {
        for t in ["bf16", "f16"] {
            let attn = [32, 64, 128].map(|d| ["fwd", "bwd_dq", "bwd_dkdv"].map(|k| format!("attn_{k}_mma_{t}_d{d}")));
            let lora = [16, 64].map(|r| [format!("lora_fwd_mma_{t}_r{r}"), format!("lora_bwd_mma_{t}_r{r}")]);
            for k in attn.iter().flatten().chain(lora.iter().flatten()) {
                assert!(mma_kernels.contains(&(arch.to_string(), k.clone())), "{k} ({arch}) is missing from the machine code");
            }
        }
    }
}
