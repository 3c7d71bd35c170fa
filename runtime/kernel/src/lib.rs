//! Architecture-free logic of the kiln guest kernel.
//!
//! Everything here is plain `no_std` + `alloc` code that `cargo test` runs on
//! the host: ELF load planning, the initial stack image, the command line,
//! the address-space bookkeeping, error numbers and syscall names. The
//! kernel binary (`src/main.rs` and `src/kernel/`), built by
//! `cargo xtask kernel`, adds the CPU, memory and platform code around it.
#![no_std]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod chacha;
pub mod civil;
pub mod cmdline;
pub mod elf;
pub mod errno;
pub mod signal;
pub mod stack;
pub mod stat;
pub mod syscall_names;
pub mod syscall_site;
pub mod tarfs;
pub mod vdso;
pub mod vfs;
pub mod vma;
pub mod x86len;
