//! Profiling on demand, for the proxy's admin listener and the control plane's API:
//! `/debug/pprof/profile?seconds=N` (a CPU profile in pprof's protobuf format, what
//! `go tool pprof` reads) and `/debug/pprof/heap` (a text summary of the process's
//! memory). Nothing runs until a profile is asked for: no signal handler, no timer.
#![forbid(unsafe_code)]

mod cpu;
mod heap;

use bytes::Bytes;
use http::StatusCode;

pub use cpu::{parse_seconds, FREQUENCY_HZ, MAX_SECONDS};

/// The paths served here start with this.
pub const PREFIX: &str = "/debug/pprof";

/// An answer, for the caller to put in its own response type.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
}

impl Answer {
    fn text(status: StatusCode, body: impl Into<String>) -> Answer {
        let mut body = body.into();
        body.push('\n');
        Answer { status, content_type: "text/plain; charset=utf-8", body: Bytes::from(body) }
    }
}

/// Whether `path` is one of ours (then [`serve`] answers it).
pub fn is_profiling_path(path: &str) -> bool {
    path == PREFIX || path.starts_with("/debug/pprof/")
}

/// Answers a `/debug/pprof…` request (`query`: the URL's query string). A CPU profile
/// answers after its `seconds`; the sampling runs on a thread of its own (`weft-pprof`),
/// not the caller's.
pub async fn serve(path: &str, query: Option<&str>) -> Answer {
    match path.strip_prefix(PREFIX).unwrap_or(path) {
        "/profile" => cpu::serve(query).await,
        "/heap" => heap::serve(),
        "" | "/" => Answer::text(StatusCode::OK, INDEX),
        _ => Answer::text(StatusCode::NOT_FOUND, format!("no such profile; {INDEX}")),
    }
}

const INDEX: &str = "profiles: /debug/pprof/profile?seconds=N (CPU, pprof protobuf, N 1-60), /debug/pprof/heap (memory summary, text)";
