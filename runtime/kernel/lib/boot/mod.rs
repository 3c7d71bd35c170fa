//! What the kernel learns at boot that needs no hardware to interpret: the
//! kernel command line.

pub mod cmdline;
