//! `weft bench-control-plane --churn RATE`: endpoint changes on a schedule while the
//! simulated proxy streams of [`crate::cpbench`] follow, and how long each change
//! takes to reach every stream.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use weft_api::{EndpointRef, Message, Registration};

use crate::cpbench::{connect, print_percentiles, send, wait_all, CpBenchArgs, Log, Seen};

/// Connections the changes are sent over.
const CONNECTIONS: usize = 64;

/// Change `k`: even ones register endpoint k/2; odd ones deregister the one registered
/// 100 endpoints earlier (sent ~200 ms before, so never ahead of its registration),
/// or register another while there is none that old.
fn change(k: usize, a: &CpBenchArgs) -> (&'static str, String, Bytes) {
    let n = k / 2;
    let (n, register) = match (k.is_multiple_of(2), n.checked_sub(100)) {
        (true, _) => (n, true),
        (false, Some(old)) => (old, false),
        (false, None) => (1_000_000 + n, true),
    };
    let service = a.churn_pattern.replace("{}", &(n % a.churn_services.max(1)).to_string());
    let address = format!("10.{}.{}.{}:9000", (n >> 16) & 255, (n >> 8) & 255, n & 255);
    if register {
        let reg = Registration {
            service,
            address,
            labels: Default::default(),
            locality: None,
            weight: None,
            ttl_ms: None,
            identity: None,
            namespace: None,
        };
        ("POST", "/v1/registry".to_owned(), Bytes::from(reg.encode()))
    } else {
        ("DELETE", format!("/v1/registry?{}", EndpointRef { service, address, namespace: None }.to_query()), Bytes::new())
    }
}

pub async fn run(authority: &str, a: &CpBenchArgs, seen: &Seen, log: &Log) -> Result<(), String> {
    let total = (a.churn as f64 * a.duration) as usize;
    let interval = Duration::from_secs_f64(1.0 / a.churn as f64);
    for l in log.borrow_mut().iter_mut() {
        l.clear();
    }
    // Per change: (revision, answered at, took).
    let done: Rc<RefCell<Vec<(u64, Instant, Duration)>>> = Rc::new(RefCell::new(Vec::with_capacity(total)));
    let failed = Rc::new(RefCell::new(Vec::new()));
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let mut tx = connect(authority).await?;
        let (done, failed) = (done.clone(), failed.clone());
        let changes: Vec<usize> = (c..total).step_by(CONNECTIONS).collect();
        let plan: Vec<(Instant, &'static str, String, Bytes)> = changes
            .into_iter()
            .map(|k| {
                let (m, p, b) = change(k, a);
                (start + interval * k as u32, m, p, b)
            })
            .collect();
        tasks.push(tokio::task::spawn_local(async move {
            for (at, method, path, body) in plan {
                tokio::time::sleep_until(at.into()).await;
                let sent = Instant::now();
                match send(&mut tx, method, &path, body).await {
                    Ok((200, _, b)) => {
                        let rev = crate::cpbench::revision_of(&b);
                        done.borrow_mut().push((rev, Instant::now(), sent.elapsed()));
                    }
                    Ok((status, _, b)) => failed.borrow_mut().push(format!("{status} {}", String::from_utf8_lossy(&b).trim())),
                    Err(e) => failed.borrow_mut().push(e),
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed();
    let last = done.borrow().iter().map(|d| d.0).max().unwrap_or(0);
    wait_all(seen, last, Duration::from_secs(60)).await?;
    let done = done.borrow();
    let log = log.borrow();
    let mut push = Vec::with_capacity(done.len() * log.len());
    for &(rev, answered, _) in done.iter() {
        for l in log.iter() {
            // The first arrival holding this revision.
            let i = l.partition_point(|(r, _, _)| *r < rev);
            if let Some((_, got, _)) = l.get(i) {
                push.push(got.saturating_duration_since(answered).as_secs_f64() * 1e3);
            }
        }
    }
    let mut took: Vec<f64> = done.iter().map(|d| d.2.as_secs_f64() * 1e3).collect();
    let answers: usize = log.iter().map(Vec::len).sum();
    let bytes: usize = log.iter().flatten().map(|x| x.2).sum();
    let failed = failed.borrow();
    println!(
        "{} endpoint changes in {:.1} s ({:.0}/s, {} failed), {} streams",
        done.len(),
        elapsed.as_secs_f64(),
        done.len() as f64 / elapsed.as_secs_f64(),
        failed.len(),
        log.len()
    );
    if let Some(f) = failed.first() {
        println!("  first failure: {f}");
    }
    if took.is_empty() || push.is_empty() {
        return Err("no change was answered".into());
    }
    print_percentiles("  change answered", &mut took);
    print_percentiles("  change → every stream", &mut push);
    println!(
        "  pushes per stream {:.1} ({:.1}/s), {:.1} KB each on average",
        answers as f64 / log.len() as f64,
        answers as f64 / log.len() as f64 / elapsed.as_secs_f64(),
        bytes as f64 / answers.max(1) as f64 / 1024.0
    );
    Ok(())
}
