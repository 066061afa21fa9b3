//! `/debug/pprof/profile` and `/debug/pprof/heap` on a real proxy's admin listener and a
//! real control plane's API: a profile taken under load decodes as pprof's `Profile`
//! with CPU samples in weft's own functions; hostile `seconds` and a second profile at
//! once are refused; the control plane asks for its admin role.

mod common;
use common::*;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The parts of pprof's `Profile` (perftools.profiles, profile.proto) the test reads.
mod pprof {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(int64, tag = "12")]
        pub period: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
    }
}

/// Decodes a profile and checks it is a CPU profile (with samples unless the process
/// was `idle`); returns it and the names of the functions its samples are in.
fn decode_cpu_profile(body: &[u8], idle: bool) -> (pprof::Profile, Vec<String>) {
    let p = <pprof::Profile as prost::Message>::decode(body).expect("a pprof Profile message");
    let s = |i: i64| p.string_table.get(i as usize).cloned().unwrap_or_default();
    let types: Vec<(String, String)> = p.sample_type.iter().map(|t| (s(t.r#type), s(t.unit))).collect();
    assert!(types.contains(&("cpu".into(), "nanoseconds".into())), "sample types {types:?}");
    assert!(idle || !p.sample.is_empty(), "no samples");
    assert_eq!(p.period, 1_000_000_000 / 99, "99 Hz");
    let names: Vec<String> = p.function.iter().map(|f| s(f.name)).collect();
    let name_of = |id: u64| p.function.iter().find(|f| f.id == id).map(|f| s(f.name)).unwrap_or_default();
    // Every sample's locations and functions are in the tables.
    for smp in &p.sample {
        for id in &smp.location_id {
            let loc = p.location.iter().find(|l| l.id == *id).expect("sample location in the table");
            assert!(loc.line.iter().all(|l| p.function.iter().any(|f| f.id == l.function_id)));
        }
        // Each leaf is the code interrupted, not the sampler's own unwinding.
        let leaf = smp.location_id.first().and_then(|id| p.location.iter().find(|l| l.id == *id));
        let leaf = leaf.and_then(|l| l.line.first()).map(|l| name_of(l.function_id)).unwrap_or_default();
        assert!(!["backtrace::", "rpprof::", "<rpprof::"].iter().any(|x| leaf.starts_with(x)), "the sampler's frame {leaf:?} on top");
    }
    (p, names)
}

/// `go tool pprof -top` reads the profile, when Go is installed (it is not in the
/// tests' requirements: Debian's golang-go is 335 MB).
fn go_pprof_reads(body: &[u8]) {
    if !std::process::Command::new("go").arg("version").output().is_ok_and(|o| o.status.success()) {
        eprintln!("go is not installed: the go tool pprof check is skipped");
        return;
    }
    let f = temp_dir().join("cpu.pprof");
    std::fs::write(&f, body).unwrap();
    let out = std::process::Command::new("go").args(["tool", "pprof", "-top", f.to_str().unwrap()]).output().unwrap();
    let top = text(&out);
    assert!(out.status.success() && top.contains("Type: cpu") && top.contains("weft_proxy::"), "{top}");
}

fn admin_get(admin: std::net::SocketAddr, path: &str) -> Resp {
    let mut c = Client::connect(admin);
    c.get("admin", path, &[])
}

/// Keeps `threads` clients sending requests through the proxy until `stop`.
fn load(addr: std::net::SocketAddr, host: &'static str, stop: Arc<AtomicBool>, threads: usize) -> Vec<std::thread::JoinHandle<usize>> {
    (0..threads)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    assert_eq!(c.get(host, "/", &[]).status, 200);
                    n += 1;
                }
                n
            })
        })
        .collect()
}

#[test]
fn a_profile_under_load_has_weft_functions_and_one_runs_at_a_time() {
    let b = backend("reviews-v1", &[]);
    let p = proxy(&service_entry("reviews.default.svc", &[(b.addr, "version: v1", 1)]));
    assert_eq!(get(p.addr(), "reviews.default.svc", "/", &[]).status, 200);
    let admin = p.p.admin.expect("admin");

    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(p.addr(), "reviews.default.svc", stop.clone(), 2);
    let first = std::thread::spawn(move || admin_get(admin, "/debug/pprof/profile?seconds=3"));
    // (A second for the first request to arrive, even on a busy machine.)
    std::thread::sleep(Duration::from_secs(1));
    // A second profile while the first runs: refused at once, not queued.
    let started = std::time::Instant::now();
    let second = admin_get(admin, "/debug/pprof/profile?seconds=1");
    assert_eq!(second.status, 409, "{}", second.text());
    assert!(second.text().contains("already running"), "{}", second.text());
    assert!(started.elapsed() < Duration::from_millis(1500), "answered at once, not after a profile");
    let r = first.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let sent: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    let (profile, names) = decode_cpu_profile(&r.body, false);
    assert!(names.iter().any(|n| n.starts_with("weft_proxy::")), "weft's own functions among {names:?}");
    let total: i64 = profile.sample.iter().map(|s| s.value.get(1).copied().unwrap_or(0)).sum();
    eprintln!(
        "profile: {} bytes, {} samples ({} ms of CPU), {} functions, {sent} requests meanwhile",
        r.body.len(),
        profile.sample.len(),
        total / 1_000_000,
        names.len()
    );

    go_pprof_reads(&r.body);

    // Once it ended, the next one may run (on a proxy now idle: maybe no sample at all).
    let again = admin_get(admin, "/debug/pprof/profile?seconds=1");
    assert_eq!(again.status, 200, "{}", again.text());
    decode_cpu_profile(&again.body, true);
}

#[test]
fn hostile_seconds_are_refused_with_400() {
    let p = proxy(&service_entry("reviews.default.svc", &[(free_addr(), "version: v1", 1)]));
    let admin = p.p.admin.expect("admin");
    let long = format!("/debug/pprof/profile?seconds={}", "9".repeat(4000));
    for path in [
        "/debug/pprof/profile?seconds=0",
        "/debug/pprof/profile?seconds=61",
        "/debug/pprof/profile?seconds=-1",
        "/debug/pprof/profile?seconds=1e9",
        "/debug/pprof/profile",
        "/debug/pprof/profile?seconds=",
        "/debug/pprof/profile?seconds=abc",
        "/debug/pprof/profile?seconds=%00%ff",
        "/debug/pprof/profile?seconds=1&seconds=2",
        &long,
    ] {
        let r = admin_get(admin, path);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(r.text().contains("seconds") && r.text().len() < 300, "{path}: {}", r.text());
    }
    assert_eq!(admin_get(admin, "/debug/pprof/nothing").status, 404);
    let heap = admin_get(admin, "/debug/pprof/heap");
    assert_eq!(heap.status, 200);
    let rss = metric_sum(&heap.text(), "rss_bytes", &[]);
    assert!(rss > 1e6, "{}", heap.text());
    // The proxy still serves, and no profile was left running.
    assert_eq!(admin_get(admin, "/ready").status, 200);
}

/// `curl` to the control plane's API with `token`: (status, body).
fn plane_get(cp: &Plane, token: Option<&str>, path: &str) -> (u16, Vec<u8>) {
    let out = temp_dir().join("answer");
    let url = format!("{}{path}", cp.url());
    let ca = cp.ca_file();
    let auth = token.map(|t| format!("authorization: Bearer {t}")).unwrap_or_else(|| "x-none: 1".into());
    let (rc, code, err) = curl(&["--cacert", ca.to_str().unwrap(), "-H", &auth, "-o", out.to_str().unwrap(), "-w", "%{http_code}", &url]);
    assert_eq!(rc, 0, "{err}");
    (code.trim().parse().unwrap_or(0), std::fs::read(&out).unwrap_or_default())
}

#[test]
fn the_control_plane_profiles_for_its_admin_only() {
    let cp = Arc::new(plane());
    let admin = cp.admin_token();
    // Work for it while it profiles: API calls, 100 on each kept-alive TLS connection.
    // (Not a handshake each: pprof 0.15's signal handler reaches into libgcc's unwinder,
    // which can crash a process interrupted inside aws-lc during a TLS handshake — seen
    // here 1 run in ~4 under the full suite's load; README's profiling section says so.)
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let (cp, stop) = (cp.clone(), stop.clone());
        let url = format!("{}/v1/mesh", cp.url());
        let ca = cp.ca_file().to_str().unwrap().to_owned();
        let auth = format!("authorization: Bearer {}", cp.admin_token());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut args = vec!["--cacert", ca.as_str(), "-H", auth.as_str(), "-w", "%{http_code}\n"];
                for _ in 0..100 {
                    args.extend(["-o", "/dev/null", url.as_str()]);
                }
                let (rc, codes, err) = curl(&args);
                assert_eq!(rc, 0, "{err}");
                assert!(codes.lines().all(|c| c == "200"), "{codes}");
            }
        })
    };
    let (code, body) = plane_get(&cp, Some(&admin), "/debug/pprof/profile?seconds=2");
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let (_, names) = decode_cpu_profile(&body, false);
    assert!(names.iter().any(|n| n.starts_with("weft_control::")), "the control plane's own functions among {names:?}");
    let (code, body) = plane_get(&cp, Some(&admin), "/debug/pprof/profile?seconds=61");
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));
    let (code, heap) = plane_get(&cp, Some(&admin), "/debug/pprof/heap");
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&heap).contains("rss_bytes "));

    let out = cp.weft(&["token", "create", "--role", "read"]);
    let read = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(!read.is_empty(), "{}", text(&out));
    assert_eq!(plane_get(&cp, Some(&read), "/debug/pprof/heap").0, 403);
    assert_eq!(plane_get(&cp, Some(&read), "/debug/pprof/profile?seconds=1").0, 403);
    assert_eq!(plane_get(&cp, None, "/debug/pprof/profile?seconds=1").0, 401);
}
