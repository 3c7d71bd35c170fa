//! Numbers of the Linux socket ABI (include/linux/socket.h, asm-generic
//! socket.h, netinet/in.h, netinet/tcp.h).

#![allow(missing_docs)]

/// Address families.
pub mod family {
    pub const AF_UNSPEC: u16 = 0;
    pub const AF_UNIX: u16 = 1;
    pub const AF_INET: u16 = 2;
    pub const AF_INET6: u16 = 10;
    pub const AF_NETLINK: u16 = 16;
    pub const AF_VSOCK: u16 = 40;
}

/// Socket types (the low bits of socket(2)'s `type`).
pub mod kind {
    pub const SOCK_STREAM: u32 = 1;
    pub const SOCK_DGRAM: u32 = 2;
    pub const SOCK_RAW: u32 = 3;
    pub const SOCK_SEQPACKET: u32 = 5;
    /// Mask of the type proper.
    pub const SOCK_TYPE_MASK: u32 = 0xf;
    pub const SOCK_NONBLOCK: u32 = 0o4000;
    pub const SOCK_CLOEXEC: u32 = 0o2000000;
}

/// Protocols.
pub mod proto {
    pub const IPPROTO_IP: u32 = 0;
    pub const IPPROTO_TCP: u32 = 6;
    pub const IPPROTO_UDP: u32 = 17;
    pub const IPPROTO_IPV6: u32 = 41;
}

/// send/recv flags.
pub mod msg {
    pub const MSG_OOB: u32 = 0x1;
    pub const MSG_PEEK: u32 = 0x2;
    pub const MSG_CTRUNC: u32 = 0x8;
    pub const MSG_TRUNC: u32 = 0x20;
    pub const MSG_DONTWAIT: u32 = 0x40;
    pub const MSG_EOR: u32 = 0x80;
    pub const MSG_WAITALL: u32 = 0x100;
    pub const MSG_NOSIGNAL: u32 = 0x4000;
    pub const MSG_MORE: u32 = 0x8000;
    pub const MSG_CMSG_CLOEXEC: u32 = 0x4000_0000;
}

/// Socket option levels.
pub mod level {
    pub const SOL_SOCKET: u32 = 1;
    pub const SOL_IP: u32 = 0;
    pub const SOL_TCP: u32 = 6;
    pub const SOL_UDP: u32 = 17;
    pub const SOL_IPV6: u32 = 41;
}

/// SOL_SOCKET options.
pub mod so {
    pub const SO_DEBUG: u32 = 1;
    pub const SO_REUSEADDR: u32 = 2;
    pub const SO_TYPE: u32 = 3;
    pub const SO_ERROR: u32 = 4;
    pub const SO_DONTROUTE: u32 = 5;
    pub const SO_BROADCAST: u32 = 6;
    pub const SO_SNDBUF: u32 = 7;
    pub const SO_RCVBUF: u32 = 8;
    pub const SO_KEEPALIVE: u32 = 9;
    pub const SO_OOBINLINE: u32 = 10;
    pub const SO_LINGER: u32 = 13;
    pub const SO_REUSEPORT: u32 = 15;
    pub const SO_PASSCRED: u32 = 16;
    pub const SO_PEERCRED: u32 = 17;
    pub const SO_RCVLOWAT: u32 = 18;
    pub const SO_SNDLOWAT: u32 = 19;
    pub const SO_RCVTIMEO: u32 = 20;
    pub const SO_SNDTIMEO: u32 = 21;
    pub const SO_ACCEPTCONN: u32 = 30;
    pub const SO_SNDBUFFORCE: u32 = 32;
    pub const SO_RCVBUFFORCE: u32 = 33;
    pub const SO_PROTOCOL: u32 = 38;
    pub const SO_DOMAIN: u32 = 39;
}

/// SOL_TCP options.
pub mod tcp {
    pub const TCP_NODELAY: u32 = 1;
    pub const TCP_MAXSEG: u32 = 2;
    pub const TCP_CORK: u32 = 3;
    pub const TCP_KEEPIDLE: u32 = 4;
    pub const TCP_KEEPINTVL: u32 = 5;
    pub const TCP_KEEPCNT: u32 = 6;
    pub const TCP_DEFER_ACCEPT: u32 = 9;
    pub const TCP_INFO: u32 = 11;
    pub const TCP_QUICKACK: u32 = 12;
    pub const TCP_FASTOPEN: u32 = 23;
}

/// SOL_IPV6 options.
pub mod ipv6 {
    pub const IPV6_V6ONLY: u32 = 26;
}

/// Ancillary message types at SOL_SOCKET.
pub mod scm {
    pub const SCM_RIGHTS: u32 = 1;
    pub const SCM_CREDENTIALS: u32 = 2;
}

/// shutdown(2)'s `how`.
pub mod shut {
    pub const SHUT_RD: u32 = 0;
    pub const SHUT_WR: u32 = 1;
    pub const SHUT_RDWR: u32 = 2;
}

/// Most file descriptors one SCM_RIGHTS message carries (SCM_MAX_FD).
pub const SCM_MAX_FD: usize = 253;

/// The size of `struct cmsghdr` (len u64, level i32, type i32).
pub const CMSG_HEADER: usize = 16;

/// CMSG_ALIGN.
pub const fn cmsg_align(len: usize) -> usize {
    (len + 7) & !7
}

/// One control message: (level, type, data).
pub type Cmsg<'a> = (u32, u32, &'a [u8]);

/// Parses a control buffer into its messages; a malformed header is
/// EINVAL, as on Linux.
pub fn parse_cmsgs(control: &[u8]) -> Result<alloc::vec::Vec<Cmsg<'_>>, crate::errno::Errno> {
    let mut out = alloc::vec::Vec::new();
    let mut at = 0;
    while control.len() - at >= CMSG_HEADER {
        let h = &control[at..at + CMSG_HEADER];
        let len = u64::from_le_bytes(h[0..8].try_into().unwrap_or_default()) as usize;
        let lvl = u32::from_le_bytes(h[8..12].try_into().unwrap_or_default());
        let ty = u32::from_le_bytes(h[12..16].try_into().unwrap_or_default());
        if len < CMSG_HEADER || len > control.len() - at {
            return Err(crate::errno::Errno::Inval);
        }
        out.push((lvl, ty, &control[at + CMSG_HEADER..at + len]));
        at += cmsg_align(len);
        if at > control.len() {
            break;
        }
    }
    Ok(out)
}

/// Encodes one control message (header and data, padded to alignment).
pub fn encode_cmsg(lvl: u32, ty: u32, data: &[u8]) -> alloc::vec::Vec<u8> {
    let len = CMSG_HEADER + data.len();
    let mut out = alloc::vec::Vec::with_capacity(cmsg_align(len));
    out.extend_from_slice(&(len as u64).to_le_bytes());
    out.extend_from_slice(&lvl.to_le_bytes());
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(data);
    out.resize(cmsg_align(len), 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_round_trip() {
        let mut buf = encode_cmsg(
            level::SOL_SOCKET,
            scm::SCM_RIGHTS,
            &[1, 0, 0, 0, 2, 0, 0, 0],
        );
        buf.extend(encode_cmsg(
            level::SOL_SOCKET,
            scm::SCM_CREDENTIALS,
            &[9; 12],
        ));
        let msgs = parse_cmsgs(&buf).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0], (1, 1, &[1, 0, 0, 0, 2, 0, 0, 0][..]));
        assert_eq!(msgs[1].2.len(), 12);
    }

    #[test]
    fn a_header_longer_than_the_buffer_is_refused() {
        let mut buf = encode_cmsg(1, 1, &[0; 4]);
        buf[0] = 200;
        assert!(parse_cmsgs(&buf).is_err());
        assert!(parse_cmsgs(&[0; 8]).unwrap().is_empty());
    }
}
