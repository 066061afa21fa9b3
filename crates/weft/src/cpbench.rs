//! `weft bench-control-plane`: push propagation to many proxy streams, simulated in
//! one process. Each simulated proxy keeps one HTTP/1.1 connection and does what
//! `weft proxy --control-plane` does on the wire — long-poll `/v1/watch`, then ACK —
//! with `weft_api`'s messages,
//! without compiling the mesh. Between rounds the command applies a changed
//! DestinationRule (through the API, as `weft apply` does) and records, for every
//! stream, the time from the apply's answer to the new revision's arrival and to its
//! ACK leaving (on the stream's next watch), and reads the control plane's own
//! change-to-ACK histogram.
//!
//! With `--churn RATE` it measures endpoint churn instead: RATE registrations and
//! deregistrations a second for `--duration`, sent on schedule over 64 connections
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
use weft_api::{ApplyRequest, Committed, FileText, HistoryEntry, Listing, MeshAnswer, Message, Outcome, WatchRequest};

#[derive(clap::Args)]
pub struct CpBenchArgs {
    /// The control plane (its store gets a ServiceEntry and DestinationRule
    /// `bench-propagation`): an http:// URL, i.e. one started with --insecure (no TLS here).
    #[arg(long, default_value = crate::ctl::DEFAULT_SERVER)]
    pub server: String,
    /// Simulated proxy streams.
    #[arg(long, default_value_t = 1000)]
    pub proxies: usize,
    /// Where the streams watch (default: --server): another control plane on the same
    /// etcd, to measure a change made at one reaching proxies of another.
    #[arg(long)]
    pub watch_server: Option<String>,
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
    /// A file holding a write (or admin) token for both control planes (default:
    /// $WEFT_TOKEN_FILE, or the token itself in $WEFT_TOKEN).
    #[arg(long, env = "WEFT_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
}

/// The `Authorization` value every request of the run carries (set once at start).
static AUTHORIZATION: std::sync::OnceLock<Option<http::HeaderValue>> = std::sync::OnceLock::new();

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
    let mut req = http::Request::builder().method(method).uri(path).header("host", "cp").header("x-weft-client", "bench");
    if let Some(Some(auth)) = AUTHORIZATION.get() {
        req = req.header(http::header::AUTHORIZATION, auth.clone());
    }
    let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let (parts, b) = resp.into_parts();
    let b = b.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((parts.status.as_u16(), parts.headers, b))
}

/// Per stream: (revision, received at, its ACK sent at).
pub type Seen = Rc<RefCell<Vec<(u64, Instant, Instant)>>>;
/// Per stream: every (revision, received at, bytes), for churn.
pub type Log = Rc<RefCell<Vec<Vec<(u64, Instant, usize)>>>>;

async fn stream(authority: String, i: usize, seen: Seen, log: Log) -> Result<(), String> {
    let mut tx = connect(&authority).await?;
    let (mut rev, mut nonce) = (0u64, 0u64);
    let node = format!("sim-{i}");
    loop {
        // The ACK of the last answer rides on the next watch, as `weft proxy` sends it.
        let last = (rev > 0).then_some(Outcome::Ack { nonce, revision: rev });
        let watch = WatchRequest {
            node: Some(node.clone()),
            since: rev,
            wait_ms: 20_000,
            identity: None,
            last,
            cert_not_after: None,
            hosts: None,
            names_since: None,
            newly: None,
        };
        let sent = Instant::now();
        if rev > 0 {
            seen.borrow_mut()[i].2 = sent;
        }
        let (status, _, body) = send(&mut tx, "POST", "/v1/watch", Bytes::from(watch.encode())).await?;
        if status != 200 {
            continue;
        }
        let got = Instant::now();
        let answer = MeshAnswer::decode(&body).map_err(|e| format!("stream {i}: {e}"))?;
        (rev, nonce) = (answer.revision, answer.nonce);
        log.borrow_mut()[i].push((rev, got, body.len()));
        // (The ACK's time is set when the next watch goes out.)
        seen.borrow_mut()[i] = (rev, got, got);
    }
}

fn docs(round: usize) -> Vec<u8> {
    let lb = if round % 2 == 1 { "ROUND_ROBIN" } else { "RANDOM" };
    let text = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: bench-propagation}}\nspec:\n  hosts: [bench-propagation]\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{http: 9}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: bench-propagation}}\nspec:\n  host: bench-propagation\n  trafficPolicy: {{loadBalancer: {{simple: {lb}}}, connectionPool: {{http: {{maxRetries: {}}}}}}}\n",
        round + 3
    );
    ApplyRequest { files: vec![FileText { name: "bench.yaml".into(), text }] }.encode()
}

/// The revision a change's answer names (0 when it names none).
pub fn revision_of(body: &[u8]) -> u64 {
    Committed::decode(body).map(|c| c.revision).unwrap_or(0)
}

/// `  LABEL: p50 …, p99 …, max …` (milliseconds).
pub fn print_percentiles(label: &str, v: &mut [f64]) {
    println!("{:<30} p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms", format!("{label}:"), pct(v, 50.0), pct(v, 99.0), pct(v, 100.0));
}

pub fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((p / 100.0 * v.len() as f64) as usize).min(v.len() - 1)]
}

pub fn run(a: CpBenchArgs) -> ExitCode {
    let url = |u: &str| u.strip_prefix("http://").map(|s| s.trim_end_matches('/').to_owned());
    let (Some(authority), Some(watched)) = (url(&a.server), url(a.watch_server.as_deref().unwrap_or(&a.server))) else {
        eprintln!(
            "error: --server and --watch-server must be http:// URLs: bench-control-plane does not speak TLS yet, so measure a control plane started with --insecure"
        );
        return ExitCode::FAILURE;
    };
    let auth = match crate::ctl::read_token(a.token_file.as_deref()) {
        Ok(t) => t.map(|t| http::HeaderValue::from_str(&format!("Bearer {t}"))),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let auth = match auth.transpose() {
        Ok(a) => a,
        Err(_) => {
            eprintln!("error: the token has characters no token has");
            return ExitCode::FAILURE;
        }
    };
    let _ = AUTHORIZATION.set(auth);
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
            let (auth, s, l) = (watched.clone(), seen.clone(), log.clone());
            tokio::task::spawn_local(async move {
                if let Err(e) = stream(auth, i, s, l).await {
                    eprintln!("stream {i}: {e}");
                }
            });
        }
        // (The ACKs, and so the change→ACK histogram, are at the watched control plane.)
        let mut watched_admin = connect(&watched).await?;
        let base = current(&mut admin).await?;
        wait_all(&seen, base, Duration::from_secs(60)).await?;
        // Let every stream park in its next watch.
        tokio::time::sleep(Duration::from_millis(500)).await;
        if a.churn > 0 {
            return crate::cpchurn::run(&authority, &a, &seen, &log).await;
        }
        let (mut recv, mut acked) = (Vec::new(), Vec::new());
        let before = push_histogram(&mut watched_admin).await?;
        for round in 1..=a.rounds {
            let (status, _, body) = send(&mut admin, "POST", "/v1/apply", Bytes::from(docs(round))).await?;
            let applied = Instant::now();
            if status != 200 {
                return Err(format!("apply: {status} {}", String::from_utf8_lossy(&body)));
            }
            let rev = revision_of(&body);
            wait_all(&seen, rev, Duration::from_secs(30)).await?;
            // (Each ACK leaves with the stream's next watch, right after.)
            tokio::time::sleep(Duration::from_millis(300)).await;
            for (_, got, ack) in seen.borrow().iter() {
                recv.push(got.saturating_duration_since(applied).as_secs_f64() * 1e3);
                acked.push(ack.saturating_duration_since(applied).as_secs_f64() * 1e3);
            }
        }
        let after = push_histogram(&mut watched_admin).await?;
        println!("{} streams x {} applies, from the apply's answer", a.proxies, a.rounds);
        print_percentiles("  to the new revision received", &mut recv);
        print_percentiles("  to its ACK sent", &mut acked);
        let total = after.last().map(|l| l.1).unwrap_or(0.0) - before.last().map(|l| l.1).unwrap_or(0.0);
        let counts: Vec<(f64, f64)> =
            after.iter().zip(&before).filter_map(|(a, b)| Some((a.0.parse::<f64>().ok()?, (a.1 - b.1) / total.max(1.0)))).collect();
        // The bucket bound where the share first reaches p (an upper bound of that percentile).
        let at =
            |p: f64| counts.iter().find(|c| c.1 >= p).map(|c| format!("<= {} ms", c.0)).unwrap_or_else(|| "over the largest bucket".into());
        let within: Vec<String> = counts
            .iter()
            .filter(|c| [25.0, 50.0, 100.0].contains(&c.0))
            .map(|c| format!("{:.1} % within {} ms", 100.0 * c.1, c.0))
            .collect();
        println!("  the control plane's change → ACK histogram ({total} ACKs): p50 {}, p99 {}; {}", at(0.5), at(0.99), within.join(", "));
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

/// `weft_control_push_latency_ms` buckets: (le, cumulative count).
async fn push_histogram(admin: &mut Sender) -> Result<Vec<(String, f64)>, String> {
    let (_, _, body) = send(admin, "GET", "/metrics", Bytes::new()).await?;
    Ok(String::from_utf8_lossy(&body)
        .lines()
        .filter_map(|l| l.strip_prefix("weft_control_push_latency_ms_bucket{le=\""))
        .filter_map(|l| l.split_once("\"} "))
        .filter_map(|(le, n)| Some((le.to_owned(), n.trim().parse().ok()?)))
        .collect())
}

async fn current(admin: &mut Sender) -> Result<u64, String> {
    let (_, _, body) = send(admin, "GET", "/v1/history", Bytes::new()).await?;
    Ok(Listing::<HistoryEntry>::decode(&body).map(|l| l.revision).unwrap_or(0))
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
