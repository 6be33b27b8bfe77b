//! The host shim's C entry point (kernels/shim/shim.cpp), compiled by build.rs.

use std::ffi::{c_char, c_void, CString};

use super::device::Launch;

extern "C" {
    fn polyadapt_shim_launch(
        name: *const c_char,
        grid: *const u32,
        block: *const u32,
        args: *mut *mut c_void,
        nargs: usize,
        workers: u32,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
}

/// Worker threads per launch: `POLYADAPT_SHIM_THREADS`, else one per core.
fn workers() -> u32 {
    std::env::var("POLYADAPT_SHIM_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Runs the kernel to completion on the CPU.
pub fn launch(kernel: &str, dims: Launch, args: &mut [*mut c_void]) -> Result<(), String> {
    let name = CString::new(kernel).map_err(|_| "kernel name contains a NUL byte".to_string())?;
    let mut err = vec![0u8; 512];
    // SAFETY: `args` holds one pointer per kernel argument to a value of its type (checked in
    // count by the shim); grid and block are 3 values each; err is writable for its length.
    let rc = unsafe {
        polyadapt_shim_launch(
            name.as_ptr(),
            dims.grid.as_ptr(),
            dims.block.as_ptr(),
            args.as_mut_ptr(),
            args.len(),
            workers(),
            err.as_mut_ptr() as *mut c_char,
            err.len(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        let end = err.iter().position(|&c| c == 0).unwrap_or(err.len());
        Err(String::from_utf8_lossy(&err[..end]).into_owned())
    }
}
