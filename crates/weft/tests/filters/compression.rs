//! Compression end to end.

use super::support::*;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[test]
fn each_coding_decodes_to_the_upstream_bytes() {
    let (o, p) = setup(COMPRESSION);
    let target = "/c/codec?size=20000&ct=application/json;%20charset=utf-8";
    let want = o.body(target);
    assert_eq!(want.len(), 20000);

    // gzip, decoded by curl.
    let (body, head) = curl_compressed(&p, target, Some("gzip"));
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(head.contains("vary: accept-encoding"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    assert!(body == want, "gzip: {} bytes decoded, want {}", body.len(), want.len());
    // curl's own offer (`deflate, gzip, br, zstd` here; its build decides): compressed
    // with one of them, decoded.
    let (body, head) = curl_compressed(&p, target, None);
    assert!(["zstd", "br", "gzip"].iter().any(|c| head.contains(&format!("content-encoding: {c}"))), "{head}");
    assert!(body == want);

    // br and zstd, decoded by python's libraries from the bytes on the wire.
    let mut c = Client::connect(p.addr());
    for codec in ["br", "zstd"] {
        let r = c.get("svc", target, &[("accept-encoding", codec)]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), Some(codec));
        assert_eq!(r.header("vary"), Some("Accept-Encoding"));
        assert_eq!(r.header("content-length"), None);
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert!(r.body.len() < want.len() / 4, "{codec}: {} bytes for {}", r.body.len(), want.len());
        let decoded = decode_py(codec, &r.body);
        assert!(decoded == want, "{codec}: {} bytes decoded, want {}", decoded.len(), want.len());
    }
    // An upstream Vary is kept, Accept-Encoding added to it.
    let r = c.get("svc", "/c/vary?vary=X-Tenant", &[("accept-encoding", "gzip"), ("x-tenant", "t")]);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("vary"), Some("X-Tenant, Accept-Encoding"));
}

#[test]
fn accept_encoding_q_values_are_honoured() {
    let (o, p) = setup(COMPRESSION);
    let target = "/c/q?size=5000";
    let want = o.body(target);
    let mut c = Client::connect(p.addr());
    let cases: &[(&str, Option<&str>)] = &[
        ("gzip;q=0.5, br;q=1", Some("br")),
        ("gzip;q=0.9, zstd;q=0.1", Some("gzip")),
        ("br;q=0", None),
        ("br;q=0, gzip", Some("gzip")),
        ("*", Some("zstd")),
        ("*;q=0", None),
        ("identity", None),
        ("deflate", None),
    ];
    for (accept, coding) in cases {
        let r = c.get("svc", target, &[("accept-encoding", accept)]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), *coding, "Accept-Encoding: {accept}");
        match coding {
            None => {
                assert!(r.body == want, "{accept}: the identity body");
                assert_eq!(r.header("content-length"), Some("5000"), "{accept}");
            }
            Some(codec) => assert!(decode_py(codec, &r.body) == want, "{accept}"),
        }
    }
    // No Accept-Encoding at all: identity.
    let r = c.get("svc", target, &[]);
    assert_eq!((r.header("content-encoding"), r.body.len()), (None, 5000));
}

#[test]
fn responses_that_must_not_be_compressed_pass_unchanged() {
    let (o, p) = setup(COMPRESSION);
    let all = [("accept-encoding", "gzip, br, zstd")];
    let mut c = Client::connect(p.addr());
    // (what, target, method)
    let cases = [
        ("below minContentLength", "/n/small?size=99", "GET"),
        ("a type not listed", "/n/octet?ct=application/octet-stream", "GET"),
        ("no Content-Type", "/n/untyped?ct=none", "GET"),
        ("already encoded", "/n/encoded?ce=gzip", "GET"),
        ("Cache-Control: no-transform", "/n/notransform?cc=max-age=5,%20no-transform", "GET"),
        ("HEAD", "/n/head", "HEAD"),
        ("204", "/n/nocontent?status=204", "GET"),
        ("304", "/n/notmodified?status=304", "GET"),
    ];
    for (what, target, method) in cases {
        let r = c.request(method, "svc", target, &all, b"");
        let upstream = c_direct(&o, method, target);
        assert_eq!(r.status, upstream.status, "{what}");
        let ce = r.header("content-encoding");
        if what == "already encoded" {
            assert_eq!(ce, Some("gzip"), "{what}: the upstream's coding, not a second one");
        } else {
            assert_eq!(ce, None, "{what}: compressed");
        }
        assert!(r.body == upstream.body, "{what}: body changed");
        assert_eq!(r.header("content-length"), upstream.header("content-length"), "{what}");
        assert_eq!(r.header("vary"), None, "{what}");
    }
    // The first case, one byte longer, is compressed: the threshold is the boundary.
    let r = c.get("svc", "/n/small?size=100", &all);
    assert_eq!(r.header("content-encoding"), Some("zstd"));
}

/// The origin's own response to `method target` (not counted).
fn c_direct(o: &Origin, method: &str, target: &str) -> Resp {
    Client::connect(o.addr()).request(method, "origin", target, &[("x-uncounted", "1")], b"")
}

#[test]
fn a_slow_stream_is_decoded_piece_by_piece_before_the_upstream_ends() {
    let (o, p) = setup(COMPRESSION);
    // Four chunks of 4,000 bytes; the origin holds the last until released.
    let target = "/s/stream?size=16000&chunks=4&hold=1";
    let want = o.body("/s/stream?size=16000");
    let mut curl = Command::new("curl")
        .args(["-sS", "-N", "--max-time", "20", "--compressed", "-H", "Host: svc", "-H", "Accept-Encoding: gzip"])
        .arg(format!("http://{}{target}", p.addr()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl");
    let mut out = curl.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    // The first three chunks arrive, decoded, while the origin still holds the last.
    let mut got = Vec::new();
    let start = Instant::now();
    while got.len() < 12_000 {
        let left = Duration::from_secs(5).saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(piece) => got.extend_from_slice(&piece),
            Err(_) => panic!("{} decoded bytes after {:?}: the response is not streamed", got.len(), start.elapsed()),
        }
    }
    assert_eq!(got.len(), 12_000, "more than the upstream has sent");
    assert!(got[..] == want[..12_000]);
    assert_eq!(o.hits("/s/stream"), 1);
    o.release("/s/stream");
    while let Ok(piece) = rx.recv_timeout(Duration::from_secs(10)) {
        got.extend_from_slice(&piece);
    }
    reader.join().unwrap();
    let status = curl.wait().unwrap();
    assert!(status.success(), "curl failed");
    assert!(got == want, "{} bytes decoded in all, want {}", got.len(), want.len());
}
