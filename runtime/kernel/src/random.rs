//! Random bytes for getrandom and AT_RANDOM: RDRAND when the CPU has it,
//! otherwise ChaCha20 keyed from the host's boot seed and the TSC.

use crate::state::KERNEL;
use kiln_kernel::random::chacha::ChaCha20;

use crate::arch::{features, rdrand, rdtsc};

/// Keys the fallback generator.
pub fn init(seed: &[u8; 32]) {
    let mut nonce = [0u8; 12];
    nonce[..8].copy_from_slice(&rdtsc().to_le_bytes());
    *KERNEL.random.lock() = Some(ChaCha20::new(seed, &nonce, 0));
}

/// Fills `out` with random bytes.
pub fn fill(out: &mut [u8]) {
    if features().rdrand {
        let mut chunks = out.chunks_mut(8);
        for chunk in &mut chunks {
            match rdrand() {
                Some(v) => chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]),
                None => {
                    fill_fallback(chunk);
                }
            }
        }
        return;
    }
    fill_fallback(out);
}

fn fill_fallback(out: &mut [u8]) {
    let mut g = KERNEL.random.lock();
    let rng = g.get_or_insert_with(|| ChaCha20::new(&[0; 32], &[0; 12], 0));
    rng.fill(out);
}
