use super::*;
use std::sync::atomic::AtomicUsize;

fn key(p: &str) -> PrimaryKey {
    PrimaryKey::new("web", &p.parse().unwrap())
}

/// N concurrent misses, one upstream request: the leader "fetches" for 100 ms (paused
/// clock), the others wait and find its entry.
#[tokio::test(start_paused = true)]
async fn n_concurrent_misses_make_one_upstream_request() {
    let c = Coalescer::new();
    let upstream = Arc::new(AtomicUsize::new(0));
    let stored = Arc::new(AtomicUsize::new(0)); // 1 = the entry is in the "store"
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (c, upstream, stored) = (c.clone(), upstream.clone(), stored.clone());
        tasks.push(tokio::spawn(async move {
            match c.join(&key("/a")) {
                Role::Leader(guard) => {
                    upstream.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    stored.store(1, Ordering::SeqCst);
                    drop(guard);
                }
                Role::Waiter(f) => {
                    assert_eq!(f.wait(Duration::from_secs(5)).await, WaitOutcome::Done);
                    if stored.load(Ordering::SeqCst) == 0 {
                        upstream.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(upstream.load(Ordering::SeqCst), 1);
    assert_eq!(c.in_flight(), 0, "nothing left behind");
}

/// A leader whose future is dropped (client gone) releases its waiters at once, and
/// the next miss leads anew.
#[tokio::test(start_paused = true)]
async fn a_cancelled_leader_releases_waiters() {
    let c = Coalescer::new();
    let leader = {
        let c = c.clone();
        tokio::spawn(async move {
            let _guard = match c.join(&key("/a")) {
                Role::Leader(g) => g,
                Role::Waiter(_) => unreachable!(),
            };
            tokio::time::sleep(Duration::from_secs(3600)).await;
        })
    };
    tokio::task::yield_now().await;
    let Role::Waiter(f) = c.join(&key("/a")) else { panic!("expected to wait") };
    let start = tokio::time::Instant::now();
    let waiter = tokio::spawn(f.wait(Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(5)).await;
    leader.abort();
    assert_eq!(waiter.await.unwrap(), WaitOutcome::Done);
    assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
    assert_eq!(c.in_flight(), 0);
    assert!(matches!(c.join(&key("/a")), Role::Leader(_)));
}

/// A leader that never finishes costs a waiter its bound, no more.
#[tokio::test(start_paused = true)]
async fn a_stuck_leader_times_waiters_out() {
    let c = Coalescer::new();
    let Role::Leader(_guard) = c.join(&key("/a")) else { panic!() };
    let Role::Waiter(f) = c.join(&key("/a")) else { panic!() };
    let start = tokio::time::Instant::now();
    assert_eq!(f.wait(Duration::from_secs(2)).await, WaitOutcome::TimedOut);
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    // Other keys are not held up.
    assert!(matches!(c.join(&key("/b")), Role::Leader(_)));
}

/// Waiters that give up (dropped) leak nothing; the key is free again once the leader ends.
#[tokio::test(start_paused = true)]
async fn dropped_waiters_and_old_guards_leak_nothing() {
    let c = Coalescer::new();
    let Role::Leader(g1) = c.join(&key("/a")) else { panic!() };
    for _ in 0..1000 {
        let Role::Waiter(f) = c.join(&key("/a")) else { panic!() };
        drop(f);
    }
    drop(g1);
    assert_eq!(c.in_flight(), 0);
    let Role::Leader(g2) = c.join(&key("/a")) else { panic!() };
    assert_eq!(c.in_flight(), 1);
    drop(g2);
    assert_eq!(c.in_flight(), 0);
}
