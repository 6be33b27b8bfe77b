//! What the plain benchmark binaries (`harness = false`) share: the median of timings and the
//! process's resident memory.
#![allow(dead_code)]

/// The median (the mean of the two middle values for an even count; NaN for none).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => 0.5 * (s[n / 2 - 1] + s[n / 2]),
    }
}

/// A field of /proc/self/status in MiB (NaN where there is none).
pub fn status_mib(name: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<f64>().ok()).map_or(f64::NAN, |kb| kb / 1024.0)
}

/// (VmRSS, VmHWM) in MiB: current and peak resident memory (VmHWM is what `ru_maxrss` reports).
pub fn rss_mib() -> (f64, f64) {
    (status_mib("VmRSS:"), status_mib("VmHWM:"))
}
