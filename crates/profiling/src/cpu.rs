//! CPU profiles: SIGPROF sampling at a fixed [`FREQUENCY_HZ`] for 1 to [`MAX_SECONDS`]
//! seconds, one at a time per process, encoded as pprof's `Profile` message (sample
//! type `cpu`/`nanoseconds`, functions named by the binary's symbol table).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use rpprof::protos::Message;

use crate::Answer;

/// Samples per second of CPU time: 99, not 100, so that sampling does not beat in step
/// with work that runs every 10 ms (Go's and Linux perf's habit).
pub const FREQUENCY_HZ: i32 = 99;
/// The longest profile asked for; longer ones hold a thread and a connection for long.
pub const MAX_SECONDS: u64 = 60;
/// Libraries whose frames are not unwound in the signal handler (pprof's advice: an
/// unwinder interrupted inside them may deadlock).
const BLOCKLIST: [&str; 4] = ["libc", "libgcc", "pthread", "vdso"];

/// Set while a profile runs: the sampler is process-wide, so one profile at a time.
static RUNNING: AtomicBool = AtomicBool::new(false);

/// The right to run the one profile; given back on drop (also when the task panics).
struct Slot;

impl Slot {
    fn claim() -> Option<Slot> {
        RUNNING.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).ok().map(|_| Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::Release);
    }
}

/// `seconds=N` from a query string: a whole number 1 to [`MAX_SECONDS`], given once.
/// Anything else (missing, empty, signed, fractional, exponent, out of range) is refused
/// with a message that says what is wanted.
pub fn parse_seconds(query: Option<&str>) -> Result<u64, String> {
    let mut found = None;
    for pair in query.unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "seconds" && found.replace(value).is_some() {
            return Err("seconds is given more than once".into());
        }
    }
    let want = format!("a whole number of seconds from 1 to {MAX_SECONDS}");
    let Some(v) = found else { return Err(format!("seconds=N is required: {want}")) };
    let n = match v.len() <= 2 && !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        true => v.parse::<u64>().unwrap_or(0),
        false => 0,
    };
    if !(1..=MAX_SECONDS).contains(&n) {
        return Err(format!("seconds={:?} is not {want}", shorten(v)));
    }
    Ok(n)
}

/// The first 32 characters of an input echoed in an error.
fn shorten(s: &str) -> &str {
    s.char_indices().nth(32).map_or(s, |(i, _)| &s[..i])
}

pub(crate) async fn serve(query: Option<&str>) -> Answer {
    let seconds = match parse_seconds(query) {
        Ok(s) => s,
        Err(m) => return Answer::text(StatusCode::BAD_REQUEST, m),
    };
    let Some(slot) = Slot::claim() else {
        let m = "a CPU profile is already running in this process (one at a time); ask again when it ends";
        return Answer::text(StatusCode::CONFLICT, m);
    };
    // A thread of its own that ends with the profile: the symbolizer's memory goes back
    // with its heap at once (a pooled blocking thread would keep it until it idles out).
    let (tx, rx) = tokio::sync::oneshot::channel();
    let run = move || {
        let _slot = slot;
        let _ = tx.send(profile(Duration::from_secs(seconds)));
    };
    if let Err(e) = std::thread::Builder::new().name("weft-pprof".into()).spawn(run) {
        return Answer::text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot start the profiling thread: {e}"));
    }
    match rx.await {
        Ok(Ok(body)) => Answer { status: StatusCode::OK, content_type: "application/octet-stream", body: Bytes::from(body) },
        Ok(Err(e)) => Answer::text(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(_) => Answer::text(StatusCode::INTERNAL_SERVER_ERROR, "the profiling thread failed"),
    }
}

/// Samples for `length`, then symbolizes and encodes (on the calling thread, which it blocks).
fn profile(length: Duration) -> Result<Vec<u8>, String> {
    let guard = rpprof::ProfilerGuardBuilder::default()
        .frequency(FREQUENCY_HZ)
        .blocklist(&BLOCKLIST)
        .build()
        .map_err(|e| format!("cannot start the CPU profiler: {e}"))?;
    std::thread::sleep(length);
    // (The sampler skips its samples while the report holds its data to symbolize them.)
    let report = guard.report().frames_post_processor(strip_sampler).build().map_err(|e| format!("reading the samples: {e}"))?;
    drop(guard);
    // The names are in the report: the symbolizer's cache (the binary's symbol and line
    // tables, tens of MB) need not outlive it.
    backtrace::clear_symbol_cache();
    let profile = report.pprof().map_err(|e| format!("encoding the profile: {e}"))?;
    let mut body = Vec::with_capacity(profile.encoded_len());
    profile.encode(&mut body).map_err(|e| format!("encoding the profile: {e}"))?;
    Ok(body)
}

/// Drops the sampler's own frames from the top of a stack, so that each sample's leaf is
/// the code it interrupted. framehop (x86_64 and aarch64) unwinds from the interrupted
/// registers and has none; backtrace-rs (pprof's unwinder elsewhere) starts in the
/// SIGPROF handler.
fn strip_sampler(frames: &mut rpprof::Frames) {
    let own = |f: &Vec<rpprof::Symbol>| {
        !f.is_empty()
            && f.iter().all(|s| {
                let n = s.name();
                ["backtrace::", "rpprof::", "<rpprof::"].iter().any(|p| n.starts_with(p))
                    || n.contains("perf_signal_handler")
                    || n == "__restore_rt"
            })
    };
    let keep = frames.frames.iter().position(|f| !own(f)).unwrap_or(frames.frames.len());
    frames.frames.drain(..keep);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_in_range_are_taken() {
        assert_eq!(parse_seconds(Some("seconds=1")), Ok(1));
        assert_eq!(parse_seconds(Some("debug=0&seconds=60")), Ok(60));
        assert_eq!(parse_seconds(Some("seconds=07")), Ok(7));
    }

    #[test]
    fn hostile_seconds_are_refused_with_the_reason() {
        for q in [
            None,
            Some(""),
            Some("seconds"),
            Some("seconds="),
            Some("seconds=0"),
            Some("seconds=61"),
            Some("seconds=-1"),
            Some("seconds=1e9"),
            Some("seconds=1.5"),
            Some("seconds=+5"),
            Some("seconds=%31"),
            Some("seconds=99999999999999999999999"),
            Some("seconds=abc"),
            Some("seconds=1&seconds=2"),
        ] {
            let e = parse_seconds(q).expect_err(&format!("{q:?} must be refused"));
            assert!(e.contains("seconds"), "{q:?}: {e}");
        }
        let long = format!("seconds={}", "9".repeat(10_000));
        assert!(parse_seconds(Some(&long)).unwrap_err().len() < 200, "the echoed input is cut short");
    }

    #[test]
    fn the_samplers_frames_are_dropped() {
        let sym = |name: &str| rpprof::Symbol { name: Some(name.as_bytes().to_vec()), addr: None, lineno: None, filename: None };
        let mut f = rpprof::Frames {
            frames: vec![
                vec![sym("backtrace::backtrace::trace_unsynchronized")],
                vec![sym("<rpprof::backtrace::backtrace_rs::Trace as rpprof::backtrace::Trace>::trace")],
                vec![sym("rpprof::profiler::perf_signal_handler")],
                vec![sym("__restore_rt")],
                vec![sym("weft_proxy::server::serve"), sym("rpprof::inlined_here")],
                vec![sym("main")],
            ],
            thread_name: "weft-worker-0".into(),
            thread_id: 1,
            sample_timestamp: std::time::SystemTime::now(),
        };
        strip_sampler(&mut f);
        let names: Vec<String> = f.frames.iter().map(|f| f[0].name()).collect();
        assert_eq!(names, ["weft_proxy::server::serve", "main"]);
    }

    #[test]
    fn one_profile_at_a_time() {
        let first = Slot::claim().expect("free");
        assert!(Slot::claim().is_none());
        drop(first);
        assert!(Slot::claim().is_some());
    }
}
