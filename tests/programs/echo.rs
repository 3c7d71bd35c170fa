//! An echo appliance for the network tests and benchmarks: `echo tcp PORT`
//! echoes every TCP connection (a thread each) until the client closes its
//! side; `echo udp PORT` sends every datagram back to its sender; `echo
//! sink PORT` reads each connection to its end and answers with the byte
//! count (8 bytes, little endian); `echo source PORT` writes to each
//! connection the number of bytes the client asks for (8 bytes, little
//! endian). It prints `listening` once the socket is bound.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};

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
                        let mut total = 0u64;
                        while let Ok(n) = conn.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            total += n as u64;
                        }
                        let _ = conn.write_all(&total.to_le_bytes());
                    } else {
                        let mut want = [0u8; 8];
                        if conn.read_exact(&mut want).is_err() {
                            return;
                        }
                        let mut left = u64::from_le_bytes(want);
                        while left > 0 {
                            let n = left.min(buf.len() as u64) as usize;
                            if conn.write_all(&buf[..n]).is_err() {
                                return;
                            }
                            left -= n as u64;
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
