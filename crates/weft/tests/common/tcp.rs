//! Plain TCP peers for the opaque-TCP tests: an echo server and a one-shot client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A TCP echo server on loopback answering "<name> <what it read>" for each read.
pub fn tcp_echo(name: &'static str) -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(format!("{name} {}", String::from_utf8_lossy(&buf[..n])).as_bytes()).is_err() {
                        break;
                    }
                }
            });
        }
    });
    a
}

/// One TCP connection to `to`: sends `msg`, returns the first answer ("" when the
/// connection was refused or closed without one).
pub fn tcp_call(to: SocketAddr, msg: &str) -> String {
    let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_secs(2)) else { return String::new() };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    if s.write_all(msg.as_bytes()).is_err() {
        return String::new();
    }
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}
