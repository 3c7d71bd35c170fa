//! The kiln guest kernel binary: a freestanding ELF (see `linker.ld`)
//! that boots on kiln-vmm or, through its PVH note, on QEMU, and runs one
//! unmodified static Linux x86-64 program. Build it with
//! `cargo xtask kernel`; the architecture-free parts live in the
//! `kiln_kernel` library next to it.
#![no_std]
#![no_main]

extern crate alloc;

mod kernel;
mod mem;
