//! A small seeded PRNG (xoshiro256++, seeded through SplitMix64): the
//! simulator must give the same table for the same seed on any machine, and
//! each run gets its own stream so cells and runs do not depend on order.

/// xoshiro256++.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut state = seed;
        Self { s: [splitmix(&mut state), splitmix(&mut state), splitmix(&mut state), splitmix(&mut state)] }
    }

    /// The stream of run `run` of cell `cell` under `seed`.
    pub fn for_run(seed: u64, cell: &str, run: u64) -> Self {
        // FNV-1a of the cell's name.
        let name = cell
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        let mut state = seed ^ name.rotate_left(17) ^ run.wrapping_mul(0xD6E8_FEB8_6659_FD93);
        Self::new(splitmix(&mut state))
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let out = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform on [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform on (0, 1): never 0, so its logarithm is finite.
    fn open01(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
    }

    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Arrivals of a Poisson process of `mean` expected events in one
    /// interval: exponential gaps summed until the interval is over.
    pub fn poisson(&mut self, mean: f64) -> u64 {
        let mut k = 0;
        let mut t = -self.open01().ln();
        while t < mean {
            k += 1;
            t -= self.open01().ln();
        }
        k
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.open01(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_repeat_and_moments_are_right() {
        let (mut a, mut b) = (Rng::for_run(7, "cell", 3), Rng::for_run(7, "cell", 3));
        assert_eq!(a.next_u64(), b.next_u64());
        assert_ne!(Rng::for_run(7, "cell", 4).next_u64(), Rng::for_run(7, "cell", 3).next_u64());
        let n = 20_000;
        let mean = (0..n).map(|_| a.poisson(4.0) as f64).sum::<f64>() / n as f64;
        assert!((mean - 4.0).abs() < 0.1, "{mean}");
        let z: Vec<f64> = (0..n).map(|_| a.normal()).collect();
        let m = z.iter().sum::<f64>() / n as f64;
        let v = z.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n as f64;
        assert!(m.abs() < 0.03 && (v - 1.0).abs() < 0.05, "{m} {v}");
    }
}
