//! Upstream endpoints in this process: each address maps to what a connection to it
//! meets — an HTTP service (hyper, h1 or h2c, on the far half of an in-memory duplex
//! stream), a raw stream handler, a refusal, or a connect that never completes. Every
//! connect attempt is recorded with its (simulated) time.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::DuplexStream;
use tokio::time::Instant;

use crate::cluster::Target;

/// Bytes either half of an in-memory connection buffers before its writer waits.
const PIPE: usize = 64 * 1024;

type Handler = Arc<dyn Fn(DuplexStream) + Send + Sync>;
type Hook = Arc<dyn Fn() + Send + Sync>;

/// The in-memory network: addresses → upstreams. Cheap to clone (shared); tests may
/// change an address's behaviour while the proxy runs.
#[derive(Clone, Default)]
pub struct Network {
    inner: Arc<Mutex<HashMap<SocketAddr, Entry>>>,
}

#[derive(Clone)]
enum Behaviour {
    Refuse,
    Blackhole,
    Accept(Handler),
}

struct Entry {
    behaviour: Behaviour,
    /// Called on every connect attempt, before the behaviour (a test's moment to act
    /// between two tries, say).
    hook: Option<Hook>,
    connects: Vec<Instant>,
}

impl Network {
    pub fn new() -> Network {
        Network::default()
    }

    /// `addr` serves HTTP (h1 and h2c) with `handler`, one request at a time per
    /// connection as hyper does, each connection on its own task.
    pub fn serve<F, Fut>(&self, addr: SocketAddr, handler: F)
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.raw(addr, move |io| {
            let handler = handler.clone();
            let svc = service_fn(move |req| {
                let fut = handler(req);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(io), svc).await;
            });
        });
    }

    /// `addr` accepts, and `handler` gets the upstream's end of each connection (to
    /// answer by hand: half a response, garbage, silence).
    pub fn raw(&self, addr: SocketAddr, handler: impl Fn(DuplexStream) + Send + Sync + 'static) {
        self.set(addr, Behaviour::Accept(Arc::new(handler)));
    }

    /// Connecting to `addr` is refused at once (nothing listens there).
    pub fn refuse(&self, addr: SocketAddr) {
        self.set(addr, Behaviour::Refuse);
    }

    /// Connecting to `addr` never completes (a host that drops SYNs): only the
    /// connect timeout ends it.
    pub fn blackhole(&self, addr: SocketAddr) {
        self.set(addr, Behaviour::Blackhole);
    }

    /// Runs `hook` on every connect attempt to `addr` (already given a behaviour).
    pub fn on_connect(&self, addr: SocketAddr, hook: impl Fn() + Send + Sync + 'static) {
        if let Some(e) = self.lock().get_mut(&addr) {
            e.hook = Some(Arc::new(hook));
        }
    }

    /// When each connect attempt to `addr` was made (the tokio clock).
    pub fn connects(&self, addr: SocketAddr) -> Vec<Instant> {
        self.lock().get(&addr).map(|e| e.connects.clone()).unwrap_or_default()
    }

    fn set(&self, addr: SocketAddr, behaviour: Behaviour) {
        let mut map = self.lock();
        let e = map.entry(addr).or_insert_with(|| Entry { behaviour: Behaviour::Refuse, hook: None, connects: Vec::new() });
        e.behaviour = behaviour;
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SocketAddr, Entry>> {
        // A test that panicked while holding it has failed already.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection to `target`: the proxy's end of a fresh duplex stream.
    pub(crate) async fn connect(&self, target: &Target) -> io::Result<DuplexStream> {
        let Target::Addr(addr) = target else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "the in-memory network has no DNS"));
        };
        let (behaviour, hook) = {
            let mut map = self.lock();
            let Some(e) = map.get_mut(addr) else {
                return Err(io::Error::new(io::ErrorKind::ConnectionRefused, format!("nothing at {addr} in the in-memory network")));
            };
            e.connects.push(Instant::now());
            (e.behaviour.clone(), e.hook.clone())
        };
        if let Some(hook) = hook {
            hook();
        }
        match behaviour {
            Behaviour::Refuse => Err(io::Error::new(io::ErrorKind::ConnectionRefused, "Connection refused (in-memory)")),
            Behaviour::Blackhole => std::future::pending().await,
            Behaviour::Accept(handler) => {
                let (ours, theirs) = tokio::io::duplex(PIPE);
                handler(theirs);
                Ok(ours)
            }
        }
    }
}
