//! A CUDA GPU through cudarc: context, one stream, memory, and kernel modules loaded on first
//! use (the embedded fat binary when the build had nvcc, else the source through NVRTC).
//!
//! The driver library is loaded at run time (`dynamic-loading`); `probe` checks that it is
//! there before touching cudarc (whose loader panics otherwise) and catches any panic of the
//! first calls, so a machine without CUDA gets an explanation instead.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaEvent, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr};

use super::device::Launch;
use super::modules;

pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    name: String,
    cc: (i32, i32),
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<String, CudaFunction>>,
}

/// Device memory; its address is fixed for its lifetime.
pub struct GpuMem {
    slice: CudaSlice<u8>,
    addr: u64,
}

impl GpuMem {
    pub fn addr(&self) -> u64 {
        self.addr
    }
}

impl Gpu {
    /// The first GPU, or why there is none.
    pub fn probe() -> Result<Gpu, String> {
        std::panic::catch_unwind(Self::open).unwrap_or_else(|_| Err("the CUDA driver failed while starting".into()))
    }

    fn open() -> Result<Gpu, String> {
        // SAFETY: only tries to dlopen the driver library.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err("no CUDA driver: libcuda.so could not be loaded".into());
        }
        let ctx = CudaContext::new(0).map_err(|e| format!("CUDA driver present but no usable GPU: {e}"))?;
        let cc = ctx.compute_capability().map_err(|e| e.to_string())?;
        let name = ctx.name().unwrap_or_else(|_| "CUDA GPU".into());
        if cc.0 < 8 {
            return Err(format!("{name} has compute capability {}.{}; the kernels need 8.0 (Ampere) or newer", cc.0, cc.1));
        }
        // One stream, in order: the engine orders its own work, so cudarc's per-buffer events
        // would only cost time.
        // SAFETY: no buffers exist yet.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        Ok(Gpu { ctx, stream, name: format!("{name} (sm_{}{})", cc.0, cc.1), cc, modules: Mutex::default(), functions: Mutex::default() })
    }

    pub fn name(&self) -> String {
        self.name.clone()
    }

    pub fn compute_capability(&self) -> (i32, i32) {
        self.cc
    }

    pub fn alloc(&self, bytes: usize) -> Result<GpuMem, String> {
        let slice = self.stream.alloc_zeros::<u8>(bytes.max(1)).map_err(|e| format!("allocating {bytes} bytes: {e}"))?;
        let addr = slice.device_ptr(&self.stream).0;
        Ok(GpuMem { slice, addr })
    }

    pub fn write(&self, m: &mut GpuMem, bytes: &[u8]) -> Result<(), String> {
        if bytes.is_empty() {
            return Ok(());
        }
        let mut view = m.slice.slice_mut(..bytes.len());
        self.stream.memcpy_htod(bytes, &mut view).map_err(|e| format!("copy to device: {e}"))
    }

    pub fn zero(&self, m: &mut GpuMem) -> Result<(), String> {
        self.stream.memset_zeros(&mut m.slice).map_err(|e| format!("zeroing device memory: {e}"))
    }

    pub fn read(&self, m: &GpuMem) -> Result<Vec<u8>, String> {
        // The allocation has at least one byte; the buffer may be empty.
        let len = m.slice.len();
        let mut out = vec![0u8; len];
        self.stream.memcpy_dtoh(&m.slice, &mut out).map_err(|e| format!("copy from device: {e}"))?;
        self.stream.synchronize().map_err(|e| e.to_string())?;
        Ok(out)
    }

    pub fn synchronize(&self) -> Result<(), String> {
        self.stream.synchronize().map_err(|e| e.to_string())
    }

    /// Copies the first `bytes` bytes of `src` into `dst` on the stream (device to device).
    pub fn copy(&self, src: &GpuMem, dst: &mut GpuMem, bytes: usize) -> Result<(), String> {
        if bytes == 0 {
            return Ok(());
        }
        let from = src.slice.slice(..bytes);
        let mut to = dst.slice.slice_mut(..bytes);
        self.stream.memcpy_dtod(&from, &mut to).map_err(|e| format!("copy on device: {e}"))
    }

    /// An event with timing enabled, recorded on the stream now: marks the work queued so far.
    pub fn record_timing_event(&self) -> Result<CudaEvent, String> {
        let e = self.ctx.new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT)).map_err(|e| e.to_string())?;
        e.record(&self.stream).map_err(|e| e.to_string())?;
        Ok(e)
    }

    /// The stream the engine queues its work on (cuBLAS handles are bound to it).
    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    fn module(&self, name: &'static str) -> Result<Arc<CudaModule>, String> {
        if let Some(m) = self.modules.lock().unwrap().get(name) {
            return Ok(m.clone());
        }
        let km = modules::find(name).ok_or_else(|| format!("no kernel module `{name}` was embedded"))?;
        let loaded = match km.fatbin {
            Some(fat) => self.ctx.load_module(cudarc::nvrtc::Ptx::from_binary(fat.to_vec())).map_err(|e| e.to_string()),
            None => Err("no fat binary (built without nvcc)".to_string()),
        };
        let module = match loaded {
            Ok(m) => m,
            Err(why_not) => {
                let ptx = modules::compile_nvrtc(km, self.cc).map_err(|e| format!("{e} (the fat binary: {why_not})"))?;
                self.ctx.load_module(ptx).map_err(|e| format!("loading module `{name}` compiled by NVRTC: {e}"))?
            }
        };
        self.modules.lock().unwrap().insert(name, module.clone());
        Ok(module)
    }

    fn function(&self, module: &'static str, kernel: &str) -> Result<CudaFunction, String> {
        let key = format!("{module}/{kernel}");
        if let Some(f) = self.functions.lock().unwrap().get(&key) {
            return Ok(f.clone());
        }
        let f = self.module(module)?.load_function(kernel).map_err(|e| format!("no kernel `{kernel}` in module `{module}`: {e}"))?;
        self.functions.lock().unwrap().insert(key, f.clone());
        Ok(f)
    }

    pub fn launch(&self, module: &'static str, kernel: &str, dims: Launch, params: &mut [*mut c_void]) -> Result<(), String> {
        let f = self.function(module, kernel)?;
        let g = (dims.grid[0], dims.grid[1], dims.grid[2]);
        let b = (dims.block[0], dims.block[1], dims.block[2]);
        // SAFETY: `params` points at one value per kernel parameter, of the kernel's types (the
        // launchers in kernels/ are written against each kernel's signature), alive until the
        // call returns (the driver copies them).
        unsafe { cudarc::driver::result::launch_kernel(f.cu_function(), g, b, 0, self.stream.cu_stream(), params) }
            .map_err(|e| format!("launch: {e}"))?;
        // A bad launch configuration shows here; a fault inside the kernel at the next sync.
        Ok(())
    }
}
