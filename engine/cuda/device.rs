//! Devices that run the kernels: a CUDA GPU, or the host shim (feature `cuda-shim`).
//!
//! Launches are asynchronous on the GPU (one stream, in order) and synchronous on the shim;
//! downloads wait for the work before them. A kernel is named by its module (the `.cu` file
//! stem) and its `extern "C"` name; its arguments are passed as cuLaunchKernel takes them, so
//! the same launcher code drives both devices.

use std::sync::{Arc, OnceLock};

use super::buffer::{decode_f32, encode_f32, Buffer, Elem, Mem};
use super::gpu::Gpu;
use crate::engine::error::{Error, Result};

#[derive(Clone)]
pub enum Device {
    /// The kernels' scalar paths compiled for the CPU (kernels/shim).
    #[cfg(feature = "cuda-shim")]
    Shim,
    Gpu(Arc<Gpu>),
}

/// Grid and block of a launch, and the dynamic shared memory (always 0 so far: the kernels
/// size their shared memory statically, which the host shim needs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub grid: [u32; 3],
    pub block: [u32; 3],
}

impl Launch {
    /// `blocks` blocks of `threads` threads along x.
    pub fn linear(blocks: usize, threads: u32) -> Launch {
        Launch { grid: [blocks.max(1) as u32, 1, 1], block: [threads, 1, 1] }
    }

    /// One warp per row, `warps` rows per block.
    pub fn warp_per_row(rows: usize, warps: u32) -> Launch {
        Launch::linear(rows.div_ceil(warps as usize).max(1), 32 * warps)
    }

    /// Enough blocks of `threads` to give one thread to each of `n` items (at least one block).
    pub fn cover(n: usize, threads: u32) -> Launch {
        Launch::linear(n.div_ceil(threads as usize).max(1), threads)
    }
}

/// One kernel argument.
pub enum KArg<'a> {
    In(&'a Buffer),
    Out(&'a mut Buffer),
    /// An optional input: a null pointer when absent.
    Opt(Option<&'a Buffer>),
    /// An optional output: a null pointer when absent.
    OptOut(Option<&'a mut Buffer>),
    I32(i32),
    I64(i64),
    F32(f32),
    U64(u64),
    /// A struct passed by value (its bytes, `repr(C)` matching the kernel's struct). Buffers
    /// it points to are checked by the launcher with [`Device::check_resident`].
    Pod(&'a [u8]),
}

impl KArg<'_> {
    fn buffer(&self) -> Option<&Buffer> {
        match self {
            KArg::In(b) => Some(b),
            KArg::Out(b) => Some(b),
            KArg::Opt(b) => b.as_deref(),
            KArg::OptOut(b) => b.as_deref(),
            _ => None,
        }
    }

    /// The argument's bytes as the kernel reads them (little-endian), in 8-byte-aligned words.
    fn words(&self) -> Vec<u64> {
        match self {
            KArg::I32(v) => vec![*v as u32 as u64],
            KArg::I64(v) => vec![*v as u64],
            KArg::F32(v) => vec![v.to_bits() as u64],
            KArg::U64(v) => vec![*v],
            KArg::Pod(bytes) => {
                let mut w = vec![0u64; bytes.len().div_ceil(8).max(1)];
                bytemuck::cast_slice_mut::<u64, u8>(&mut w)[..bytes.len()].copy_from_slice(bytes);
                w
            }
            other => vec![other.buffer().map_or(0, Buffer::addr)],
        }
    }
}

/// Why the GPU is unavailable, found once per process.
static GPU: OnceLock<std::result::Result<Device, String>> = OnceLock::new();

/// The device the engine should use for CUDA work: the first GPU, or `None` after printing one
/// line that says why there is none (the caller then runs on the CPU backend). Never panics.
pub fn gpu_or_cpu() -> Option<Device> {
    match Device::gpu() {
        Ok(d) => Some(d),
        Err(why) => {
            static SAID: OnceLock<()> = OnceLock::new();
            SAID.get_or_init(|| eprintln!("polyadapt: no CUDA GPU ({why}); running on the CPU"));
            None
        }
    }
}

impl Device {
    /// The first CUDA GPU, or one line saying why there is none (no driver library, no device,
    /// a device older than sm_80). Probed once per process; never panics.
    ///
    /// The driver's calls need a deep stack: on an H100 with driver 580.159 they overflowed the
    /// 2 MB of a spawned thread's default stack (inside cuInit and later calls), and ran on the
    /// main thread's 8 MB. Call into the GPU from the main thread or from threads spawned with
    /// a larger stack (the tests use 64 MB: tests/cuda_util).
    pub fn gpu() -> std::result::Result<Device, String> {
        GPU.get_or_init(|| Gpu::probe().map(|g| Device::Gpu(Arc::new(g)))).clone()
    }

    /// The host shim.
    #[cfg(feature = "cuda-shim")]
    pub fn shim() -> Device {
        Device::Shim
    }

    pub fn name(&self) -> String {
        match self {
            #[cfg(feature = "cuda-shim")]
            Device::Shim => "host shim".into(),
            Device::Gpu(g) => g.name(),
        }
    }

    pub fn is_gpu(&self) -> bool {
        matches!(self, Device::Gpu(_))
    }

    /// Whether the tensor-core (mma.sync) kernels can run here: a GPU of sm_80 or newer.
    pub fn has_tensor_cores(&self) -> bool {
        matches!(self, Device::Gpu(g) if g.compute_capability().0 >= 8)
    }

    fn error(&self, msg: impl Into<String>) -> Error {
        Error::device(self.name(), msg)
    }

    /// `len` zeroed elements.
    pub fn alloc(&self, elem: Elem, len: usize) -> Result<Buffer> {
        let mem = match self {
            #[cfg(feature = "cuda-shim")]
            Device::Shim => Mem::Host(super::buffer::HostMem::zeroed(len * elem.size())),
            Device::Gpu(g) => Mem::Gpu(g.alloc(len * elem.size()).map_err(|e| self.error(e))?),
        };
        Ok(Buffer { elem, len, mem })
    }

    /// Copies raw bytes (the buffer's length in bytes) into `buf`.
    pub fn write_bytes(&self, buf: &mut Buffer, bytes: &[u8]) -> Result<()> {
        if bytes.len() != buf.bytes() {
            return Err(self.error(format!("writing {} bytes into a buffer of {}", bytes.len(), buf.bytes())));
        }
        match (self, &mut buf.mem) {
            (_, Mem::Host(h)) => {
                h.bytes_mut().copy_from_slice(bytes);
                Ok(())
            }
            (Device::Gpu(g), Mem::Gpu(m)) => g.write(m, bytes).map_err(|e| self.error(e)),
            #[cfg(feature = "cuda-shim")]
            (Device::Shim, Mem::Gpu(_)) => Err(self.error("the buffer belongs to a GPU")),
        }
    }

    /// The buffer's bytes (waits for the work queued before).
    pub fn read_bytes(&self, buf: &Buffer) -> Result<Vec<u8>> {
        match (self, &buf.mem) {
            (_, Mem::Host(h)) => Ok(h.bytes().to_vec()),
            (Device::Gpu(g), Mem::Gpu(m)) => g.read(m).map_err(|e| self.error(e)),
            #[cfg(feature = "cuda-shim")]
            (Device::Shim, Mem::Gpu(_)) => Err(self.error("the buffer belongs to a GPU")),
        }
    }

    /// Uploads f32 values as `elem` (f32, bf16 or f16; rounded to nearest even).
    pub fn upload_f32(&self, data: &[f32], elem: Elem) -> Result<Buffer> {
        if !elem.is_float() {
            return Err(self.error(format!("upload_f32 into {elem:?} elements")));
        }
        let mut b = self.alloc(elem, data.len())?;
        self.write_bytes(&mut b, &encode_f32(data, elem))?;
        Ok(b)
    }

    /// Uploads plain values (ids, offsets, targets) as `elem`, which must have their size.
    pub fn upload<T: bytemuck::Pod>(&self, data: &[T], elem: Elem) -> Result<Buffer> {
        if std::mem::size_of::<T>() != elem.size() {
            return Err(self.error(format!("uploading {}-byte values as {elem:?}", std::mem::size_of::<T>())));
        }
        let mut b = self.alloc(elem, data.len())?;
        self.write_bytes(&mut b, bytemuck::cast_slice(data))?;
        Ok(b)
    }

    /// Downloads a float buffer as f32.
    pub fn download_f32(&self, buf: &Buffer) -> Result<Vec<f32>> {
        if !buf.elem.is_float() {
            return Err(self.error(format!("download_f32 of {:?} elements", buf.elem)));
        }
        Ok(decode_f32(&self.read_bytes(buf)?, buf.elem))
    }

    /// Downloads plain values.
    pub fn download<T: bytemuck::Pod>(&self, buf: &Buffer) -> Result<Vec<T>> {
        if std::mem::size_of::<T>() != buf.elem.size() {
            return Err(self.error(format!("downloading {:?} elements as {}-byte values", buf.elem, std::mem::size_of::<T>())));
        }
        Ok(bytemuck::pod_collect_to_vec(&self.read_bytes(buf)?))
    }

    /// Sets every element to zero (queued on the GPU's stream; a memset, not a copy).
    pub fn zero(&self, buf: &mut Buffer) -> Result<()> {
        match (self, &mut buf.mem) {
            (_, Mem::Host(h)) => {
                h.bytes_mut().fill(0);
                Ok(())
            }
            (Device::Gpu(g), Mem::Gpu(m)) => g.zero(m).map_err(|e| self.error(e)),
            #[cfg(feature = "cuda-shim")]
            (Device::Shim, Mem::Gpu(_)) => Err(self.error("the buffer belongs to a GPU")),
        }
    }

    /// Fills every byte with 0xff: NaN in f32, bf16 and f16, -1 in integers. Tests poison
    /// outputs before a launch so that an element the kernel forgot to write shows up.
    pub fn poison(&self, buf: &mut Buffer) -> Result<()> {
        let bytes = vec![0xffu8; buf.bytes()];
        self.write_bytes(buf, &bytes)
    }

    /// Waits for all queued work.
    pub fn synchronize(&self) -> Result<()> {
        match self {
            #[cfg(feature = "cuda-shim")]
            Device::Shim => Ok(()),
            Device::Gpu(g) => g.synchronize().map_err(|e| self.error(e)),
        }
    }

    /// Copies `src` into `dst` (same element type and length) on the device: queued on the
    /// GPU's stream, a memcpy on the shim.
    pub fn copy(&self, src: &Buffer, dst: &mut Buffer) -> Result<()> {
        if src.elem != dst.elem || src.len != dst.len {
            return Err(self.error(format!("copying {src:?} into {dst:?}")));
        }
        self.check_resident(&[src, dst])?;
        let bytes = src.bytes();
        match (self, &src.mem, &mut dst.mem) {
            (Device::Gpu(g), Mem::Gpu(s), Mem::Gpu(d)) => g.copy(s, d, bytes).map_err(|e| self.error(e)),
            (_, Mem::Host(s), Mem::Host(d)) => {
                d.bytes_mut().copy_from_slice(s.bytes());
                Ok(())
            }
            _ => Err(self.error("copy between a GPU buffer and a host buffer")),
        }
    }

    /// Runs `f` and returns its result with the milliseconds the device spent on the work `f`
    /// queued: CUDA events recorded around it on a GPU (the stream's time from the first to the
    /// last of that work, gaps while the host prepares a launch included); the wall clock on
    /// the shim, whose launches run to completion before they return.
    pub fn time<R>(&self, f: impl FnOnce() -> Result<R>) -> Result<(R, f64)> {
        match self {
            #[cfg(feature = "cuda-shim")]
            Device::Shim => {
                let t = std::time::Instant::now();
                let r = f()?;
                Ok((r, t.elapsed().as_secs_f64() * 1e3))
            }
            Device::Gpu(g) => {
                let start = g.record_timing_event().map_err(|e| self.error(e))?;
                let r = f()?;
                let end = g.record_timing_event().map_err(|e| self.error(e))?;
                let ms = start.elapsed_ms(&end).map_err(|e| self.error(format!("event timing: {e}")))?;
                Ok((r, ms as f64))
            }
        }
    }

    /// Checks that every buffer lives on this device.
    pub fn check_resident(&self, bufs: &[&Buffer]) -> Result<()> {
        for b in bufs {
            let here = match (self, &b.mem) {
                (Device::Gpu(_), Mem::Gpu(_)) => true,
                #[cfg(feature = "cuda-shim")]
                (Device::Shim, Mem::Host(_)) => true,
                _ => false,
            };
            if !here {
                return Err(self.error(format!("{b:?} is not on this device")));
            }
        }
        Ok(())
    }

    /// Launches `kernel` of `module` (the `.cu` file stem). Every buffer must live on this
    /// device.
    pub fn launch(&self, module: &'static str, kernel: &str, dims: Launch, args: &[KArg<'_>]) -> Result<()> {
        let bufs: Vec<&Buffer> = args.iter().filter_map(KArg::buffer).collect();
        self.check_resident(&bufs).map_err(|e| e.context(format!("launching {kernel}")))?;
        let mut values: Vec<Vec<u64>> = args.iter().map(KArg::words).collect();
        let mut ptrs: Vec<*mut std::ffi::c_void> = values.iter_mut().map(|v| v.as_mut_ptr() as *mut std::ffi::c_void).collect();
        let r = match self {
            #[cfg(feature = "cuda-shim")]
            Device::Shim => super::shim::launch(kernel, dims, &mut ptrs),
            Device::Gpu(g) => g.launch(module, kernel, dims, &mut ptrs),
        };
        r.map_err(|e| self.error(format!("{kernel}: {e}")))
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}
