//! An Envoy-style access log line per request, on stdout (`--access-log`).

use std::io::Write;

use crate::finish::Finish;

pub struct Entry {
    pub method: http::Method,
    pub path: String,
    pub authority: String,
    pub upstream: String,
    pub route: String,
}

impl Entry {
    /// `[start] "METHOD PATH" CODE FLAGS REQ_BYTES RESP_BYTES DURATION_MS "AUTHORITY" "UPSTREAM" ROUTE`
    pub fn write(&self, f: &Finish, ms: f64, req_bytes: u64) {
        let line = format!(
            "\"{} {}\" {} {} {} {} {:.3} \"{}\" \"{}\" {}\n",
            self.method,
            self.path,
            f.code,
            f.flags,
            req_bytes,
            f.response_bytes,
            ms,
            self.authority,
            if self.upstream.is_empty() { "-" } else { &self.upstream },
            if self.route.is_empty() { "-" } else { &self.route },
        );
        let _ = std::io::stdout().lock().write_all(line.as_bytes());
    }
}
