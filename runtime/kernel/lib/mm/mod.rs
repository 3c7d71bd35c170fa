//! The program's memory map: the sorted set of areas with their protection
//! and backing ([`vma`]). The kernel's `mm` backs them with frames and page
//! tables.

pub mod vma;
