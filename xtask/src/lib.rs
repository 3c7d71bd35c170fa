//! Building blocks shared by `cargo xtask` and the end-to-end tests:
//! where artifacts live, how the guest kernel and the test programs are
//! built, which host tools are needed and how QEMU boots the kernel.

pub mod appliance;
pub mod build;
pub mod host;
pub mod paths;
pub mod qemu;
pub mod uefi;
