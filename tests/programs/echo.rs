//! An echo appliance for the network tests: `echo tcp PORT` echoes every
//! TCP connection (a thread each) until the client closes its side;
//! `echo udp PORT` sends every datagram back to its sender. It prints
//! `listening` once the socket is bound, so tests know when to connect.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (mode, port) = match (args.get(1), args.get(2)) {
        (Some(m), Some(p)) => (m.as_str(), p.as_str()),
        _ => {
            eprintln!("usage: echo tcp|udp PORT");
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
