//! The host-tested half of the kiln guest kernel.
//!
//! The kernel is laid out by subsystem, and every subsystem has the same
//! name on both sides of one line: the part that is plain `no_std` +
//! `alloc` logic lives here, in this library, where `cargo test` runs it on
//! the host and no `unsafe` is allowed; the part that touches the CPU, page
//! tables, devices or the kernel's global state lives in the kernel binary
//! (`runtime/kernel/src/`, built by `cargo xtask kernel`), in the folder of
//! the same name (`src/fs/` beside `lib/fs/`), above `src/arch/`.
//!
//! | subsystem | here (pure) | in the binary |
//! |---|---|---|
//! | `boot` | the kernel command line | boot parameters from the platform |
//! | `exec` | ELF load plans, the initial stack image | loading a program into an address space |
//! | `fs` | the tar root file system, the writable overlay, stat | the mounted overlay, /proc, path lookup |
//! | `fd` | pipe buffers, epoll interest lists | open-file objects and the descriptor table |
//! | `mm` | the set of memory areas | frames, the kernel heap, demand paging |
//! | `net` | socket numbers and addresses, local-socket queues | socket objects, the TCP/IP stacks |
//! | `random` | ChaCha20 | the kernel's random source |
//! | `signal` | signal sets, actions, queues, frames | sending and delivering signals |
//! | `syscall` | numbers and names, SYSCALL-site analysis | the system-call table and handlers |
//! | `time` | civil dates, the vDSO image | clocks, timers, the vDSO's functions |
//!
//! `errno` is shared by all of them.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod boot;
pub mod errno;
pub mod exec;
pub mod fd;
pub mod fs;
pub mod mm;
pub mod net;
pub mod random;
pub mod signal;
pub mod syscall;
pub mod time;
