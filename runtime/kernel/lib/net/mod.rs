//! The logic of sockets that needs no kernel: the socket ABI's numbers
//! ([`abi`]), socket addresses as the program passes them ([`addr`]), and
//! the queues of local (AF_UNIX) connections ([`unix`]), and the guest's
//! end of virtio-vsock connections ([`vsock`]). The kernel's
//! `fd/socket` builds the socket objects on them; `net/` runs the TCP/IP
//! stacks.

pub mod abi;
pub mod addr;
pub mod config;
pub mod frames;
pub mod unix;
pub mod vsock;
