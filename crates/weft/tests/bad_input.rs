//! Malformed and hostile input: answered or closed, never a panic, always counted.

mod common;
use common::*;

use std::io::{Read, Write};
use std::time::Duration;

fn setup() -> (Proc, Proxy) {
    let b = backend("b", &[]);
    let p = proxy(&service_entry("svc", &[(b.addr, "v: x", 1)]));
    (b, p)
}

#[test]
fn malformed_request_line_gets_400_and_is_counted() {
    let (_b, p) = setup();
    let r = Client::connect(p.addr()).raw(b"GARBAGE / \x01\x02 HTTP/9\r\n\r\n", false);
    assert_eq!(r.status, 400);
    let r = Client::connect(p.addr()).raw(b"GET / HTTP/1.1\r\nhost: svc\r\nbad header line\r\n\r\n", false);
    assert_eq!(r.status, 400);
    assert_eq!(p.wait_metric("weft_downstream_bad_request_total", &[], 2.0), 2.0);
    assert_eq!(get(p.addr(), "svc", "/", &[]).status, 200, "still serving");
}

#[test]
fn headers_over_the_limit_get_431() {
    let (_b, p) = setup();
    let big = "x".repeat(70 * 1024);
    let mut c = Client::connect(p.addr());
    let r = c.raw(format!("GET / HTTP/1.1\r\nhost: svc\r\nx-big: {big}\r\n\r\n").as_bytes(), false);
    assert_eq!(r.status, 431);
    assert_eq!(p.wait_metric("weft_downstream_header_too_large_total", &[], 1.0), 1.0);
    // Just under the limit is fine.
    let ok = "y".repeat(32 * 1024);
    assert_eq!(get(p.addr(), "svc", "/", &[("x-ok", &ok)]).status, 200);
}

#[test]
fn body_longer_than_declared_is_rejected_after_the_declared_request() {
    let (_b, p) = setup();
    let mut c = Client::connect(p.addr());
    // Content-Length 5, then 40 more bytes that are not a request.
    c.stream()
        .write_all(b"POST /echo HTTP/1.1\r\nhost: svc\r\ncontent-length: 5\r\n\r\nhelloTHIS IS NOT AN HTTP REQUEST AT ALL\r\n\r\n")
        .unwrap();
    let first = c.read_response(false).expect("the declared request is answered");
    assert_eq!((first.status, first.text().as_str()), (200, "hello"));
    let second = c.read_response(false);
    assert!(second.is_none() || second.as_ref().unwrap().status == 400, "the excess is not treated as a request");
    assert_eq!(p.wait_metric("weft_downstream_bad_request_total", &[], 1.0), 1.0);
}

#[test]
fn client_disconnecting_mid_body_is_counted_and_harmless() {
    let (_b, p) = setup();
    {
        let mut c = Client::connect(p.addr());
        c.stream().write_all(b"POST /echo HTTP/1.1\r\nhost: svc\r\ncontent-length: 100000\r\n\r\n").unwrap();
        c.stream().write_all(&[b'a'; 30_000]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    } // dropped: the client is gone mid-body
    {
        // A client that leaves while a slow response is on its way.
        let mut c = Client::connect(p.addr());
        c.stream().write_all(b"GET / HTTP/1.1\r\nhost: svc\r\nx-delay-ms: 300\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let resets = p.wait_metric("weft_downstream_reset_total", &[], 2.0);
    assert!(resets >= 1.0, "disconnects not counted");
    assert!(p.metric("istio_requests_total", &["response_flags=\"DC\""]) >= 1.0, "no DC flag recorded:\n{}", p.admin("/metrics"));
    let r = get(p.addr(), "svc", "/", &[]);
    assert_eq!(r.status, 200, "still serving");
    // Streaming both ways still works after that.
    let mut c = Client::connect(p.addr());
    let body = vec![b'z'; 200_000];
    let r = c.request("POST", "svc", "/echo", &[], &body);
    assert_eq!(r.body.len(), 200_000);
    let mut s = std::net::TcpStream::connect(p.addr()).unwrap();
    s.write_all(b"\x16\x03\x01\x02\x00garbage-tls-hello").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(buf.is_empty() || buf.starts_with(b"HTTP/1.1 400"), "{:?}", String::from_utf8_lossy(&buf));
}

#[test]
fn slow_request_heads_are_cut_off_when_header_read_timeout_is_set() {
    let b = backend("b", &[]);
    let p = proxy_with(&service_entry("svc", &[(b.addr, "v: x", 1)]), &["--header-read-timeout", "300ms"]);
    let mut s = std::net::TcpStream::connect(p.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = std::time::Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nhost: svc\r\n").unwrap(); // never finished
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(3), "closed after {waited:?}");
    assert!(buf.is_empty() || buf.starts_with(b"HTTP/1.1 408"), "{:?}", String::from_utf8_lossy(&buf));
    // A complete request is unaffected.
    assert_eq!(get(p.addr(), "svc", "/", &[]).status, 200);
}
