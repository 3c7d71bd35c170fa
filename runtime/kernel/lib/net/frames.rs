//! Looking into packets before the TCP/IP stack does: which received
//! packets open a TCP connection (a SYN without ACK), so that the kernel
//! can give each a listening socket of its own first — a listen(2) backlog
//! then costs nothing until connections arrive, and every connection gets
//! full-size buffers.

use core::net::{IpAddr, SocketAddr};

use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket,
};

/// How a device frames packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Ethernet frames (a NIC).
    Ethernet,
    /// Bare IP packets (the loopback device).
    Ip,
}

/// A connection request: who asks, and for which local address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Syn {
    /// The client.
    pub from: SocketAddr,
    /// The address and port it connects to.
    pub to: SocketAddr,
}

/// The connection request `packet` carries, if it is one.
pub fn tcp_syn(packet: &[u8], framing: Framing) -> Option<Syn> {
    let ip = match framing {
        Framing::Ethernet => {
            let frame = EthernetFrame::new_checked(packet).ok()?;
            match frame.ethertype() {
                EthernetProtocol::Ipv4 | EthernetProtocol::Ipv6 => frame.payload(),
                _ => return None,
            }
        }
        Framing::Ip => packet,
    };
    let (src, dst, payload) = match ip.first()? >> 4 {
        4 => {
            let p = Ipv4Packet::new_checked(ip).ok()?;
            if p.next_header() != IpProtocol::Tcp || p.more_frags() || p.frag_offset() != 0 {
                return None;
            }
            (
                IpAddr::V4(p.src_addr()),
                IpAddr::V4(p.dst_addr()),
                p.payload(),
            )
        }
        6 => {
            let p = Ipv6Packet::new_checked(ip).ok()?;
            if p.next_header() != IpProtocol::Tcp {
                return None;
            }
            (
                IpAddr::V6(p.src_addr()),
                IpAddr::V6(p.dst_addr()),
                p.payload(),
            )
        }
        _ => return None,
    };
    let tcp = TcpPacket::new_checked(payload).ok()?;
    if !tcp.syn() || tcp.ack() || tcp.rst() {
        return None;
    }
    Some(Syn {
        from: SocketAddr::new(src, tcp.src_port()),
        to: SocketAddr::new(dst, tcp.dst_port()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{IpAddress, TcpControl, TcpRepr, TcpSeqNumber};

    fn tcp_ipv4(control: TcpControl, ack: bool) -> alloc::vec::Vec<u8> {
        let src = core::net::Ipv4Addr::new(10, 0, 2, 2);
        let dst = core::net::Ipv4Addr::new(10, 0, 2, 15);
        let repr = TcpRepr {
            src_port: 40000,
            dst_port: 80,
            control,
            seq_number: TcpSeqNumber(1),
            ack_number: ack.then_some(TcpSeqNumber(1)),
            window_len: 1000,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        let ip = smoltcp::wire::Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Tcp,
            payload_len: repr.buffer_len(),
            hop_limit: 64,
        };
        let mut buf = vec![0u8; ip.buffer_len() + repr.buffer_len()];
        let caps = ChecksumCapabilities::default();
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        ip.emit(&mut p, &caps);
        let mut t = TcpPacket::new_unchecked(p.payload_mut());
        repr.emit(&mut t, &IpAddress::Ipv4(src), &IpAddress::Ipv4(dst), &caps);
        buf
    }

    #[test]
    fn a_syn_is_a_connection_request() {
        let packet = tcp_ipv4(TcpControl::Syn, false);
        let syn = tcp_syn(&packet, Framing::Ip).unwrap();
        assert_eq!(syn.from, "10.0.2.2:40000".parse().unwrap());
        assert_eq!(syn.to, "10.0.2.15:80".parse().unwrap());
    }

    #[test]
    fn syn_ack_data_and_garbage_are_not() {
        assert!(tcp_syn(&tcp_ipv4(TcpControl::Syn, true), Framing::Ip).is_none());
        assert!(tcp_syn(&tcp_ipv4(TcpControl::None, true), Framing::Ip).is_none());
        assert!(tcp_syn(&[0x45, 0, 0], Framing::Ip).is_none());
        assert!(tcp_syn(&[], Framing::Ethernet).is_none());
    }

    #[test]
    fn ethernet_frames_are_looked_into() {
        let packet = tcp_ipv4(TcpControl::Syn, false);
        let mut frame = vec![0u8; 14];
        frame[12] = 0x08; // IPv4
        frame.extend_from_slice(&packet);
        assert!(tcp_syn(&frame, Framing::Ethernet).is_some());
        frame[12] = 0x08;
        frame[13] = 0x06; // ARP
        assert!(tcp_syn(&frame, Framing::Ethernet).is_none());
    }
}
