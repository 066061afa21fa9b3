//! Running the load: worker threads, each a single-threaded tokio runtime with
//! its share of the connections, in a closed or an open loop.
//!
//! Closed loop: every connection (or h2 stream) sends its next request as soon
//! as the last one is answered; latency runs from the actual send.
//! Open loop: a dispatcher issues requests on a fixed schedule (request k at
//! `start + k / rate`) to whichever connection is free; latency runs from the
//! *intended* send time, so a stalled server's backlog shows in the tail
//! instead of silently lowering the rate (coordinated omission).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::h1::{Answer, H1Conn};
use crate::h2;
use crate::pacer::Pacer;
use crate::record::{ErrorKind, Recorder, Second};
use crate::target::{RequestSpec, Target};

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub target: Target,
    pub request: RequestSpec,
    /// TCP connections in all.
    pub connections: usize,
    /// h2c instead of HTTP/1.1.
    pub h2: bool,
    /// Concurrent streams per h2 connection.
    pub streams: usize,
    pub threads: usize,
    /// Stop after this many requests…
    pub requests: Option<u64>,
    /// …or after this long (whichever comes first).
    pub duration: Option<Duration>,
    /// Open loop at this many requests per second; `None`: closed loop.
    pub rate: Option<f64>,
    /// The longest a request may take, from its send to its last byte.
    pub timeout: Duration,
}

impl LoadSpec {
    pub fn mode(&self) -> &'static str {
        if self.rate.is_some() {
            "open"
        } else {
            "closed"
        }
    }
}

/// A run that could not start.
#[derive(Debug)]
pub struct RunError(pub String);

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RunError {}

/// What a run measured, merged over its threads.
pub struct Outcome {
    pub recorder: Recorder,
    /// The per-second series (the last second may be partial).
    pub seconds: Vec<Second>,
    /// From the first scheduled send to the last response.
    pub elapsed: Duration,
}

/// Runs the load; `on_second` sees each completed second of the series as it happens.
pub fn run(spec: &LoadSpec, on_second: &mut dyn FnMut(&Second, &LoadSpec)) -> Result<Outcome, RunError> {
    spec.request.check().map_err(RunError)?;
    if spec.h2 {
        h2::Template::new(&spec.request, &spec.target).map_err(RunError)?;
    }
    let addr = resolve(&spec.target)?;
    // Fail fast, with the reason, when nothing listens there.
    std::net::TcpStream::connect_timeout(&addr, spec.timeout.min(Duration::from_secs(5)))
        .map_err(|e| RunError(format!("cannot connect to {} ({addr}): {e}", spec.target.authority)))?;

    let threads = spec.threads.clamp(1, spec.connections.max(1));
    let remaining = spec.requests.map(|n| Arc::new(AtomicU64::new(n)));
    let barrier = Arc::new(Barrier::new(threads));
    let start = Arc::new(OnceLock::new());
    let (tx, rx) = mpsc::channel::<Second>();

    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for t in 0..threads {
            let conns = spec.connections / threads + usize::from(t < spec.connections % threads);
            let job = Job {
                spec: spec.clone(),
                addr,
                index: t,
                threads,
                connections: conns,
                remaining: remaining.clone(),
                barrier: barrier.clone(),
                start: start.clone(),
                seconds: tx.clone(),
            };
            handles.push(scope.spawn(move || job.run()));
        }
        drop(tx);
        let mut pending: BTreeMap<u64, (Second, usize)> = BTreeMap::new();
        let mut series = Vec::new();
        for second in rx {
            let entry = pending.entry(second.index).or_insert_with(|| (Second::new(second.index), 0));
            entry.0.merge(&second);
            entry.1 += 1;
            while let Some(first) = pending.first_entry() {
                if first.get().1 < threads {
                    break;
                }
                let (done, _) = first.remove();
                on_second(&done, spec);
                series.push(done);
            }
        }
        // Seconds that not every thread reported (the partial last one).
        for (_, (second, _)) in pending {
            series.push(second);
        }
        let mut recorder = Recorder::default();
        let mut ended: Option<Instant> = None;
        for h in handles {
            let (rec, end) = h.join().map_err(|_| RunError("a load thread failed".into()))??;
            recorder.merge(&rec);
            ended = Some(ended.map_or(end, |e: Instant| e.max(end)));
        }
        let begun = start.get().copied().unwrap_or_else(Instant::now);
        let elapsed = ended.map_or(Duration::ZERO, |e| e.saturating_duration_since(begun));
        Ok(Outcome { recorder, seconds: series, elapsed })
    })
}

fn resolve(target: &Target) -> Result<SocketAddr, RunError> {
    (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| RunError(format!("cannot resolve {}: {e}", target.host)))?
        .next()
        .ok_or_else(|| RunError(format!("cannot resolve {}: no addresses", target.host)))
}

/// One load thread's share of the run.
struct Job {
    spec: LoadSpec,
    addr: SocketAddr,
    index: usize,
    threads: usize,
    connections: usize,
    remaining: Option<Arc<AtomicU64>>,
    barrier: Arc<Barrier>,
    start: Arc<OnceLock<Instant>>,
    seconds: mpsc::Sender<Second>,
}

impl Job {
    fn run(self) -> Result<(Recorder, Instant), RunError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| RunError(format!("cannot start a runtime: {e}")))?;
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, self.drive())
    }

    async fn drive(self) -> Result<(Recorder, Instant), RunError> {
        let spec = &self.spec;
        let ctx = Rc::new(Ctx {
            rec: RefCell::new(Recorder::default()),
            queue: RefCell::new(VecDeque::new()),
            ready: Notify::new(),
            dispatching: Cell::new(spec.rate.is_some()),
            open: spec.rate.is_some(),
            remaining: self.remaining.clone(),
            deadline: Cell::new(None),
            grace: spec.timeout,
            timeout: spec.timeout,
        });

        // Connections open before the clock starts, as wrk's do.
        let mut h1_conns = Vec::new();
        let mut h2_conns = Vec::new();
        for _ in 0..self.connections {
            let began = Instant::now();
            if spec.h2 {
                let c = tokio::time::timeout(spec.timeout, h2::connect(self.addr)).await.unwrap_or(Err(ErrorKind::Connect)).ok();
                h2_conns.push(c);
            } else {
                let c = tokio::time::timeout(spec.timeout, H1Conn::connect(self.addr)).await.ok().and_then(Result::ok);
                h1_conns.push(c);
            }
            if h1_conns.last().is_some_and(Option::is_some) || h2_conns.last().is_some_and(Option::is_some) {
                ctx.rec.borrow_mut().connected(began.elapsed().as_nanos() as u64);
            }
        }
        // Every thread starts together.
        let barrier = self.barrier.clone();
        tokio::task::spawn_blocking(move || barrier.wait()).await.map_err(|_| RunError("a load thread failed".into()))?;
        let start = *self.start.get_or_init(Instant::now);
        ctx.deadline.set(spec.duration.map(|d| start + d));

        let ticker = tokio::task::spawn_local(seconds(ctx.clone(), start, self.seconds.clone()));
        if let Some(rate) = spec.rate {
            tokio::task::spawn_local(dispatch(ctx.clone(), start, rate, self.index as u64, self.threads as u64, spec.requests));
        }
        let mut workers = Vec::new();
        if spec.h2 {
            let template = Rc::new(h2::Template::new(&spec.request, &spec.target).map_err(RunError)?);
            for conn in h2_conns {
                workers.push(tokio::task::spawn_local(h2_connection(ctx.clone(), self.addr, template.clone(), spec.streams, conn)));
            }
        } else {
            let request: Rc<[u8]> = spec.request.encode_h1(&spec.target).into();
            let is_head = spec.request.method == "HEAD";
            for conn in h1_conns {
                workers.push(tokio::task::spawn_local(h1_worker(ctx.clone(), self.addr, request.clone(), is_head, conn)));
            }
        }
        for w in workers {
            let _ = w.await;
        }
        let ended = Instant::now();
        ticker.abort();
        let mut rec = ctx.rec.take();
        let last = rec.take_second();
        if last.responses + last.errors > 0 {
            let _ = self.seconds.send(last);
        }
        Ok((rec, ended))
    }
}

/// The state a thread's tasks share (one thread: no locks).
struct Ctx {
    rec: RefCell<Recorder>,
    /// Open loop: requests issued by the schedule and not yet taken.
    queue: RefCell<VecDeque<Scheduled>>,
    ready: Notify,
    dispatching: Cell<bool>,
    /// Open loop: requests come only from the dispatcher's schedule.
    open: bool,
    /// Requests left to send, over all threads (`-n`).
    remaining: Option<Arc<AtomicU64>>,
    deadline: Cell<Option<Instant>>,
    /// Open loop: how long after the deadline queued requests may still go out.
    grace: Duration,
    timeout: Duration,
}

/// An open-loop request: when the schedule wanted it sent, and when the dispatcher
/// actually released it (later only by the load generator's own timer lateness).
#[derive(Clone, Copy)]
struct Scheduled {
    at: Instant,
    released: Instant,
}

impl Scheduled {
    /// Latency runs from here: the schedule's time, unless the load generator itself
    /// released the request late (a stalled server never delays the release, so its
    /// backlog still counts in full), and never before the request actually left.
    fn start(self, sent: Instant) -> Instant {
        self.at.max(self.released).min(sent)
    }
}

/// A request to send: `Some` in the open loop.
type Ticket = Option<Scheduled>;

impl Ctx {
    async fn next(&self) -> Option<Ticket> {
        if self.open {
            return self.next_scheduled().await;
        }
        if self.deadline.get().is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        if let Some(left) = &self.remaining {
            if left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_err() {
                return None;
            }
        }
        Some(None)
    }

    async fn next_scheduled(&self) -> Option<Ticket> {
        loop {
            let next = self.queue.borrow_mut().pop_front();
            if let Some(s) = next {
                if self.deadline.get().is_some_and(|d| Instant::now() > d + self.grace) {
                    // The run is over; what is still queued was never sent.
                    let mut queue = self.queue.borrow_mut();
                    self.rec.borrow_mut().unsent += 1 + queue.len() as u64;
                    queue.clear();
                    return None;
                }
                return Some(Some(s));
            }
            if !self.dispatching.get() {
                return None;
            }
            self.ready.notified().await;
        }
    }

    /// Records a finished request; `ticket` for the open loop's send delay (against the schedule).
    fn record(&self, result: Result<Answer, ErrorKind>, ticket: Ticket, from: Instant, sent: Instant) -> bool {
        let mut rec = self.rec.borrow_mut();
        if let Some(s) = ticket {
            rec.send_delay.saturating_record(sent.saturating_duration_since(s.at).as_nanos() as u64);
        }
        match result {
            Ok(a) => {
                let done = Instant::now();
                rec.response(a.status, done.duration_since(from).as_nanos() as u64, a.first_byte.duration_since(sent).as_nanos() as u64);
                a.reusable
            }
            Err(kind) => {
                rec.error(kind);
                false
            }
        }
    }
}

/// Issues the open loop's schedule: this thread's requests are k = index, index + threads, …
async fn dispatch(ctx: Rc<Ctx>, start: Instant, rate: f64, index: u64, threads: u64, requests: Option<u64>) {
    let pacer = Pacer::new().ok();
    let mut k = index;
    loop {
        if requests.is_some_and(|n| k >= n) {
            break;
        }
        let at = start + Duration::from_secs_f64(k as f64 / rate);
        if ctx.deadline.get().is_some_and(|d| at >= d) {
            break;
        }
        if at > Instant::now() {
            match &pacer {
                Some(p) if p.until(at).await.is_ok() => {}
                _ => tokio::time::sleep_until(at.into()).await,
            }
        }
        ctx.queue.borrow_mut().push_back(Scheduled { at, released: Instant::now() });
        ctx.ready.notify_one();
        k += threads;
    }
    ctx.dispatching.set(false);
    ctx.ready.notify_waiters();
}

/// Sends each second of the series to the main thread.
async fn seconds(ctx: Rc<Ctx>, start: Instant, tx: mpsc::Sender<Second>) {
    for s in 1u64.. {
        tokio::time::sleep_until((start + Duration::from_secs(s)).into()).await;
        let second = ctx.rec.borrow_mut().take_second();
        if tx.send(second).is_err() {
            return;
        }
    }
}

/// Pause after a failed connect, so a dead target is not hammered in a tight loop.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

async fn h1_worker(ctx: Rc<Ctx>, addr: SocketAddr, request: Rc<[u8]>, is_head: bool, mut conn: Option<H1Conn>) {
    while let Some(ticket) = ctx.next().await {
        let began = Instant::now();
        let c = match conn.as_mut() {
            Some(c) => c,
            None => {
                let began = Instant::now();
                match tokio::time::timeout(ctx.timeout, H1Conn::connect(addr)).await {
                    Ok(Ok(c)) => {
                        ctx.rec.borrow_mut().connected(began.elapsed().as_nanos() as u64);
                        conn.insert(c)
                    }
                    _ => {
                        ctx.rec.borrow_mut().error(ErrorKind::Connect);
                        tokio::time::sleep(RECONNECT_PAUSE).await;
                        continue;
                    }
                }
            }
        };
        let sent = Instant::now();
        let result = tokio::time::timeout(ctx.timeout, c.exchange(&request, is_head)).await.unwrap_or(Err(ErrorKind::Timeout));
        let from = ticket.map_or(began, |s| s.start(sent).min(began));
        if !ctx.record(result, ticket, from, sent) {
            conn = None;
        }
    }
}

async fn h2_connection(ctx: Rc<Ctx>, addr: SocketAddr, template: Rc<h2::Template>, streams: usize, mut conn: Option<h2::Sender>) {
    loop {
        let began = Instant::now();
        let sender = match conn.take() {
            Some(s) => s,
            None => match tokio::time::timeout(ctx.timeout, h2::connect(addr)).await {
                Ok(Ok(s)) => {
                    ctx.rec.borrow_mut().connected(began.elapsed().as_nanos() as u64);
                    s
                }
                _ => {
                    // A failed connect costs one request, so a dead target ends the run.
                    if ctx.next().await.is_none() {
                        return;
                    }
                    ctx.rec.borrow_mut().error(ErrorKind::Connect);
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
            },
        };
        let tasks: Vec<_> =
            (0..streams).map(|_| tokio::task::spawn_local(h2_stream(ctx.clone(), sender.clone(), template.clone()))).collect();
        let mut lost = false;
        for t in tasks {
            lost |= t.await.unwrap_or(false);
        }
        if !lost {
            return;
        }
    }
}

/// One stream slot of an h2 connection; returns true when the connection died under it.
async fn h2_stream(ctx: Rc<Ctx>, mut tx: h2::Sender, template: Rc<h2::Template>) -> bool {
    while let Some(ticket) = ctx.next().await {
        let sent = Instant::now();
        let result = tokio::time::timeout(ctx.timeout, h2::exchange(&mut tx, &template)).await.unwrap_or(Err(ErrorKind::Timeout));
        ctx.record(result, ticket, ticket.map_or(sent, |s| s.start(sent)), sent);
        if tx.is_closed() {
            return true;
        }
    }
    false
}
