//! The kernels embedded at build time (see build.rs): per `.cu` file its source (includes
//! expanded) and, when the build found nvcc, a fat binary with sm_80 and sm_90 machine code
//! and compute_80 PTX. Also the compiler's resource report.

/// One kernel file.
pub struct KernelModule {
    pub name: &'static str,
    pub source: &'static str,
    pub fatbin: Option<&'static [u8]>,
}

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

pub fn find(name: &str) -> Option<&'static KernelModule> {
    MODULES.iter().find(|m| m.name == name)
}

/// Compiles a module's source to PTX with NVRTC for compute capability `cc`.
pub fn compile_nvrtc(m: &KernelModule, cc: (i32, i32)) -> Result<cudarc::nvrtc::Ptx, String> {
    // SAFETY: only tries to dlopen the NVRTC library.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(format!("module `{}`: no NVRTC library (libnvrtc.so.13) to compile it with", m.name));
    }
    let opts = cudarc::nvrtc::CompileOptions {
        options: vec![format!("--gpu-architecture=sm_{}{}", cc.0, cc.1), "--std=c++17".into()],
        name: Some(format!("{}.cu", m.name)),
        ..Default::default()
    };
    std::panic::catch_unwind(|| cudarc::nvrtc::compile_ptx_with_opts(m.source, opts))
        .map_err(|_| format!("module `{}`: NVRTC failed while starting", m.name))?
        .map_err(|e| format!("module `{}`: NVRTC: {e:?}", m.name))
}
