//! The system-call interface as data: Linux's numbers and names
//! ([`names`]), and the analysis that proves a SYSCALL site safe to rewrite
//! into a jump ([`site`], with the instruction-length decoder [`x86len`]).
//! The kernel's `syscall` holds the table of handlers.

pub mod names;
pub mod site;
pub mod x86len;
