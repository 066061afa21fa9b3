//! Mesh DNS (`weft proxy --dns`), end to end: real proxies queried with `dig` (Debian's
//! dnsutils), a small upstream DNS server started by the test on loopback for the names
//! that are forwarded, and raw hostile bytes over UDP and TCP.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};

// ---- the upstream resolver the test starts ----

/// A small DNS server on loopback (UDP and TCP on one port): `www.example.org` is
/// 192.0.2.7; `big.example.org` answers over UDP with TC set and nothing else, over TCP
/// with 40 addresses; `spoof.example.org` first sends an answer with the wrong ID
/// (6.6.6.6), then the right one (192.0.2.8); `slow.example.org` is never answered;
/// every other name is NXDOMAIN. It records every question: (transport, name, type).
struct Upstream {
    addr: SocketAddr,
    seen: Seen,
}

/// The questions an upstream received: (transport, name, type).
type Seen = Arc<Mutex<Vec<(&'static str, String, RecordType)>>>;

impl Upstream {
    fn start() -> Upstream {
        let (udp, tcp) = loop {
            let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
            if let Ok(udp) = UdpSocket::bind(tcp.local_addr().unwrap()) {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        let seen: Seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let Ok((n, peer)) = udp.recv_from(&mut buf) else { return };
                let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
                let (name, ty) = (q.queries[0].name().to_ascii().to_ascii_lowercase(), q.queries[0].query_type());
                s.lock().unwrap().push(("udp", name.clone(), ty));
                if name == "spoof.example.org." {
                    let mut wrong = answer(&q, false);
                    wrong.metadata.id = q.metadata.id.wrapping_add(1);
                    wrong.answers[0].data = RData::A(A([6, 6, 6, 6].into()));
                    let _ = udp.send_to(&wrong.to_vec().unwrap(), peer);
                }
                if name != "slow.example.org." {
                    let _ = udp.send_to(&answer(&q, false).to_vec().unwrap(), peer);
                }
            }
        });
        let s = seen.clone();
        std::thread::spawn(move || {
            for c in tcp.incoming() {
                let Ok(mut c) = c else { return };
                let s = s.clone();
                std::thread::spawn(move || loop {
                    let mut len = [0u8; 2];
                    if c.read_exact(&mut len).is_err() {
                        return;
                    }
                    let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                    if c.read_exact(&mut q).is_err() {
                        return;
                    }
                    let Ok(q) = Message::from_vec(&q) else { return };
                    let name = q.queries[0].name().to_ascii().to_ascii_lowercase();
                    s.lock().unwrap().push(("tcp", name, q.queries[0].query_type()));
                    let a = answer(&q, true).to_vec().unwrap();
                    let mut frame = (a.len() as u16).to_be_bytes().to_vec();
                    frame.extend_from_slice(&a);
                    if c.write_all(&frame).is_err() {
                        return;
                    }
                });
            }
        });
        Upstream { addr, seen }
    }

    /// The questions it received for `name` (lower case, trailing dot) over `transport`.
    fn count(&self, transport: &str, name: &str) -> usize {
        self.seen.lock().unwrap().iter().filter(|(t, n, _)| *t == transport && n == name).count()
    }
}

fn answer(q: &Message, tcp: bool) -> Message {
    let mut r = Message::response(q.metadata.id, OpCode::Query);
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    r.add_queries(q.queries.iter().cloned());
    let qn = q.queries[0].name().clone();
    let a = |ip: [u8; 4]| Record::from_rdata(qn.clone(), 60, RData::A(A(ip.into())));
    match qn.to_ascii().to_ascii_lowercase().as_str() {
        "www.example.org." => {
            r.add_answer(a([192, 0, 2, 7]));
        }
        "spoof.example.org." => {
            r.add_answer(a([192, 0, 2, 8]));
        }
        "big.example.org." if !tcp => {
            r.metadata.truncation = true;
        }
        "big.example.org." => {
            for i in 1..=40 {
                r.add_answer(a([192, 0, 2, i]));
            }
        }
        _ => r.metadata.response_code = ResponseCode::NXDomain,
    }
    r
}

// ---- dig ----

/// What `dig` said: the status, the flags, and the answer section's data.
#[derive(Debug)]
struct Dig {
    status: String,
    flags: Vec<String>,
    answers: Vec<String>,
}

fn dig(server: SocketAddr, args: &[&str]) -> Dig {
    let out = Command::new("dig")
        .args([&format!("@{}", server.ip()), "-p", &server.port().to_string(), "+time=5", "+tries=1", "+noall", "+comments", "+answer"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("dig: {e} (install Debian's dnsutils: scripts/test does)"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status =
        text.split("status: ").nth(1).and_then(|s| s.split(',').next()).unwrap_or_else(|| panic!("no status from dig {args:?}:\n{text}"));
    let flags =
        text.split(";; flags: ").nth(1).and_then(|s| s.split(';').next()).unwrap_or("").split_whitespace().map(str::to_owned).collect();
    let answers = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
        .collect();
    Dig { status: status.to_owned(), flags, answers }
}

/// The proxy's DNS address, from its start line (", dns on ADDR").
fn dns_addr(p: &Proxy) -> SocketAddr {
    let log = p.p.log_text();
    let rest = log.split("dns on ").nth(1).unwrap_or_else(|| panic!("no dns address in the start line:\n{log}"));
    let tok: String = rest.chars().take_while(|c| !c.is_whitespace() && *c != ',').collect();
    tok.trim_end_matches(|c: char| !c.is_ascii_digit()).parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|_| panic!("{s:?} is not an address"))
}

fn is_vip(a: &str) -> bool {
    matches!(ip(a), IpAddr::V4(v4) if v4.octets()[..2] == [240, 240] && v4.octets()[3] != 0 && v4.octets()[3] != 255)
}

const MESH: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: prod}
spec:
  hosts: [ratings.prod.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db}
spec:
  hosts: [db.example.com]
  addresses: [10.9.0.5, 2001:db8::5]
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wild}
spec:
  hosts: ['*.wild.example']
  addresses: [10.7.0.1]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: NONE
";

fn dns_proxy(config: &str, upstream: &str) -> (Proxy, SocketAddr) {
    let p = proxy_with(config, &["--namespace", "default", "--dns", "127.0.0.1:0", "--dns-upstream", upstream]);
    let a = dns_addr(&p);
    (p, a)
}

#[test]
fn mesh_names_in_every_form_are_answered_and_others_forwarded() {
    let up = Upstream::start();
    let (p, dns) = dns_proxy(MESH, &up.addr.to_string());

    // Every form of a service's name, any case, with or without the trailing dot: one VIP.
    let first = dig(dns, &["reviews", "A"]);
    assert_eq!(first.status, "NOERROR");
    assert!(first.flags.contains(&"aa".to_owned()), "authoritative: {first:?}");
    let vip = first.answers.first().cloned().unwrap_or_else(|| panic!("no answer: {first:?}"));
    assert!(is_vip(&vip), "{vip} is not in 240.240.0.0/16");
    for n in ["reviews.default", "reviews.default.svc", "reviews.default.svc.cluster.local", "REVIEWS.Default.SVC.cluster.local."] {
        let d = dig(dns, &[n, "A"]);
        assert_eq!((d.status.as_str(), d.answers.clone()), ("NOERROR", vec![vip.clone()]), "{n}");
    }
    // The TTL is short.
    let out = Command::new("dig")
        .args([&format!("@{}", dns.ip()), "-p", &dns.port().to_string(), "+noall", "+answer", "reviews"])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(line.split_whitespace().nth(1), Some("30"), "{line}");

    // Another namespace's service: by its namespace-qualified names, not its short one
    // (which is forwarded: the upstream says NXDOMAIN).
    let d = dig(dns, &["ratings.prod", "A"]);
    assert!(d.answers.len() == 1 && is_vip(&d.answers[0]) && d.answers[0] != vip, "{d:?}");
    assert_eq!(dig(dns, &["ratings", "A"]).status, "NXDOMAIN");
    assert_eq!(up.count("udp", "ratings."), 1);

    // A VIP has no IPv6 address: AAAA is NOERROR with no answer (NODATA); so are MX and
    // TXT of a mesh name, which are never forwarded.
    for ty in ["AAAA", "MX", "TXT"] {
        let d = dig(dns, &["reviews.default.svc.cluster.local", ty]);
        assert_eq!((d.status.as_str(), d.answers.len()), ("NOERROR", 0), "{ty}: {d:?}");
    }
    assert_eq!(up.count("udp", "reviews.default.svc.cluster.local."), 0, "a mesh name is not forwarded");

    // A ServiceEntry's own addresses, A and AAAA; a wildcard host with addresses.
    assert_eq!(dig(dns, &["db.example.com", "A"]).answers, ["10.9.0.5"]);
    assert_eq!(dig(dns, &["db.example.com", "AAAA"]).answers, ["2001:db8::5"]);
    assert_eq!(dig(dns, &["api.wild.example", "A"]).answers, ["10.7.0.1"]);

    // Other names go to the upstream, UDP over UDP, TCP over TCP.
    let d = dig(dns, &["www.example.org", "A"]);
    assert_eq!((d.status.as_str(), d.answers.clone()), ("NOERROR", vec!["192.0.2.7".to_owned()]), "{d:?}");
    assert!(!d.flags.contains(&"aa".to_owned()), "the upstream's answer as it gave it: {d:?}");
    assert_eq!(up.count("udp", "www.example.org."), 1);
    let d = dig(dns, &["+tcp", "www.example.org", "A"]);
    assert_eq!(d.answers, ["192.0.2.7"]);
    assert_eq!(up.count("tcp", "www.example.org."), 1);
    assert_eq!(dig(dns, &["nowhere.example.org", "A"]).status, "NXDOMAIN");
    // Mesh names over TCP too.
    assert_eq!(dig(dns, &["+tcp", "reviews", "A"]).answers, std::slice::from_ref(&vip));

    // A truncated UDP answer is passed on; dig asks again over TCP, which is forwarded over TCP.
    let d = dig(dns, &["big.example.org", "A"]);
    assert_eq!(d.answers.len(), 40, "{d:?}");
    assert_eq!((up.count("udp", "big.example.org."), up.count("tcp", "big.example.org.")), (1, 1));
    // The upstream's answer counts only under the ID it was asked with.
    assert_eq!(dig(dns, &["spoof.example.org", "A"]).answers, ["192.0.2.8"]);

    // Metrics on /metrics.
    let local = p.metric("weft_dns_queries_total", &["result=\"local\""]);
    let forwarded = p.metric("weft_dns_queries_total", &["result=\"forwarded\""]);
    assert!(local >= 14.0, "{local} answered locally");
    assert!(forwarded >= 7.0, "{forwarded} forwarded");
    assert_eq!(p.metric("weft_dns_queries_total", &["result=\"failed\""]), 0.0);

    // Another proxy with the same services gives the same VIPs.
    let (_q, dns2) = dns_proxy(MESH, &up.addr.to_string());
    assert_eq!(dig(dns2, &["reviews", "A"]).answers, [vip]);
}

#[test]
fn a_service_added_to_the_config_file_appears_and_others_keep_their_vips() {
    let up = Upstream::start();
    let (p, dns) = dns_proxy(MESH, &up.addr.to_string());
    let vip = dig(dns, &["reviews", "A"]).answers;
    assert_eq!(dig(dns, &["details", "A"]).status, "NXDOMAIN", "not the mesh's yet: forwarded");
    let details = "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: details}\nspec:\n  hosts: [details.default.svc.cluster.local]\n  ports: [{number: 9080, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: 127.0.0.1}]\n";
    p.rewrite(&format!("{MESH}{details}"));
    let d = dig(dns, &["details", "A"]);
    assert!(d.status == "NOERROR" && d.answers.len() == 1 && is_vip(&d.answers[0]), "{d:?}");
    assert_ne!(d.answers, vip);
    assert_eq!(dig(dns, &["reviews", "A"]).answers, vip, "reviews keeps its VIP");
    // And goes away with the entry.
    p.rewrite(&MESH.replace("reviews.default.svc.cluster.local", "reviews2.default.svc.cluster.local"));
    assert_eq!(dig(dns, &["reviews", "A"]).status, "NXDOMAIN");
}

#[test]
fn a_service_registered_at_the_control_plane_appears() {
    let up = Upstream::start();
    let cp = plane();
    let upstream = up.addr.to_string();
    let p = follower_with(&cp, "dns-node", &["--namespace", "default", "--dns", "127.0.0.1:0", "--dns-upstream", &upstream]);
    let dns = dns_addr(&p);
    assert_eq!(dig(dns, &["payments", "A"]).status, "NXDOMAIN");
    let out = cp.weft(&["register", "--service", "payments", "--address", "127.0.0.1:9090"]);
    assert!(out.status.success(), "{}", text(&out));
    let mut last = None;
    wait_until("payments resolves at the proxy", || {
        let d = dig(dns, &["payments", "A"]);
        let ok = d.answers.len() == 1 && is_vip(&d.answers[0]);
        last = Some(d);
        ok
    });
    let d = dig(dns, &["payments.default.svc.cluster.local", "A"]);
    assert_eq!(Some(d.answers), last.map(|l| l.answers));
}

/// A raw query: `name` (dotted), type A, with `id`.
fn raw_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.') {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Sends `bytes` over UDP; the reply, if one comes within `wait`.
fn udp_exchange(dns: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.send_to(bytes, dns).unwrap();
    let mut buf = [0u8; 4096];
    s.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

fn rcode(reply: &[u8]) -> u8 {
    reply[3] & 0x0f
}

#[test]
fn hostile_queries_get_errors_and_the_server_keeps_answering() {
    let up = Upstream::start();
    let (p, dns) = dns_proxy(MESH, &up.addr.to_string());
    let short = Duration::from_millis(300);
    // Garbage after a query header (its name a pointer far past the end): FORMERR under its ID.
    let mut garbage = vec![0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00];
    garbage.extend((0..200u32).map(|i| 0xf0 | (i.wrapping_mul(2_654_435_761) >> 28) as u8));
    let r = udp_exchange(dns, &garbage, Duration::from_secs(2)).expect("an answer to garbage");
    assert_eq!((&r[..2], rcode(&r)), (&[0xab, 0xcd][..], 1));
    // Five bytes, and a response: no answer at all.
    assert!(udp_exchange(dns, &[1, 2, 3, 4, 5], short).is_none());
    let mut response = raw_query(7, "reviews");
    response[2] |= 0x80;
    assert!(udp_exchange(dns, &response, short).is_none(), "a response is never answered");
    // A compression loop, a pointer forward, 65535 questions claimed, 130 labels (a name
    // over 255 bytes): FORMERR.
    let mut lp = raw_query(8, "x")[..12].to_vec();
    lp.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    let mut fwd = raw_query(9, "x")[..12].to_vec();
    fwd.extend_from_slice(&[1, b'a', 0xc0, 60, 0, 1, 0, 1]);
    let mut many = raw_query(10, "reviews");
    many[4] = 0xff;
    many[5] = 0xff;
    let labels = vec!["ab"; 130].join(".");
    for q in [lp, fwd, many, raw_query(11, &labels)] {
        let r = udp_exchange(dns, &q, Duration::from_secs(2)).expect("an answer");
        assert_eq!((&r[..2], rcode(&r)), (&q[..2], 1), "{q:?}");
    }
    // Another opcode (NOTIFY): NOTIMP.
    let mut notify = raw_query(12, "reviews");
    notify[2] = 4 << 3;
    assert_eq!(rcode(&udp_exchange(dns, &notify, Duration::from_secs(2)).unwrap()), 4);

    // TCP: a length prefix far over the limit closes the connection at once; garbage in
    // a frame gets FORMERR; a frame cut short is closed after the idle timeout (not waited for here).
    let mut c = TcpStream::connect(dns).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(&[0xff, 0xff, 1, 2, 3]).unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 16];
    assert!(matches!(c.read(&mut buf), Ok(0) | Err(_)), "closed");
    assert!(t.elapsed() < Duration::from_secs(2));
    let mut c = TcpStream::connect(dns).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut frame = (garbage.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&garbage);
    c.write_all(&frame).unwrap();
    let mut len = [0u8; 2];
    c.read_exact(&mut len).unwrap();
    let mut r = vec![0u8; u16::from_be_bytes(len) as usize];
    c.read_exact(&mut r).unwrap();
    assert_eq!(rcode(&r), 1);
    // The same connection goes on serving.
    let q = raw_query(13, "reviews");
    let mut frame = (q.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&q);
    c.write_all(&frame).unwrap();
    c.read_exact(&mut len).unwrap();
    let mut r = vec![0u8; u16::from_be_bytes(len) as usize];
    c.read_exact(&mut r).unwrap();
    let m = Message::from_vec(&r).unwrap();
    assert_eq!((m.metadata.id, m.metadata.message_type, m.answers.len()), (13, MessageType::Response, 1));

    // Past the TCP connection limit (128), new connections are closed at accept.
    let held: Vec<TcpStream> = (0..140).map(|_| TcpStream::connect(dns).unwrap()).collect();
    wait_until("connections over the limit are refused", || p.metric("weft_dns_failures_total", &["reason=\"connection_limit\""]) >= 1.0);
    drop(held);

    // Through all of it the server kept answering, UDP and TCP.
    let d = dig(dns, &["reviews", "A"]);
    assert!(d.status == "NOERROR" && d.answers.len() == 1, "{d:?}");
    wait_until("a TCP slot is free again", || dig(dns, &["+tcp", "reviews", "A"]).answers.len() == 1);
    assert_eq!(dig(dns, &["www.example.org", "A"]).answers, ["192.0.2.7"]);
    let failures: HashMap<&str, f64> = ["malformed", "not_implemented", "too_large"]
        .iter()
        .map(|r| (*r, p.metric("weft_dns_failures_total", &[&format!("reason=\"{r}\"")])))
        .collect();
    assert!(failures["malformed"] >= 6.0, "{failures:?}");
    assert!(failures["not_implemented"] >= 1.0 && failures["too_large"] >= 1.0, "{failures:?}");
}

#[test]
fn an_upstream_that_fails_gets_servfail() {
    let up = Upstream::start();
    // Nothing listens: refused at once.
    let closed = free_addr();
    let (p, dns) = dns_proxy(MESH, &closed.to_string());
    let d = dig(dns, &["www.example.org", "A"]);
    assert_eq!(d.status, "SERVFAIL", "{d:?}");
    assert_eq!(dig(dns, &["+tcp", "www.example.org", "A"]).status, "SERVFAIL");
    assert_eq!(dig(dns, &["reviews", "A"]).status, "NOERROR", "mesh names need no upstream");
    assert!(p.metric("weft_dns_failures_total", &["reason=\"upstream_error\""]) >= 2.0);
    // An upstream that never answers: SERVFAIL after the forward's timeout.
    let (p, dns) = dns_proxy(MESH, &up.addr.to_string());
    let t = Instant::now();
    assert_eq!(dig(dns, &["slow.example.org", "A"]).status, "SERVFAIL");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(p.metric("weft_dns_failures_total", &["reason=\"upstream_timeout\""]), 1.0);
}

#[test]
fn the_dns_flags_are_checked_at_start() {
    // Forwarding to itself would loop.
    let port = free_addr().port();
    let addr = format!("127.0.0.1:{port}");
    let cfg = temp_dir().join("mesh.yaml");
    std::fs::write(&cfg, MESH).unwrap();
    let cfg = cfg.to_str().unwrap();
    let out = Command::new(weft())
        .args(["proxy", "--config", cfg, "--listen", "127.0.0.1:0", "--dns", &addr, "--dns-upstream", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is this server itself"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(weft()).args(["proxy", "--config", cfg, "--dns-upstream", "not-an-address"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not IP[:PORT]"));
}

#[test]
fn sockets_made_elsewhere_are_served() {
    // As interception does: the sockets are made by another process (inside the app's
    // network namespace) and inherited by `weft proxy --dns-fds UDP,TCP`.
    use std::os::fd::AsRawFd;
    let up = Upstream::start();
    let (udp, tcp) = loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        if let Ok(udp) = UdpSocket::bind(tcp.local_addr().unwrap()) {
            break (udp, tcp);
        }
    };
    socket2::SockRef::from(&udp).set_cloexec(false).unwrap();
    socket2::SockRef::from(&tcp).set_cloexec(false).unwrap();
    let dns = udp.local_addr().unwrap();
    let fds = format!("{},{}", udp.as_raw_fd(), tcp.as_raw_fd());
    let p = proxy_with(MESH, &["--dns-fds", &fds, "--dns-upstream", &up.addr.to_string()]);
    assert_eq!(dns_addr(&p), dns);
    drop((udp, tcp));
    let d = dig(dns, &["reviews", "A"]);
    assert!(d.answers.len() == 1 && is_vip(&d.answers[0]), "{d:?}");
    assert_eq!(dig(dns, &["+tcp", "www.example.org", "A"]).answers, ["192.0.2.7"]);
    // Descriptors that are not the sockets asked for are refused before anything starts.
    let cfg = temp_dir().join("mesh.yaml");
    std::fs::write(&cfg, MESH).unwrap();
    let out = Command::new(weft()).args(["proxy", "--config", cfg.to_str().unwrap(), "--dns-fds", "3,3"]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("UDP_FD,TCP_FD"));
}
