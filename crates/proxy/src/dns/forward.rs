//! Forwarding a query the mesh does not answer to the upstream resolver: over UDP for
//! a UDP query, over TCP for a TCP one (so that a truncated UDP answer, passed on with
//! its TC bit, makes the client ask again over TCP, and that question is forwarded over
//! TCP in turn).
//!
//! Each forward has its own socket (a fresh source port, connected to the upstream: the
//! kernel drops datagrams from anyone else) and its own random ID; an answer counts
//! only when its ID, QR bit and question match, and it goes back to the client under
//! the client's ID. Bounded in time ([`UDP_TIMEOUT`], [`TCP_TIMEOUT`]) and size (a UDP
//! answer larger than the client's buffer becomes an empty TC answer; a TCP answer is
//! one frame).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_telemetry::DnsFailure;

use super::answer::{question_reply, Forward, MAX_TCP_MESSAGE, MAX_UDP_PAYLOAD};

/// How long a UDP forward waits for the upstream's answer: under glibc's 5 s, so the
/// client gets SERVFAIL before it gives up and asks again.
pub const UDP_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a TCP forward may take in all (connect, send, the whole answer).
pub const TCP_TIMEOUT: Duration = Duration::from_secs(5);

/// `query` with its ID replaced (the upstream sees the proxy's, never the client's).
fn with_id(query: &[u8], id: u16) -> Vec<u8> {
    let mut q = query.to_vec();
    q[..2].copy_from_slice(&id.to_be_bytes());
    q
}

/// Whether `resp` answers our query `sent` (ID, QR, the same question — or no question
/// at all in an error answer, as some servers send FORMERR).
fn answers(resp: &[u8], sent: &[u8], question_end: usize) -> bool {
    if resp.len() < 12 || resp[..2] != sent[..2] || resp[2] & 0x80 == 0 {
        return false;
    }
    let questions = u16::from_be_bytes([resp[4], resp[5]]);
    match questions {
        0 => resp[3] & 0x0f != 0,
        1 => resp.len() >= question_end && resp[12..question_end].eq_ignore_ascii_case(&sent[12..question_end]),
        _ => false,
    }
}

/// Asks `upstream` over UDP; the answer under the client's ID, or why not.
pub async fn udp(upstream: SocketAddr, query: &[u8], f: Forward) -> Result<Vec<u8>, DnsFailure> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = tokio::net::UdpSocket::bind(local).await.map_err(|_| DnsFailure::UpstreamError)?;
    sock.connect(upstream).await.map_err(|_| DnsFailure::UpstreamError)?;
    let sent = with_id(query, fastrand::u16(..));
    sock.send(&sent).await.map_err(|_| DnsFailure::UpstreamError)?;
    // One byte more than any answer taken: a datagram that fills it was larger.
    let mut buf = vec![0u8; MAX_UDP_PAYLOAD + 1];
    let deadline = tokio::time::Instant::now() + UDP_TIMEOUT;
    loop {
        let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            Err(_) => return Err(DnsFailure::UpstreamTimeout),
            // (ICMP port unreachable: nothing listens there.)
            Ok(Err(_)) => return Err(DnsFailure::UpstreamError),
            Ok(Ok(n)) => n,
        };
        let resp = &buf[..n];
        if !answers(resp, &sent, f.question_end) {
            continue;
        }
        if n > f.limit {
            return Ok(question_reply(query, f.question_end, ResponseCode::NoError, true));
        }
        let mut out = resp.to_vec();
        out[..2].copy_from_slice(&query[..2]);
        return Ok(out);
    }
}

/// Asks `upstream` over TCP (one connection per query); the answer under the client's ID.
pub async fn tcp(upstream: SocketAddr, query: &[u8], f: Forward) -> Result<Vec<u8>, DnsFailure> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(upstream).await.map_err(|_| DnsFailure::UpstreamError)?;
        let sent = with_id(query, fastrand::u16(..));
        let mut frame = Vec::with_capacity(2 + sent.len());
        frame.extend_from_slice(&(sent.len() as u16).to_be_bytes());
        frame.extend_from_slice(&sent);
        s.write_all(&frame).await.map_err(|_| DnsFailure::UpstreamError)?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await.map_err(|_| DnsFailure::UpstreamError)?;
        let len = usize::from(u16::from_be_bytes(len));
        let mut resp = vec![0u8; len.min(MAX_TCP_MESSAGE)];
        s.read_exact(&mut resp).await.map_err(|_| DnsFailure::UpstreamError)?;
        if !answers(&resp, &sent, f.question_end) {
            return Err(DnsFailure::UpstreamError);
        }
        resp[..2].copy_from_slice(&query[..2]);
        Ok(resp)
    };
    tokio::time::timeout(TCP_TIMEOUT, exchange).await.unwrap_or(Err(DnsFailure::UpstreamTimeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_must_match_id_qr_and_question() {
        // id 7, RD; one question "a." A IN
        let q = [0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1];
        let end = q.len();
        let mut r = q;
        r[2] |= 0x80;
        assert!(answers(&r, &q, end));
        let mut upper = r;
        upper[13] = b'A';
        assert!(answers(&upper, &q, end), "0x20 case is not a mismatch");
        let mut other = r;
        other[13] = b'b';
        assert!(!answers(&other, &q, end));
        let mut id = r;
        id[1] = 8;
        assert!(!answers(&id, &q, end));
        assert!(!answers(&q, &q, end), "a query is no answer");
        let formerr = [0, 7, 0x81, 0x01, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(answers(&formerr, &q, end));
        assert!(!answers(&[0, 7, 0x81, 0x00, 0, 0, 0, 0, 0, 0, 0, 0], &q, end), "no question and no error");
        assert!(!answers(&r[..15], &q, end));
        assert_eq!(&with_id(&q, 0xabcd)[..2], &[0xab, 0xcd]);
    }
}
