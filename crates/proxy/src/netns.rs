//! Sockets in another network namespace (Linux): transparent interception
//! (`weft run --intercept`) puts the app in a namespace of its own while the sidecar
//! stays in the machine's. A socket belongs to the namespace of the thread that made it,
//! for its whole life, whichever thread uses it afterwards; so a [`NetNs`] is one thread
//! parked in the namespace that makes sockets on request, and everything else (bind,
//! listen, connect, accept, reads and writes) happens on the caller's threads as usual.
//! The sidecar opens its outbound listener, its DNS sockets and its connections to the
//! app this way; `weft run` its readiness probes.
//!
//! A thread can enter a namespace (`setns`) but, without privilege in the machine's own
//! user namespace, never come back: hence one thread that stays, rather than a switch
//! around each `socket()`. Making a socket costs a channel round trip (a few
//! microseconds): listeners are made once, and connections to the app are pooled.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use socket2::{Domain, Protocol, Socket, Type};

type Reply = mpsc::SyncSender<io::Result<Socket>>;

/// A thread in a network namespace, making sockets there.
pub struct NetNs {
    /// Requests: the socket's domain and type, and where to answer.
    ask: mpsc::Sender<(Domain, Type, Reply)>,
    /// `/proc/<pid>/task/<tid>/ns/net`: how another process enters the same namespace.
    path: PathBuf,
}

impl NetNs {
    /// Enters the namespace at `path` (e.g. `/proc/PID/task/TID/ns/net`) on a new thread.
    /// Needs CAP_SYS_ADMIN over the namespace (root, or the user namespace that owns it).
    pub fn enter(path: &Path) -> io::Result<NetNs> {
        let file = File::open(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Self::start(move || {
            // SAFETY: setns(2) on an open namespace file, for this thread only.
            match unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } {
                0 => Ok(()),
                _ => Err(io::Error::last_os_error()),
            }
        })
    }

    /// A new, empty network namespace (its own loopback, down), made on a new thread;
    /// `setup` then runs on that thread, inside it: what it starts (`ip`, `nft`) runs
    /// in the namespace too. Needs CAP_SYS_ADMIN (root, or a user namespace of one's own).
    pub fn create(setup: impl FnOnce() -> io::Result<()> + Send + 'static) -> io::Result<NetNs> {
        Self::start(move || {
            // SAFETY: unshare(2) of this thread's network namespace only.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            setup()
        })
    }

    fn start(enter: impl FnOnce() -> io::Result<()> + Send + 'static) -> io::Result<NetNs> {
        let (ask, requests) = mpsc::channel::<(Domain, Type, Reply)>();
        let (entered, started) = mpsc::sync_channel(1);
        std::thread::Builder::new().name("weft-netns".into()).spawn(move || {
            // SAFETY: gettid(2) has no preconditions.
            let tid = unsafe { libc::gettid() };
            let path = PathBuf::from(format!("/proc/{}/task/{tid}/ns/net", std::process::id()));
            let ok = enter();
            let failed = ok.is_err();
            let _ = entered.send(ok.map(|()| path));
            if failed {
                return;
            }
            // Until every NetNs handle is gone (the sender dropped).
            for (domain, ty, reply) in requests {
                let _ = reply.send(Socket::new(domain, ty, Some(if ty == Type::DGRAM { Protocol::UDP } else { Protocol::TCP })));
            }
        })?;
        let path = started.recv().map_err(|_| io::Error::other("the namespace thread ended"))??;
        Ok(NetNs { ask, path })
    }

    /// A new socket in the namespace (TCP for `Type::STREAM`, UDP for `Type::DGRAM`).
    pub fn socket(&self, domain: Domain, ty: Type) -> io::Result<Socket> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.ask.send((domain, ty, reply)).map_err(|_| io::Error::other("the namespace thread ended"))?;
        answer.recv().map_err(|_| io::Error::other("the namespace thread ended"))?
    }

    /// Where another process (or thread) finds the namespace.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A TCP connection from inside the namespace to `addr` (its loopback is the
    /// namespace's own).
    pub async fn connect(&self, addr: std::net::SocketAddr) -> io::Result<tokio::net::TcpStream> {
        let s = self.socket(Domain::for_address(addr), Type::STREAM)?;
        s.set_nonblocking(true)?;
        let socket = tokio::net::TcpSocket::from_std_stream(s.into());
        socket.connect(addr).await
    }
}

/// Binds `addr` in `ns` (or here when `None`) with `SO_REUSEPORT`, listening.
pub fn listener(ns: Option<&NetNs>, addr: std::net::SocketAddr) -> io::Result<std::net::TcpListener> {
    let domain = Domain::for_address(addr);
    let s = match ns {
        Some(ns) => ns.socket(domain, Type::STREAM)?,
        None => Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?,
    };
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nodelay(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// The destination a redirected connection was sent to before the namespace's rules
/// turned it to our listener (`SO_ORIGINAL_DST`, `IP6T_SO_ORIGINAL_DST`); `None` for a
/// connection made to the listener itself.
pub fn original_destination(stream: &tokio::net::TcpStream) -> Option<std::net::SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let local = stream.local_addr().ok()?;
    let orig = match local {
        std::net::SocketAddr::V4(_) => sock.original_dst().ok()?,
        std::net::SocketAddr::V6(_) => sock.original_dst_ipv6().ok()?,
    };
    let orig = orig.as_socket()?;
    (orig != local).then_some(orig)
}
