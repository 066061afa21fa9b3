//! `/debug/pprof/heap`: what the kernel counts for this process (`/proc/self/status`),
//! as text. Not a pprof heap profile: weft's allocator (mimalloc) keeps no per-call-site
//! records, and sampling allocations would cost every request. Reading it costs one
//! small file read.

use http::StatusCode;

use crate::Answer;

/// The `/proc/self/status` fields reported, each with what it means for weft.
const FIELDS: [(&str, &str, &str); 6] = [
    ("VmRSS", "rss_bytes", "resident memory now"),
    ("VmHWM", "peak_rss_bytes", "the most resident memory so far"),
    ("RssAnon", "rss_anon_bytes", "resident anonymous memory: the heap (mimalloc's pages) and thread stacks"),
    ("RssFile", "rss_file_bytes", "resident file-backed memory: the mapped binary and libraries"),
    ("VmData", "data_bytes", "data and heap address space reserved (resident or not)"),
    ("Threads", "threads", "threads in the process"),
];

pub(crate) fn serve() -> Answer {
    match std::fs::read_to_string("/proc/self/status") {
        Ok(status) => Answer::text(StatusCode::OK, summary(&status)),
        Err(e) => Answer::text(StatusCode::NOT_IMPLEMENTED, format!("no memory summary here: /proc/self/status: {e}")),
    }
}

/// The summary of a `/proc/<pid>/status` text: `name value` lines, sizes in bytes.
fn summary(status: &str) -> String {
    let mut out = String::from("# weft memory summary (from /proc/self/status; a text summary, not a pprof heap profile)\n");
    for (field, name, help) in FIELDS {
        let Some(v) = value(status, field) else { continue };
        out += &format!("# {help}\n{name} {v}\n");
    }
    out.pop();
    out
}

/// A field's value; sizes (`1234 kB`) in bytes.
fn value(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.split(':').next() == Some(field))?;
    let mut words = line.split(':').nth(1)?.split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    Some(if words.next() == Some("kB") { n * 1024 } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sizes_in_bytes() {
        let s = "Name:\tweft\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nRssAnon:\t 512 kB\nThreads:\t3\n";
        let t = summary(s);
        assert!(t.contains("\nrss_bytes 1048576\n"), "{t}");
        assert!(t.contains("\npeak_rss_bytes 2097152\n"), "{t}");
        assert!(t.contains("\nrss_anon_bytes 524288\n"), "{t}");
        assert!(t.ends_with("\nthreads 3"), "{t}");
        assert!(!t.contains("rss_file_bytes"), "absent fields are left out: {t}");
    }

    #[test]
    fn this_process_has_a_resident_size() {
        let a = serve();
        assert_eq!(a.status, StatusCode::OK);
        let t = String::from_utf8_lossy(&a.body).into_owned();
        let rss: u64 = t.lines().find_map(|l| l.strip_prefix("rss_bytes ")).and_then(|v| v.parse().ok()).unwrap_or(0);
        assert!(rss > 1 << 20, "{t}");
    }
}
