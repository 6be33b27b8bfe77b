//! Counter-based random numbers.
//!
//! A random value is a pure function of (seed, stream, index), so that dropout masks can be
//! regenerated in the backward pass instead of stored, and so that results do not depend on how
//! work is split between threads. The mixer is SplitMix64's finaliser applied to a combination
//! of the three words (as in Philox-style counter RNGs, but cheaper; quality is ample for
//! dropout and initialisation).

#[inline(always)]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 64 random bits for element `index` of stream `stream` under `seed`.
#[inline(always)]
pub fn bits(seed: u64, stream: u64, index: u64) -> u64 {
    Stream::new(seed, stream).bits(index)
}

/// One (seed, stream) pair with its key mixed once: a loop over elements then costs one `mix64`
/// per element. Gives the same values as [`bits`] and [`uniform`].
#[derive(Clone, Copy, Debug)]
pub struct Stream {
    key: u64,
}

impl Stream {
    #[inline(always)]
    pub fn new(seed: u64, stream: u64) -> Stream {
        let a = mix64(seed ^ 0x9e37_79b9_7f4a_7c15);
        Stream { key: mix64(a ^ stream.wrapping_mul(0xd1b5_4a32_d192_ed03)) }
    }

    #[inline(always)]
    pub fn bits(self, index: u64) -> u64 {
        mix64(self.key ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    #[inline(always)]
    pub fn uniform(self, index: u64) -> f32 {
        (self.bits(index) >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }
}

/// A uniform value in [0, 1) with 24 random bits.
#[inline(always)]
pub fn uniform(seed: u64, stream: u64, index: u64) -> f32 {
    (bits(seed, stream, index) >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

/// A standard normal value (Box-Muller on two uniforms of the same counter).
pub fn normal(seed: u64, stream: u64, index: u64) -> f32 {
    let r = bits(seed, stream, index);
    let u1 = ((r >> 40) as f64 + 1.0) / ((1u64 << 24) as f64 + 1.0);
    let u2 = (r & 0xff_ffff) as f64 / (1u64 << 24) as f64;
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// A sequential generator for host-side choices (data order, sampling): a counter over
/// [`bits`], so that its state is two integers and can be checkpointed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    pub seed: u64,
    pub counter: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { seed, counter: 0 }
    }

    pub fn next_u64(&mut self) -> u64 {
        let r = bits(self.seed, u64::MAX, self.counter);
        self.counter += 1;
        r
    }

    /// Uniform in [0, n) without modulo bias (Lemire's method).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            if (m as u64) >= n.wrapping_neg() % n {
                return (m >> 64) as u64;
            }
        }
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_mean_and_range() {
        let n = 100_000;
        let mut s = 0.0f64;
        for i in 0..n {
            let u = uniform(7, 1, i);
            assert!((0.0..1.0).contains(&u));
            s += u as f64;
        }
        assert!((s / n as f64 - 0.5).abs() < 0.01);
    }

    #[test]
    fn normal_moments() {
        let n = 100_000;
        let (mut s, mut s2) = (0.0f64, 0.0f64);
        for i in 0..n {
            let x = normal(3, 0, i) as f64;
            s += x;
            s2 += x * x;
        }
        let mean = s / n as f64;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((s2 / n as f64 - 1.0).abs() < 0.02);
    }

    #[test]
    fn streams_differ_and_repeat() {
        assert_eq!(bits(1, 2, 3), bits(1, 2, 3));
        assert_ne!(bits(1, 2, 3), bits(1, 3, 3));
        assert_ne!(bits(1, 2, 3), bits(2, 2, 3));
        let mut r = Rng::new(5);
        let mut v: Vec<u32> = (0..10).collect();
        r.shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    }
}
