//! `weft run --replicas MIN..MAX`: MIN instances started at once, each an [`instance`]
//! (its own sidecar, registration, restarts) in its own task; every second their
//! sidecars are read ([`sample`]) and the [`scaler`] says how many to run. A step up
//! starts the next instances; a step down stops the newest the graceful way (deregister,
//! the proxies' acknowledgement, drain, stop). No step is taken while an instance is
//! starting, restarting or stopping. SIGTERM stops them all that way; an instance that
//! ends by itself (its app's success, a crash loop, its sidecar gone) ends the rest too.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::instance::{self, stopped};
use super::sample::{self, Sampler, SAMPLE_EVERY};
use super::scaler::Scaler;
use super::scaling::{instance_args, policy, target};
use super::status::{AppStatus, FleetStatus, Page};
use super::RunArgs;

/// One instance running: how to stop it, and what it tells.
struct Running {
    index: usize,
    stop: watch::Sender<bool>,
    status: Arc<AppStatus>,
    admin: SocketAddr,
    /// Asked to stop (a step down): no longer counted.
    stopping: bool,
}

struct Fleet {
    a: RunArgs,
    running: Vec<Running>,
    tasks: JoinSet<(usize, Result<(), String>)>,
    board: Arc<FleetStatus>,
}

pub async fn supervise(a: RunArgs) -> Result<(), String> {
    let policy = policy(&a)?;
    // (Under --intercept each instance's port is in its own namespace.)
    for i in (0..policy.max).filter(|_| !a.intercept) {
        let port = usize::from(a.port) + i;
        if std::net::TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port as u16)), std::time::Duration::from_millis(200))
            .is_ok()
        {
            return Err(format!("port {port} (instance {i}) is already taken on 127.0.0.1: something else listens there"));
        }
    }
    let board = Arc::new(FleetStatus::default());
    if let Some(addr) = a.metrics {
        super::status::serve(addr, Page::Fleet(board.clone())).await?;
    }
    let mut stop = super::stop_on_signals()?;
    let mut fleet = Fleet { a, running: Vec::new(), tasks: JoinSet::new(), board };
    for _ in 0..policy.min {
        fleet.start_next()?;
    }
    fleet.board.desired.store(policy.min, Ordering::Relaxed);
    let mut scaler = Scaler::new(policy);
    let mut sampler = Sampler::default();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return fleet.stop_all(Ok(())).await,
            Some(ended) = fleet.tasks.join_next() => {
                let (index, result) = match ended {
                    Ok(ended) => ended,
                    Err(e) => return fleet.stop_all(Err(format!("an instance's task failed: {e}"))).await,
                };
                if !fleet.ended(index) {
                    let outcome = result.map_err(|e| format!("instance {index}: {e}"));
                    eprintln!("weft run: instance {index} ended by itself: stopping the others");
                    return fleet.stop_all(outcome).await;
                }
            }
            _ = tick.tick() => {
                if let Err(e) = fleet.step(&mut scaler, &mut sampler).await {
                    return fleet.stop_all(Err(e)).await;
                }
            }
        }
    }
}

impl Fleet {
    /// Instances counted: running and not asked to stop.
    fn current(&self) -> usize {
        self.running.iter().filter(|r| !r.stopping).count()
    }

    /// Whether a step may be taken: every counted instance up, none stopping.
    fn settled(&self) -> bool {
        self.running.iter().all(|r| !r.stopping && r.status.up.load(Ordering::Relaxed))
    }

    /// Starts the next instance (index: the count running, since the newest go first).
    fn start_next(&mut self) -> Result<(), String> {
        let index = self.running.len();
        let admin = instance::free_addr()?;
        let args = instance_args(&self.a, index, admin);
        let (tx, mut rx) = watch::channel(false);
        let status = AppStatus::new();
        let s = status.clone();
        eprintln!("weft run: instance {index} starting on port {}", args.port);
        self.tasks.spawn(async move { (index, instance::run(&args, &s, &mut rx).await) });
        self.running.push(Running { index, stop: tx, status, admin, stopping: false });
        self.publish();
        Ok(())
    }

    /// An instance's task ended: whether it was asked to (a step down).
    fn ended(&mut self, index: usize) -> bool {
        let asked = self.running.iter().any(|r| r.index == index && r.stopping);
        self.running.retain(|r| r.index != index);
        self.publish();
        asked
    }

    fn publish(&self) {
        self.board.replicas.store(self.current(), Ordering::Relaxed);
        let list =
            self.running.iter().filter(|r| !r.stopping).map(|r| (r.index, self.a.port.saturating_add(r.index as u16), r.status.clone()));
        if let Ok(mut l) = self.board.instances.lock() {
            *l = list.collect();
        }
    }

    /// One sample: what the instances did, the recommendation, and a step when settled.
    async fn step(&mut self, scaler: &mut Scaler, sampler: &mut Sampler) -> Result<(), String> {
        let counted: Vec<(usize, SocketAddr)> = self.running.iter().filter(|r| !r.stopping).map(|r| (r.index, r.admin)).collect();
        // (All at once: one slow sidecar costs the step a second at most, not one each.)
        let mut reads = JoinSet::new();
        for (index, admin) in counted.clone() {
            reads.spawn(async move { sample::fetch(admin).await.map(|c| (index, Instant::now(), c)) });
        }
        let mut samples = Vec::new();
        while let Some(read) = reads.join_next().await {
            samples.extend(read.ok().flatten());
        }
        let live: Vec<usize> = counted.iter().map(|(i, _)| *i).collect();
        let (Some(observed), Some((goal, p95))) = (sampler.observe(samples, &live), target(&self.a)) else { return Ok(()) };
        let current = self.current();
        let value = if p95 { observed.p95_ms.unwrap_or(0.0) } else { observed.concurrency / current.max(1) as f64 };
        let desired = scaler.recommend(Instant::now(), current, value, goal);
        self.board.desired.store(desired, Ordering::Relaxed);
        if desired == current || !self.settled() {
            return Ok(());
        }
        eprintln!("weft run: {current} → {desired} instances (observed {value:.2}, target {goal})");
        while self.current() < desired {
            self.start_next()?;
        }
        while self.current() > desired {
            self.stop_newest();
        }
        Ok(())
    }

    /// Asks the newest counted instance to stop; its task ends once it has.
    fn stop_newest(&mut self) {
        if let Some(r) = self.running.iter_mut().filter(|r| !r.stopping).max_by_key(|r| r.index) {
            r.stopping = true;
            let _ = r.stop.send(true);
            eprintln!("weft run: instance {} stopping", r.index);
        }
        self.publish();
    }

    /// Stops every instance (gracefully, together) and waits for them; then `outcome`.
    async fn stop_all(mut self, outcome: Result<(), String>) -> Result<(), String> {
        for r in &mut self.running {
            r.stopping = true;
            let _ = r.stop.send(true);
        }
        let mut first_error = None;
        while let Some(ended) = self.tasks.join_next().await {
            if let Ok((index, Err(e))) = ended {
                first_error.get_or_insert(format!("instance {index}: {e}"));
            }
        }
        match (outcome, first_error) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(e)) => Err(e),
            (Ok(()), None) => Ok(()),
        }
    }
}
