//! The analysis that proves a SYSCALL site safe to rewrite into a jump
//! ([`site`], with the instruction-length decoder [`x86len`]). The
//! kernel's `syscall` holds the system-call table: numbers, names,
//! argument types and handlers.

pub mod site;
pub mod x86len;
