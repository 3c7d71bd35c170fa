//! The ChaCha20 generator behind getrandom(2) and /dev/urandom
//! ([`chacha`]); the kernel's `random` seeds it.

pub mod chacha;
