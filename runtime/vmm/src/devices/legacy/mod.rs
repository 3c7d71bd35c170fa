//! The kiln platform's port devices (boot contract `kiln_boot::port`).

pub mod console;
