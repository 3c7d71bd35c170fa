//! Starting a program, as far as it is pure computation: where an ELF
//! file's segments go ([`elf`]) and the bytes of its initial stack
//! ([`stack`]). The kernel's `exec` maps the result into an address space.

pub mod elf;
pub mod stack;
