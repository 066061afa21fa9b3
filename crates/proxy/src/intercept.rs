//! Transparent interception (`weft run --intercept`): the app's namespace sends every
//! outbound TCP connection to the outbound listener (nftables `redirect`), and the
//! destination the app dialled comes with it (`SO_ORIGINAL_DST`). What each connection
//! becomes:
//! - made to the listener itself (an app that uses `HTTP_PROXY` anyway): HTTP, as ever;
//! - to the address and port of an opaque TCP service (a ServiceEntry VIP, or a mesh
//!   service's virtual IP from the mesh DNS): that service's TCP routes ([`crate::tcp`]);
//! - otherwise by its first bytes: HTTP (a request line, or HTTP/2's preface) is served
//!   as the app's outbound HTTP, routed by its `Host` like every request (a host the mesh
//!   does not know: 404, as through `HTTP_PROXY`); a TLS ClientHello whose SNI a
//!   `tls[]` route takes goes there; anything else (and a client that sends nothing for
//!   [`SNIFF_WAIT`], as server-first protocols do) is passed through to the original
//!   destination, from the sidecar's own network — Istio's `ALLOW_ANY` — unless that
//!   destination is a mesh virtual IP, which has no meaning outside (closed).
//!
//! Each kind is counted (`weft_intercepted_connections_total{kind}`).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::graceful::Watcher;
use crate::request::Side;
use crate::state::Shared;

/// How long a connection to an unknown destination may stay silent before it is taken
/// for a server-first protocol and passed through (Istio's protocol detection timeout).
pub const SNIFF_WAIT: Duration = Duration::from_millis(100);
/// A passed-through connection with no byte either way this long is closed (Envoy's
/// TCP proxy default idle timeout).
const PASSTHROUGH_IDLE: Duration = Duration::from_secs(3600);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the first bytes of a connection say it is.
#[derive(Debug, PartialEq, Eq)]
pub enum Sniffed {
    Http,
    Tls,
    Other,
}

/// Classifies a connection by its first bytes (`bytes`: what arrived, maybe partial).
pub fn sniff(bytes: &[u8]) -> Sniffed {
    if bytes.first() == Some(&0x16) {
        return Sniffed::Tls;
    }
    if bytes.starts_with(b"PRI * HTTP/2.0") {
        return Sniffed::Http;
    }
    // An HTTP/1 request line: a method token of capitals, then a space.
    let method = bytes.iter().take_while(|b| b.is_ascii_uppercase()).count();
    match bytes.get(method) {
        Some(b' ') if (1..=16).contains(&method) => Sniffed::Http,
        _ => Sniffed::Other,
    }
}

/// Serves one connection the outbound listener accepted while intercepting.
pub async fn serve(
    shared: &'static Shared,
    builder: &'static crate::server::Builder,
    watcher: Watcher,
    stream: TcpStream,
    remote: SocketAddr,
    worker: usize,
) {
    let count = |kind: usize| shared.metrics.counters.intercepted[kind].fetch_add(1, Ordering::Relaxed);
    // Held while the connection is looked at (its first bytes, a ClientHello): it counts
    // against --max-connections like any other, so an app cannot hold the sidecar's file
    // descriptors with connections that never say what they are.
    let looking = Looking::start(shared);
    let Some(orig) = crate::netns::original_destination(&stream) else {
        drop(looking);
        return crate::server::connection_watched(shared, builder, watcher, stream, remote, worker, Side::Outbound).await;
    };
    if let Some(local) = crate::tcp::listener_for(shared, orig) {
        drop(looking);
        count(1);
        return crate::tcp::serve(shared, stream, local, remote).await;
    }
    let mut first = [0u8; 17];
    let n = match tokio::time::timeout(SNIFF_WAIT, peek_enough(&stream, &mut first)).await {
        Ok(Ok(0) | Err(_)) => return,
        Ok(Ok(n)) => n,
        Err(_) => stream.peek(&mut first).await.unwrap_or(0).min(first.len()),
    };
    let sniffed = sniff(&first[..n]);
    if sniffed == Sniffed::Tls {
        return tls(shared, stream, remote, orig, &count, looking).await;
    }
    drop(looking);
    match sniffed {
        Sniffed::Http => {
            count(0);
            crate::server::connection_watched(shared, builder, watcher, stream, remote, worker, Side::Outbound).await
        }
        _ if crate::tcp::is_mesh_vip(shared, orig.ip()) => {
            count(3);
            tracing::info!(%remote, %orig, "intercepted: not HTTP, to a mesh address with no TCP route; closed");
        }
        _ => {
            count(2);
            passthrough(shared, stream, orig, &[]).await
        }
    }
}

/// Peeks until the first bytes decide what the connection is (or it ends): a request
/// line's method may arrive before its space.
async fn peek_enough(stream: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let n = stream.peek(buf).await?;
        let undecided = n < buf.len() && buf[..n].iter().all(u8::is_ascii_uppercase);
        if n == 0 || !undecided {
            return Ok(n);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A TLS connection: by its SNI to a `tls[]` route, else through to where it was going.
async fn tls(
    shared: &'static Shared,
    mut down: TcpStream,
    remote: SocketAddr,
    orig: SocketAddr,
    count: &impl Fn(usize) -> u64,
    looking: Looking,
) {
    let wait = shared.header_read_timeout.unwrap_or(Duration::from_secs(60));
    let Ok(Some(hello)) = tokio::time::timeout(wait, crate::passthrough::hello(&mut down)).await else {
        tracing::debug!(%remote, %orig, "intercepted: not a ClientHello (or too slow); closed");
        return;
    };
    drop(looking);
    let routed = hello.sni().is_some_and(|sni| shared.current.load().snap.tls_route(&sni, orig.port()).is_some());
    if routed {
        count(1);
        crate::passthrough::route(shared, down, remote, orig.port(), &hello).await;
    } else if crate::tcp::is_mesh_vip(shared, orig.ip()) {
        count(3);
    } else {
        count(2);
        passthrough(shared, down, orig, &hello.records).await;
    }
}

/// A connection being looked at, counted as active (not as a new one: whatever serves it
/// next counts that).
struct Looking(&'static Shared);

impl Looking {
    fn start(shared: &'static Shared) -> Looking {
        shared.metrics.counters.downstream_connections_active.fetch_add(1, Ordering::Relaxed);
        Looking(shared)
    }
}

impl Drop for Looking {
    fn drop(&mut self) {
        self.0.metrics.counters.downstream_connections_active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Through to the original destination, byte for byte (`sent`: what was already read).
async fn passthrough(shared: &'static Shared, mut down: TcpStream, orig: SocketAddr, sent: &[u8]) {
    let counters = &shared.metrics.counters;
    let mut up = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(orig)).await {
        Ok(Ok(up)) => up,
        Ok(Err(e)) => {
            counters.upstream_connect_failure.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%orig, "intercepted passthrough: {e}");
            return;
        }
        Err(_) => {
            counters.upstream_connect_failure.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let _ = up.set_nodelay(true);
    if !sent.is_empty() && up.write_all(sent).await.is_err() {
        return;
    }
    counters.downstream_connections.fetch_add(1, Ordering::Relaxed);
    counters.downstream_connections_active.fetch_add(1, Ordering::Relaxed);
    crate::tcp::copy_both_ways(&mut down, &mut up, Some(PASSTHROUGH_IDLE)).await;
    counters.downstream_connections_active.fetch_sub(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_http_tls_and_the_rest() {
        assert_eq!(sniff(b"GET / HTTP/1.1\r\n"), Sniffed::Http);
        assert_eq!(sniff(b"OPTIONS * HTTP/1.1"), Sniffed::Http);
        assert_eq!(sniff(b"PRI * HTTP/2.0\r\n\r\nSM"), Sniffed::Http);
        assert_eq!(sniff(&[0x16, 3, 1, 0, 200]), Sniffed::Tls);
        // Redis, a binary protocol, lower case, nothing, a method with no space yet.
        assert_eq!(sniff(b"*1\r\n$4\r\nPING"), Sniffed::Other);
        assert_eq!(sniff(&[0, 0, 0, 8, 4, 210, 22, 47]), Sniffed::Other);
        assert_eq!(sniff(b"get / HTTP/1.1"), Sniffed::Other);
        assert_eq!(sniff(b""), Sniffed::Other);
        assert_eq!(sniff(b"GET"), Sniffed::Other);
        assert_eq!(sniff(b"ABCDEFGHIJKLMNOPQ "), Sniffed::Other);
    }
}
