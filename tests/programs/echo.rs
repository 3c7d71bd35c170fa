//! An echo appliance for the network tests and benchmarks: `echo tcp PORT`
//! echoes every TCP connection (a thread each) until the client closes its
//! side; `echo udp PORT` sends every datagram back to its sender; `echo
//! sink PORT` reads each connection to its end and answers with the byte
//! count and their FNV-1a hash (8 bytes each, little endian); `echo source
//! PORT` writes to each connection the number of bytes the client asks for
//! (8 bytes, little endian) of [`pattern`]. It prints `listening` once the
//! socket is bound.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};

/// Byte `i` of what a source sends.
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(131) ^ (i >> 20).wrapping_mul(7)) as u8
}

/// FNV-1a over `data`, continuing from `hash`.
fn fnv1a(mut hash: u64, data: &[u8]) -> u64 {
    for &b in data {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    hash
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (mode, port) = match (args.get(1), args.get(2)) {
        (Some(m), Some(p)) => (m.as_str(), p.as_str()),
        _ => {
            eprintln!("usage: echo tcp|udp|sink|source PORT");
            std::process::exit(2);
        }
    };
    let addr = format!("0.0.0.0:{port}");
    match mode {
        "tcp" => {
            let listener = TcpListener::bind(&addr).expect("bind");
            println!("listening on tcp {port}");
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 256 * 1024];
                    loop {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if conn.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
        }
        "sink" | "source" => {
            let listener = TcpListener::bind(&addr).expect("bind");
            println!("listening on tcp {port}");
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let sink = mode == "sink";
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 256 * 1024];
                    if sink {
                        let (mut total, mut hash) = (0u64, 0xcbf2_9ce4_8422_2325u64);
                        while let Ok(n) = conn.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            total += n as u64;
                            hash = fnv1a(hash, &buf[..n]);
                        }
                        let mut answer = total.to_le_bytes().to_vec();
                        answer.extend_from_slice(&hash.to_le_bytes());
                        let _ = conn.write_all(&answer);
                    } else {
                        let mut want = [0u8; 8];
                        if conn.read_exact(&mut want).is_err() {
                            return;
                        }
                        let total = u64::from_le_bytes(want);
                        let mut at = 0u64;
                        while at < total {
                            let n = (total - at).min(buf.len() as u64) as usize;
                            for (i, b) in buf[..n].iter_mut().enumerate() {
                                *b = pattern(at + i as u64);
                            }
                            if conn.write_all(&buf[..n]).is_err() {
                                return;
                            }
                            at += n as u64;
                        }
                    }
                });
            }
        }
        "udp" => {
            let socket = UdpSocket::bind(&addr).expect("bind");
            println!("listening on udp {port}");
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let _ = socket.send_to(&buf[..n], from);
            }
        }
        _ => {
            eprintln!("echo: unknown mode {mode}");
            std::process::exit(2);
        }
    }
}
