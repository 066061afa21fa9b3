//! `weft bench-control-plane`: push propagation to many proxy streams, simulated in
//! one process. Each simulated proxy keeps one HTTP/1.1 connection and does what
//! `weft proxy --control-plane` does on the wire — long-poll `/v1/watch`, then ACK —
//! without compiling the mesh. Between rounds the command applies a changed
//! DestinationRule (through the API, as `weft apply` does) and records, for every
//! stream, the time from the apply's answer to the new revision's arrival and to its
//! ACK being answered.
//!
//! With `--churn RATE` it measures endpoint churn instead: RATE registrations and
//! deregistrations a second for `--duration`, sent on schedule over 16 connections
//! into services named by `--churn-pattern` (`{}` is a number below
//! `--churn-services`), and for every change and every stream the time from the
//! change's answer to the stream holding a revision at least as new.

use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

#[derive(clap::Args)]
pub struct CpBenchArgs {
    /// The control plane (its store gets a ServiceEntry and DestinationRule `bench-propagation`).
    #[arg(long, default_value = crate::ctl::DEFAULT_SERVER)]
    pub server: String,
    /// Simulated proxy streams.
    #[arg(long, default_value_t = 1000)]
    pub proxies: usize,
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    /// Endpoint changes a second (registrations and deregistrations); 0: measure applies.
    #[arg(long, default_value_t = 0)]
    pub churn: u32,
    /// How long to churn, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// The services churned: `{}` is replaced by a number below --churn-services.
    #[arg(long, default_value = "bench-churn-{}")]
    pub churn_pattern: String,
    #[arg(long, default_value_t = 100)]
    pub churn_services: usize,
}

pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

pub async fn connect(authority: &str) -> Result<Sender, String> {
    let s = tokio::net::TcpStream::connect(authority).await.map_err(|e| format!("connect {authority}: {e}"))?;
    let _ = s.set_nodelay(true);
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.map_err(|e| e.to_string())?;
    tokio::task::spawn_local(conn);
    Ok(tx)
}

pub async fn send(tx: &mut Sender, method: &str, path: &str, body: Bytes) -> Result<(u16, http::HeaderMap, Bytes), String> {
    tx.ready().await.map_err(|e| e.to_string())?;
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "cp")
        .header("x-weft-client", "bench")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let (parts, b) = resp.into_parts();
    let b = b.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((parts.status.as_u16(), parts.headers, b))
}

/// Per stream: (revision, received at, ACK answered at).
pub type Seen = Rc<RefCell<Vec<(u64, Instant, Instant)>>>;
/// Per stream: every (revision, received at, bytes), for churn.
pub type Log = Rc<RefCell<Vec<Vec<(u64, Instant, usize)>>>>;

async fn stream(authority: String, i: usize, seen: Seen, log: Log) -> Result<(), String> {
    let mut tx = connect(&authority).await?;
    let mut rev = 0u64;
    loop {
        let (status, headers, body) = send(&mut tx, "GET", &format!("/v1/watch?node=sim-{i}&since={rev}&wait=20000"), Bytes::new()).await?;
        if status != 200 {
            continue;
        }
        let got = Instant::now();
        rev = headers.get("x-weft-revision").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(rev);
        log.borrow_mut()[i].push((rev, got, body.len()));
        send(&mut tx, "POST", &format!("/v1/ack?node=sim-{i}&revision={rev}"), Bytes::new()).await?;
        seen.borrow_mut()[i] = (rev, got, Instant::now());
    }
}

fn docs(round: usize) -> String {
    let lb = if round % 2 == 1 { "ROUND_ROBIN" } else { "RANDOM" };
    let files = serde_json::json!({"files": [{"name": "bench.yaml", "text": format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: bench-propagation}}\nspec:\n  hosts: [bench-propagation]\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{http: 9}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: bench-propagation}}\nspec:\n  host: bench-propagation\n  trafficPolicy: {{loadBalancer: {{simple: {lb}}}, connectionPool: {{http: {{maxRetries: {}}}}}}}\n",
        round + 3
    )}]});
    files.to_string()
}

pub fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((p / 100.0 * v.len() as f64) as usize).min(v.len() - 1)]
}

pub fn run(a: CpBenchArgs) -> ExitCode {
    let Some(authority) = a.server.strip_prefix("http://").map(|s| s.trim_end_matches('/').to_owned()) else {
        eprintln!("error: --server must be an http:// URL");
        return ExitCode::FAILURE;
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    let result: Result<(), String> = local.block_on(&rt, async move {
        let mut admin = connect(&authority).await?;
        let (status, _, body) = send(&mut admin, "POST", "/v1/apply", Bytes::from(docs(0))).await?;
        if status != 200 {
            return Err(format!("apply: {status} {}", String::from_utf8_lossy(&body)));
        }
        let seen: Seen = Rc::new(RefCell::new(vec![(0, Instant::now(), Instant::now()); a.proxies]));
        let log: Log = Rc::new(RefCell::new(vec![Vec::new(); a.proxies]));
        for i in 0..a.proxies {
            let (auth, s, l) = (authority.clone(), seen.clone(), log.clone());
            tokio::task::spawn_local(async move {
                if let Err(e) = stream(auth, i, s, l).await {
                    eprintln!("stream {i}: {e}");
                }
            });
        }
        let base = current(&mut admin).await?;
        wait_all(&seen, base, Duration::from_secs(60)).await?;
        // Let every stream park in its next watch.
        tokio::time::sleep(Duration::from_millis(500)).await;
        if a.churn > 0 {
            return crate::cpchurn::run(&authority, &a, &seen, &log).await;
        }
        let (mut recv, mut acked) = (Vec::new(), Vec::new());
        for round in 1..=a.rounds {
            let (status, _, body) = send(&mut admin, "POST", "/v1/apply", Bytes::from(docs(round))).await?;
            let applied = Instant::now();
            if status != 200 {
                return Err(format!("apply: {status} {}", String::from_utf8_lossy(&body)));
            }
            let rev: u64 = serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| v["revision"].as_u64()).unwrap_or(0);
            wait_all(&seen, rev, Duration::from_secs(30)).await?;
            for (_, got, ack) in seen.borrow().iter() {
                recv.push(got.saturating_duration_since(applied).as_secs_f64() * 1e3);
                acked.push(ack.saturating_duration_since(applied).as_secs_f64() * 1e3);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        println!("{} streams x {} applies, from the apply's answer", a.proxies, a.rounds);
        println!(
            "  to the new revision received: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            pct(&mut recv, 50.0),
            pct(&mut recv, 99.0),
            pct(&mut recv, 100.0)
        );
        println!(
            "  to its ACK answered:          p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            pct(&mut acked, 50.0),
            pct(&mut acked, 99.0),
            pct(&mut acked, 100.0)
        );
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn current(admin: &mut Sender) -> Result<u64, String> {
    let (_, _, body) = send(admin, "GET", "/v1/history", Bytes::new()).await?;
    Ok(serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| v["revision"].as_u64()).unwrap_or(0))
}

pub async fn wait_all(seen: &Seen, rev: u64, limit: Duration) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let behind = seen.borrow().iter().filter(|s| s.0 < rev).count();
        if behind == 0 {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(format!("{behind} streams never got revision {rev}"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
