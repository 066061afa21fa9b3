//! What to do with one query, decided from its bytes and the VIP table alone (no I/O):
//! answer it (a mesh name), forward it (any other name), or refuse it.
//!
//! The raw header is checked before anything is parsed — a response (QR set) is never
//! answered (no reflection loops), an opcode other than QUERY gets NOTIMP, and a
//! question count other than one gets FORMERR — so a 12-byte datagram claiming 65,535
//! questions costs nothing. The rest is read by hickory-proto, whose name decoding
//! refuses compression loops and forward pointers and bounds a name to 255 bytes.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use weft_config::dns::VipTable;
use weft_telemetry::DnsFailure;

/// The TTL of mesh answers: short, so that a service's VIP or addresses changing (or
/// the service going away) reach clients within half a minute.
pub const TTL: u32 = 30;
/// The largest query read, over UDP or TCP (a question is at most ~260 bytes; EDNS
/// options, cookies and padding stay well under this).
pub const MAX_QUERY: usize = 4096;
/// The largest response sent over UDP, whatever a client's EDNS buffer says.
pub const MAX_UDP_PAYLOAD: usize = 4096;
/// Without EDNS, a UDP response is at most 512 bytes (RFC 1035).
pub const MIN_UDP_PAYLOAD: usize = 512;
/// The EDNS buffer size the proxy advertises (DNS flag day 2020: no fragmentation).
pub const EDNS_PAYLOAD: u16 = 1232;
/// A response over TCP is one frame.
pub const MAX_TCP_MESSAGE: usize = 65535;

const HEADER: usize = 12;

/// How the query came: over UDP its response is bounded by the client's buffer (512,
/// or its EDNS size up to [`MAX_UDP_PAYLOAD`]); over TCP by the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A query for a name that is not the mesh's, to send to the upstream resolver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// Where the question section ends in the query: the upstream's answer must repeat it.
    pub question_end: usize,
    /// The largest response the client takes (UDP: its buffer; TCP: a frame).
    pub limit: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// A mesh name's answer (addresses, or NODATA).
    Local(Vec<u8>),
    /// An error answer of the proxy's own (FORMERR, NOTIMP, BADVERS).
    Error(Vec<u8>, DnsFailure),
    Forward(Forward),
    /// No answer at all: not a query, or not even a header.
    Drop(DnsFailure),
}

/// Decides what `raw` (one query) gets.
pub fn decide(raw: &[u8], vips: &VipTable, transport: Transport) -> Decision {
    if raw.len() < HEADER || raw[2] & 0x80 != 0 {
        return Decision::Drop(DnsFailure::Malformed);
    }
    let opcode = (raw[2] >> 3) & 0x0f;
    if opcode != 0 {
        return Decision::Error(header_reply(raw, ResponseCode::NotImp), DnsFailure::NotImplemented);
    }
    if raw.len() > MAX_QUERY {
        return Decision::Error(header_reply(raw, ResponseCode::FormErr), DnsFailure::TooLarge);
    }
    if u16::from_be_bytes([raw[4], raw[5]]) != 1 {
        return Decision::Error(header_reply(raw, ResponseCode::FormErr), DnsFailure::Malformed);
    }
    let (Ok(msg), Some(question_end)) = (Message::from_vec(raw), question_end(raw)) else {
        return Decision::Error(header_reply(raw, ResponseCode::FormErr), DnsFailure::Malformed);
    };
    if msg.metadata.message_type != MessageType::Query || msg.queries.len() != 1 {
        return Decision::Error(header_reply(raw, ResponseCode::FormErr), DnsFailure::Malformed);
    }
    let limit = match transport {
        Transport::Tcp => MAX_TCP_MESSAGE,
        Transport::Udp => {
            msg.edns.as_ref().map_or(MIN_UDP_PAYLOAD, |e| usize::from(e.max_payload()).clamp(MIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD))
        }
    };
    if msg.edns.as_ref().is_some_and(|e| e.version() > 0) {
        // (RFC 6891: an EDNS version the server does not speak gets BADVERS, with OPT.)
        let mut r = response(&msg, ResponseCode::BADVERS);
        r.metadata.authoritative = false;
        return Decision::Error(encode(&r, limit), DnsFailure::Malformed);
    }
    let q = &msg.queries[0];
    let mesh = match q.query_class() {
        DNSClass::IN | DNSClass::ANY => mesh_name(q.name().iter()).and_then(|n| vips.lookup(&n)),
        _ => None,
    };
    let Some(found) = mesh else {
        return Decision::Forward(Forward { question_end, limit });
    };
    let mut r = response(&msg, ResponseCode::NoError);
    let want_v4 = matches!(q.query_type(), RecordType::A | RecordType::ANY);
    let want_v6 = matches!(q.query_type(), RecordType::AAAA | RecordType::ANY);
    for a in found.addresses {
        let data = match a {
            IpAddr::V4(v4) if want_v4 => RData::A(A(*v4)),
            IpAddr::V6(v6) if want_v6 => RData::AAAA(AAAA(*v6)),
            _ => continue,
        };
        r.add_answer(Record::from_rdata(q.name().clone(), TTL, data));
    }
    Decision::Local(encode(&r, limit))
}

/// The mesh-name form of a query's (first) name, if it has one (on-demand discovery
/// asks for it before forwarding).
pub fn query_name(raw: &[u8]) -> Option<String> {
    let msg = Message::from_vec(raw).ok()?;
    mesh_name(msg.queries.first()?.name().iter())
}

/// The lower-case dotted form of a name's labels, when every label is a host name's
/// (letters, digits, `-`, `_`): only such names can be the mesh's. (Built from the
/// labels rather than the name's text, so that a label holding a dot byte cannot pose
/// as two.)
fn mesh_name<'a>(labels: impl Iterator<Item = &'a [u8]>) -> Option<String> {
    let mut out = String::new();
    for l in labels {
        if l.is_empty() || !l.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_') {
            return None;
        }
        if !out.is_empty() {
            out.push('.');
        }
        out.extend(l.iter().map(|b| b.to_ascii_lowercase() as char));
    }
    (!out.is_empty()).then_some(out)
}

/// An answer to `q` carrying its question (and OPT when it had EDNS): authoritative,
/// recursion available (other names are forwarded).
fn response(q: &Message, code: ResponseCode) -> Message {
    let mut r = Message::response(q.metadata.id, OpCode::Query);
    r.metadata.authoritative = true;
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    r.metadata.checking_disabled = q.metadata.checking_disabled;
    r.metadata.response_code = code;
    r.add_queries(q.queries.iter().cloned());
    if q.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD);
        r.set_edns(e);
    }
    r
}

/// `r`'s bytes; when they exceed `limit`, the question alone with TC set (the client
/// asks again over TCP).
fn encode(r: &Message, limit: usize) -> Vec<u8> {
    match r.to_vec() {
        Ok(b) if b.len() <= limit => b,
        _ => r.truncate().to_vec().unwrap_or_else(|_| {
            let mut h = vec![0u8; HEADER];
            h[..2].copy_from_slice(&r.metadata.id.to_be_bytes());
            h[2] = 0x80 | 0x02;
            h[3] = 0x82; // RA, SERVFAIL
            h
        }),
    }
}

/// Where the (single) question ends: its name's labels, then type and class.
pub fn question_end(raw: &[u8]) -> Option<usize> {
    let mut i = HEADER;
    loop {
        let len = *raw.get(i)? as usize;
        match len {
            0 => {
                i += 1;
                break;
            }
            l if l & 0xc0 == 0xc0 => {
                i += 2;
                break;
            }
            l if l & 0xc0 != 0 => return None,
            l => i += 1 + l,
        }
    }
    (i + 4 <= raw.len()).then_some(i + 4)
}

/// A header-only answer to `raw` (no question: it could not be read): its id, opcode
/// and RD, QR set, `code`.
pub fn header_reply(raw: &[u8], code: ResponseCode) -> Vec<u8> {
    let mut h = vec![0u8; HEADER];
    h[..2].copy_from_slice(&raw[..2]);
    h[2] = 0x80 | (raw[2] & 0x79); // QR, the opcode and RD as asked
    h[3] = 0x80 | (u16::from(code) as u8 & 0x0f); // RA, the code
    h
}

/// An answer to `raw` repeating its question (up to `question_end`), no records:
/// SERVFAIL when the upstream failed, or a NOERROR with TC set when its answer was too
/// large for the client's UDP buffer.
pub fn question_reply(raw: &[u8], question_end: usize, code: ResponseCode, truncated: bool) -> Vec<u8> {
    let mut out = header_reply(raw, code);
    if truncated {
        out[2] |= 0x02;
    }
    out[5] = 1; // one question
    out.extend_from_slice(&raw[HEADER..question_end]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Name;
    use weft_config::dns::{services, VipTable};

    fn table() -> VipTable {
        let list = vec![
            ("reviews.default.svc.cluster.local", "default", vec![]),
            ("db.example.com", "default", vec!["10.9.0.5".parse().unwrap(), "2001:db8::5".parse().unwrap()]),
            ("many.example.com", "default", (1..=100u8).map(|i| IpAddr::from([10, 8, 0, i])).collect()),
        ];
        VipTable::build(&services(list, "default"))
    }

    fn query(name: &str, t: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(hickory_proto::op::Query::query(Name::from_ascii(name).unwrap(), t));
        if let Some(p) = edns {
            let mut e = Edns::new();
            e.set_max_payload(p);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn local(d: Decision) -> Message {
        match d {
            Decision::Local(b) => Message::from_vec(&b).unwrap(),
            other => panic!("not answered locally: {other:?}"),
        }
    }

    #[test]
    fn mesh_names_answer_with_their_addresses_in_any_case() {
        let t = table();
        let vip = t.addresses_for("reviews.default.svc.cluster.local").unwrap()[0];
        for n in ["reviews", "REVIEWS.default.", "reviews.default.svc", "reviews.default.svc.cluster.local."] {
            let m = local(decide(&query(n, RecordType::A, None), &t, Transport::Udp));
            assert_eq!(m.metadata.id, 0x1234);
            assert_eq!(m.metadata.response_code, ResponseCode::NoError);
            assert!(m.metadata.authoritative && m.metadata.recursion_desired);
            assert_eq!(m.answers.len(), 1, "{n}");
            assert_eq!(
                m.answers[0].data,
                RData::A(A(match vip {
                    IpAddr::V4(v) => v,
                    _ => unreachable!(),
                }))
            );
            assert_eq!(m.answers[0].ttl, TTL);
            assert_eq!(m.answers[0].name.to_ascii().trim_end_matches('.'), n.trim_end_matches('.'), "the name as asked");
        }
        // A VIP has no IPv6 address: AAAA is NODATA; MX of a mesh name too, never forwarded.
        for ty in [RecordType::AAAA, RecordType::MX, RecordType::TXT] {
            let m = local(decide(&query("reviews", ty, None), &t, Transport::Udp));
            assert_eq!((m.metadata.response_code, m.answers.len()), (ResponseCode::NoError, 0));
        }
        let m = local(decide(&query("db.example.com", RecordType::AAAA, Some(1232)), &t, Transport::Udp));
        assert_eq!(m.answers[0].data, RData::AAAA(AAAA("2001:db8::5".parse().unwrap())));
        assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), Some(EDNS_PAYLOAD));
        let m = local(decide(&query("db.example.com", RecordType::ANY, None), &t, Transport::Udp));
        assert_eq!(m.answers.len(), 2);
    }

    #[test]
    fn other_names_are_forwarded() {
        let t = table();
        let q = query("www.example.org", RecordType::A, None);
        assert_eq!(decide(&q, &t, Transport::Udp), Decision::Forward(Forward { question_end: q.len(), limit: 512 }));
        let q = query("www.example.org", RecordType::A, Some(9000));
        assert_eq!(decide(&q, &t, Transport::Udp), Decision::Forward(Forward { question_end: q.len() - 11, limit: MAX_UDP_PAYLOAD }));
        assert!(matches!(decide(&q, &t, Transport::Tcp), Decision::Forward(Forward { limit: MAX_TCP_MESSAGE, .. })));
        // A label holding a dot byte does not pose as two labels.
        let odd = Name::from_labels(vec![&b"reviews.default"[..]]).unwrap();
        let mut m = Message::new(1, MessageType::Query, OpCode::Query);
        m.add_query(hickory_proto::op::Query::query(odd, RecordType::A));
        assert!(matches!(decide(&m.to_vec().unwrap(), &t, Transport::Udp), Decision::Forward(_)));
    }

    #[test]
    fn a_large_answer_is_truncated_for_udp_and_whole_over_tcp() {
        let t = table();
        let q = query("many.example.com", RecordType::A, None);
        let m = local(decide(&q, &t, Transport::Udp));
        assert!(m.metadata.truncation && m.answers.is_empty());
        let m = local(decide(&q, &t, Transport::Tcp));
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 100);
        let m = local(decide(&query("many.example.com", RecordType::A, Some(4096)), &t, Transport::Udp));
        assert_eq!(m.answers.len(), 100, "fits the client's EDNS buffer");
    }

    #[test]
    fn hostile_queries_get_errors_or_nothing() {
        let t = table();
        let good = query("reviews", RecordType::A, None);
        // Too short, or a response: dropped.
        assert_eq!(decide(&good[..5], &t, Transport::Udp), Decision::Drop(DnsFailure::Malformed));
        let mut resp = good.clone();
        resp[2] |= 0x80;
        assert_eq!(decide(&resp, &t, Transport::Udp), Decision::Drop(DnsFailure::Malformed));
        let rcode = |d: Decision| match d {
            Decision::Error(b, why) => (b[3] & 0x0f, why, b[..2] == good[..2]),
            other => panic!("{other:?}"),
        };
        // 65535 questions claimed: FORMERR from the header alone.
        let mut many = good.clone();
        many[4] = 0xff;
        many[5] = 0xff;
        assert_eq!(rcode(decide(&many, &t, Transport::Udp)), (1, DnsFailure::Malformed, true));
        // Cut short, garbage after the header, a compression loop, a forward pointer.
        assert_eq!(rcode(decide(&good[..good.len() - 2], &t, Transport::Udp)).0, 1);
        let mut garbage = good[..12].to_vec();
        garbage.extend_from_slice(&[0xff; 40]);
        assert_eq!(rcode(decide(&garbage, &t, Transport::Udp)).0, 1);
        let mut lp = good[..12].to_vec();
        lp.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(rcode(decide(&lp, &t, Transport::Udp)).0, 1);
        let mut fwd = good[..12].to_vec();
        fwd.extend_from_slice(&[1, b'a', 0xc0, 40, 0, 1, 0, 1]);
        assert_eq!(rcode(decide(&fwd, &t, Transport::Udp)).0, 1);
        // 200 one-byte labels: over 255 bytes.
        let mut long = good[..12].to_vec();
        for _ in 0..200 {
            long.extend_from_slice(&[1, b'a']);
        }
        long.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(rcode(decide(&long, &t, Transport::Udp)).0, 1);
        // Other opcodes: NOTIMP; oversized: FORMERR.
        let mut notify = good.clone();
        notify[2] |= 4 << 3;
        assert_eq!(rcode(decide(&notify, &t, Transport::Udp)), (4, DnsFailure::NotImplemented, true));
        let mut big = good.clone();
        big.resize(MAX_QUERY + 1, 0);
        assert_eq!(rcode(decide(&big, &t, Transport::Udp)), (1, DnsFailure::TooLarge, true));
        // An EDNS version it does not speak: BADVERS.
        let mut m = Message::from_vec(&query("reviews", RecordType::A, Some(1232))).unwrap();
        m.edns.as_mut().unwrap().set_version(1);
        match decide(&m.to_vec().unwrap(), &t, Transport::Udp) {
            Decision::Error(b, DnsFailure::Malformed) => {
                // (BADVERS and BADSIG share code 16.)
                assert_eq!(u16::from(Message::from_vec(&b).unwrap().metadata.response_code), 16)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn replies_built_from_the_raw_query() {
        let q = query("www.example.org", RecordType::A, None);
        let end = question_end(&q).unwrap();
        let m = Message::from_vec(&question_reply(&q, end, ResponseCode::ServFail, false)).unwrap();
        assert_eq!(
            (m.metadata.id, m.metadata.response_code, m.metadata.message_type),
            (0x1234, ResponseCode::ServFail, MessageType::Response)
        );
        assert_eq!(m.queries[0].name().to_ascii(), "www.example.org.");
        let m = Message::from_vec(&question_reply(&q, end, ResponseCode::NoError, true)).unwrap();
        assert!(m.metadata.truncation && m.metadata.recursion_desired);
        assert_eq!(question_end(&[0u8; 12]), None);
        assert_eq!(question_end(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x80]), None, "a reserved label type");
    }

    fn config(short: u32) -> proptest::test_runner::Config {
        let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(short);
        proptest::test_runner::Config { cases, failure_persistence: None, ..Default::default() }
    }

    /// What any answer must be: a response (QR) under the query's ID, within the limit.
    fn check(raw: &[u8], d: &Decision, transport: Transport) -> Result<(), proptest::test_runner::TestCaseError> {
        let limit = if transport == Transport::Tcp { MAX_TCP_MESSAGE } else { MAX_UDP_PAYLOAD };
        match d {
            Decision::Local(b) | Decision::Error(b, _) => {
                proptest::prop_assert!(b.len() >= HEADER && b.len() <= limit);
                proptest::prop_assert_eq!(&b[..2], &raw[..2]);
                proptest::prop_assert!(b[2] & 0x80 != 0);
            }
            Decision::Forward(f) => proptest::prop_assert!(f.question_end <= raw.len()),
            Decision::Drop(_) => {}
        }
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(config(3000))]

        /// Random bytes behind a query-like header: never a panic, never an answer that
        /// is not a response to it.
        #[test]
        fn fuzz_dns_decide_hostile(id in proptest::num::u16::ANY, flags in proptest::num::u8::ANY, counts in proptest::collection::vec(proptest::num::u8::ANY, 8),
                                   body in proptest::collection::vec(proptest::num::u8::ANY, 0..600), tcp in proptest::bool::ANY) {
            let mut raw = id.to_be_bytes().to_vec();
            raw.extend_from_slice(&[flags & 0x7f, 0]);
            raw.extend_from_slice(&counts);
            raw.extend_from_slice(&body);
            let transport = if tcp { Transport::Tcp } else { Transport::Udp };
            let d = decide(&raw, &table(), transport);
            check(&raw, &d, transport)?;
        }

        /// Valid queries with bytes replaced, cut or appended.
        #[test]
        fn fuzz_dns_decide_mutated(name in "[a-z]{1,8}(\\.[a-z]{1,8}){0,4}", edits in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 0..6),
                                   cut in proptest::num::usize::ANY, edns in proptest::bool::ANY) {
            let mut raw = query(&name, RecordType::A, edns.then_some(1232));
            for (at, b) in edits {
                let at = 2 + at % (raw.len() - 2);
                raw[at] = b;
            }
            raw.truncate(HEADER.max(cut % (raw.len() + 1)));
            raw[2] &= 0x7f;
            let t = table();
            for transport in [Transport::Udp, Transport::Tcp] {
                let d = decide(&raw, &t, transport);
                check(&raw, &d, transport)?;
            }
        }
    }
}
