//! Mesh DNS (`weft proxy --dns ADDR`): Istio's DNS proxying, in the sidecar.
//!
//! Names of the mesh's services — as a Kubernetes pod writes them (`reviews`,
//! `reviews.default`, `reviews.default.svc`, `reviews.default.svc.cluster.local`) and
//! ServiceEntry hosts — are answered from the live config's VIP table
//! ([`weft_config::dns::VipTable`], built once per installed config and read here with
//! one lock-free load per query): the service's declared addresses, else its stable
//! virtual IP in 240.240.0.0/16. Every other name is forwarded to the upstream
//! resolver (the first `nameserver` of /etc/resolv.conf, or `--dns-upstream`): UDP
//! queries over UDP, TCP ones over TCP ([`forward`]).
//!
//! The sockets are [`DnsSockets`]: `--dns` binds them, and code that makes them itself
//! (transparent interception, inside the app's network namespace) hands them in through
//! [`crate::ProxyOptions::dns`]. They are served on a thread and runtime of their own,
//! never on the request workers.
//!
//! Bounds: queries of at most [`MAX_QUERY`] bytes; UDP answers within the client's
//! buffer (512, or its EDNS size up to 4096; larger ones are sent empty with TC set);
//! [`MAX_FORWARDS`] forwards in flight (past them SERVFAIL at once); [`MAX_TCP_CONNECTIONS`]
//! TCP connections (past them closed at accept), each closed after [`TCP_IDLE`] without
//! a whole query, or at the first frame over the size limit. Nothing a client sends
//! can crash it: see [`answer`] for what malformed queries get.

pub mod answer;
pub mod forward;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use weft_telemetry::{DnsFailure, DnsResult};

pub use answer::{Decision, Transport, MAX_QUERY, TTL};

use crate::state::Shared;

/// Forwards in flight at most (UDP and TCP together).
pub const MAX_FORWARDS: usize = 256;
/// TCP connections held at most.
pub const MAX_TCP_CONNECTIONS: usize = 128;
/// A TCP connection with no whole query for this long is closed (and a response that
/// the client does not take in this time ends it too).
pub const TCP_IDLE: Duration = Duration::from_secs(10);

/// The DNS server's sockets, UDP and TCP, normally on one address. `--dns` binds them
/// ([`DnsSockets::bind`]); transparent interception creates them inside the app's network
/// namespace and hands them to the proxy as they are.
#[derive(Debug)]
pub struct DnsSockets {
    pub udp: std::net::UdpSocket,
    pub tcp: std::net::TcpListener,
}

impl DnsSockets {
    /// Binds UDP and TCP on `addr` (a port, not 0) in the network namespace `ns`.
    pub fn bind_in(ns: &crate::netns::NetNs, addr: SocketAddr) -> std::io::Result<DnsSockets> {
        let tcp = crate::netns::listener(Some(ns), addr)?;
        let udp = ns.socket(socket2::Domain::for_address(addr), socket2::Type::DGRAM)?;
        udp.bind(&addr.into())?;
        Ok(DnsSockets { udp: udp.into(), tcp })
    }

    /// Binds UDP and TCP on `addr`; with port 0, both on one port the system picks.
    pub fn bind(addr: SocketAddr) -> std::io::Result<DnsSockets> {
        if addr.port() != 0 {
            let tcp = std::net::TcpListener::bind(addr)?;
            let udp = std::net::UdpSocket::bind(addr)?;
            return Ok(DnsSockets { udp, tcp });
        }
        // (The TCP port the system picks may be taken for UDP: a few tries.)
        let mut last = None;
        for _ in 0..16 {
            let tcp = std::net::TcpListener::bind(addr)?;
            match std::net::UdpSocket::bind(tcp.local_addr()?) {
                Ok(udp) => return Ok(DnsSockets { udp, tcp }),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no port free for both UDP and TCP")))
    }

    /// Takes over sockets made elsewhere and inherited as file descriptors (interception
    /// makes them inside the app's network namespace and starts `weft proxy --dns-fds
    /// UDP,TCP`): checked to be a UDP socket and a listening TCP socket (else closed).
    ///
    /// # Safety
    /// `udp` and `tcp` must be open, distinct file descriptors that nothing else owns:
    /// from now on they are closed with the returned sockets.
    pub unsafe fn from_raw_fds(udp: std::os::fd::RawFd, tcp: std::os::fd::RawFd) -> std::io::Result<DnsSockets> {
        use std::os::fd::FromRawFd;
        // SAFETY: the caller's promise: open descriptors, owned by no one else.
        let (u, t) = unsafe { (socket2::Socket::from_raw_fd(udp), socket2::Socket::from_raw_fd(tcp)) };
        if u.r#type()? != socket2::Type::DGRAM {
            return Err(std::io::Error::other(format!("file descriptor {udp} is not a UDP socket")));
        }
        if t.r#type()? != socket2::Type::STREAM || !t.is_listener()? {
            return Err(std::io::Error::other(format!("file descriptor {tcp} is not a listening TCP socket")));
        }
        Ok(DnsSockets { udp: u.into(), tcp: t.into() })
    }

    /// The UDP socket's address (the one clients are told).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }
}

/// The first `nameserver` of /etc/resolv.conf (port 53).
pub fn system_upstream() -> Option<SocketAddr> {
    resolv_conf_nameserver(&std::fs::read_to_string("/etc/resolv.conf").ok()?)
}

/// The first usable `nameserver` line of a resolv.conf's text. (An IPv6 address with a
/// zone, `fe80::1%eth0`, is skipped: the zone would need an interface index.)
pub fn resolv_conf_nameserver(text: &str) -> Option<SocketAddr> {
    text.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        if words.next()? != "nameserver" {
            return None;
        }
        let ip: IpAddr = words.next()?.parse().ok()?;
        Some(SocketAddr::new(ip, 53))
    })
}

/// Whether forwarding to `upstream` would send queries back to the server on `local`.
fn is_self(upstream: SocketAddr, local: SocketAddr) -> bool {
    upstream.port() == local.port()
        && (upstream.ip() == local.ip() || (local.ip().is_unspecified() && (upstream.ip().is_loopback() || upstream.ip().is_unspecified())))
}

/// Starts serving `sockets` on a thread of its own (`weft-dns`, a one-thread runtime);
/// returns the address it answers on. `upstream`: where other names go (None: they get
/// SERVFAIL).
pub fn start(shared: &'static Shared, sockets: DnsSockets, upstream: Option<SocketAddr>) -> Result<SocketAddr, String> {
    let addr = sockets.local_addr().map_err(|e| format!("dns: {e}"))?;
    if let Some(up) = upstream {
        if is_self(up, addr) {
            return Err(format!("dns: the upstream resolver {up} is this server itself (give another with --dns-upstream)"));
        }
    }
    sockets.udp.set_nonblocking(true).map_err(|e| format!("dns: {e}"))?;
    sockets.tcp.set_nonblocking(true).map_err(|e| format!("dns: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("dns: {e}"))?;
    std::thread::Builder::new()
        .name("weft-dns".into())
        .spawn(move || {
            rt.block_on(async move {
                let udp = match tokio::net::UdpSocket::from_std(sockets.udp) {
                    Ok(s) => Arc::new(s),
                    Err(e) => return tracing::error!("dns: {e}"),
                };
                let tcp = match tokio::net::TcpListener::from_std(sockets.tcp) {
                    Ok(l) => l,
                    Err(e) => return tracing::error!("dns: {e}"),
                };
                let server = Arc::new(Server { shared, upstream, forwards: Arc::new(Semaphore::new(MAX_FORWARDS)) });
                tokio::spawn(serve_tcp(server.clone(), tcp));
                serve_udp(server, udp).await;
            })
        })
        .map_err(|e| format!("dns: cannot start its thread: {e}"))?;
    Ok(addr)
}

struct Server {
    shared: &'static Shared,
    upstream: Option<SocketAddr>,
    forwards: Arc<Semaphore>,
}

impl Server {
    /// What `raw` gets, from the live config's VIP table (one lock-free load).
    fn decide(&self, raw: &[u8], transport: Transport) -> Decision {
        let rt = self.shared.current.load();
        answer::decide(raw, &rt.vips, transport)
    }

    fn counters(&self) -> &weft_telemetry::Counters {
        &self.shared.metrics.counters
    }

    /// A forward may start now: the upstream and a slot, or why not.
    fn slot(&self) -> Result<(SocketAddr, OwnedSemaphorePermit), DnsFailure> {
        let up = self.upstream.ok_or(DnsFailure::NoUpstream)?;
        let permit = self.forwards.clone().try_acquire_owned().map_err(|_| DnsFailure::Overload)?;
        Ok((up, permit))
    }

    /// SERVFAIL for `query`, counted under `why`.
    fn fail(&self, query: &[u8], f: answer::Forward, why: DnsFailure) -> Vec<u8> {
        tracing::debug!("dns: forward failed: {}", why.as_str());
        self.counters().dns_failed(why);
        answer::question_reply(query, f.question_end, ResponseCode::ServFail, false)
    }

    /// Counts a decision: Ok(the reply to send, or none: dropped), or Err(the forward it asks for).
    fn settle(&self, d: Decision) -> Result<Option<Vec<u8>>, answer::Forward> {
        match d {
            Decision::Local(b) => {
                self.counters().dns(DnsResult::Local);
                Ok(Some(b))
            }
            Decision::Error(b, why) => {
                self.counters().dns_failed(why);
                Ok(Some(b))
            }
            Decision::Drop(why) => {
                self.counters().dns_failed(why);
                Ok(None)
            }
            Decision::Forward(f) => Err(f),
        }
    }

    /// On demand: a name the mesh has but the proxy has not asked for yet is asked for
    /// (bounded by the discovery timeout) and decided again; else forwarded.
    async fn forward_or_discover(
        &self,
        query: &[u8],
        f: answer::Forward,
        transport: Transport,
        slot: (SocketAddr, OwnedSemaphorePermit),
    ) -> Vec<u8> {
        if let Some(d) = &self.shared.discovery {
            if let Some(name) = answer::query_name(query).filter(|n| d.knows(n)) {
                if !matches!(d.discover(&name).await, crate::discovery::Discovered::Installed) {
                    return self.fail(query, f, DnsFailure::Discovery);
                }
                return match self.settle(self.decide(query, transport)) {
                    Ok(reply) => reply.unwrap_or_default(),
                    Err(f) => self.forward(query, f, transport, slot).await,
                };
            }
        }
        self.forward(query, f, transport, slot).await
    }

    /// Forwards `query` (`f` from [`answer::decide`]) over `transport` in `slot`; the
    /// answer for the client, or SERVFAIL.
    async fn forward(&self, query: &[u8], f: answer::Forward, transport: Transport, slot: (SocketAddr, OwnedSemaphorePermit)) -> Vec<u8> {
        let (up, _permit) = slot;
        let result = match transport {
            Transport::Udp => forward::udp(up, query, f).await,
            Transport::Tcp => forward::tcp(up, query, f).await,
        };
        match result {
            Ok(answer) => {
                self.counters().dns(DnsResult::Forwarded);
                answer
            }
            Err(why) => self.fail(query, f, why),
        }
    }
}

async fn serve_udp(server: Arc<Server>, udp: Arc<tokio::net::UdpSocket>) {
    // One byte more than the largest query: a datagram that fills it was too large.
    let mut buf = vec![0u8; MAX_QUERY + 1];
    loop {
        let (n, peer) = match udp.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // (An ICMP error from an earlier reply, or a transient failure: keep serving.)
                tracing::debug!("dns: udp receive: {e}");
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        let raw = &buf[..n];
        let reply = match server.settle(server.decide(raw, Transport::Udp)) {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(f) => match server.slot() {
                Err(why) => server.fail(raw, f, why),
                Ok(slot) => {
                    let (server, udp, query) = (server.clone(), udp.clone(), raw.to_vec());
                    tokio::spawn(async move {
                        let b = server.forward_or_discover(&query, f, Transport::Udp, slot).await;
                        if !b.is_empty() {
                            let _ = udp.send_to(&b, peer).await;
                        }
                    });
                    continue;
                }
            },
        };
        let _ = udp.send_to(&reply, peer).await;
    }
}

async fn serve_tcp(server: Arc<Server>, listener: tokio::net::TcpListener) {
    let slots = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                if let Some(pause) = crate::server::accept_backoff(&e) {
                    server.counters().accept_exhausted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(pause).await;
                }
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            server.counters().dns_failed(DnsFailure::ConnectionLimit);
            continue;
        };
        let server = server.clone();
        tokio::spawn(async move {
            tcp_connection(&server, stream).await;
            drop(slot);
        });
    }
}

/// Serves the queries of one TCP connection in turn until the client closes it, goes
/// idle, or sends a frame over the limit.
async fn tcp_connection(server: &Server, mut stream: tokio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
    loop {
        let mut len = [0u8; 2];
        if !matches!(tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await, Ok(Ok(_))) {
            return;
        }
        let len = usize::from(u16::from_be_bytes(len));
        if len > MAX_QUERY {
            server.counters().dns_failed(DnsFailure::TooLarge);
            return;
        }
        let mut query = vec![0u8; len];
        if !matches!(tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut query)).await, Ok(Ok(_))) {
            return;
        }
        let reply = match server.settle(server.decide(&query, Transport::Tcp)) {
            Ok(Some(b)) => b,
            Ok(None) => return,
            Err(f) => match server.slot() {
                Err(why) => server.fail(&query, f, why),
                Ok(slot) => server.forward_or_discover(&query, f, Transport::Tcp, slot).await,
            },
        };
        let mut frame = Vec::with_capacity(2 + reply.len());
        frame.extend_from_slice(&(reply.len().min(answer::MAX_TCP_MESSAGE) as u16).to_be_bytes());
        frame.extend_from_slice(&reply[..reply.len().min(answer::MAX_TCP_MESSAGE)]);
        if !matches!(tokio::time::timeout(TCP_IDLE, stream.write_all(&frame)).await, Ok(Ok(_))) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_usable_nameserver() {
        let text = "# generated\nsearch example.com\nnameserver fe80::1%eth0\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n";
        assert_eq!(resolv_conf_nameserver(text), Some("10.0.0.2:53".parse().unwrap()));
        assert_eq!(resolv_conf_nameserver("nameserver ::1\n"), Some("[::1]:53".parse().unwrap()));
        assert_eq!(resolv_conf_nameserver("options ndots:5\n"), None);
        assert_eq!(resolv_conf_nameserver("  nameserver\t127.0.0.53 # local\n"), Some("127.0.0.53:53".parse().unwrap()));
    }

    #[test]
    fn forwarding_to_itself_is_refused() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(is_self(a("127.0.0.1:15053"), a("127.0.0.1:15053")));
        assert!(is_self(a("127.0.0.1:15053"), a("0.0.0.0:15053")));
        assert!(!is_self(a("127.0.0.1:53"), a("127.0.0.1:15053")));
        assert!(!is_self(a("10.0.0.2:15053"), a("127.0.0.1:15053")));
    }

    #[test]
    fn both_sockets_on_one_port() {
        let s = DnsSockets::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(s.udp.local_addr().unwrap(), s.tcp.local_addr().unwrap());
    }
}
