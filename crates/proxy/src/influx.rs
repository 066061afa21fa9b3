//! `--influxdb-url`: the proxy's metrics pushed to InfluxDB every `--influxdb-interval`,
//! in line protocol ([`weft_telemetry::line_protocol`]) over InfluxDB's v1 `/write` API
//! (which InfluxDB 2 also serves; `--influxdb-token-file` sends `Authorization: Token`).
//!
//! It runs on the admin runtime, never on a worker: a push renders the same text as a
//! `/metrics` scrape, converts it and POSTs it. One push at a time (the next tick waits
//! for the last push), each bounded by [`PUSH_TIMEOUT`] and [`MAX_BODY`]; pushes are
//! counted (`weft_influxdb_pushes_total`, `weft_influxdb_push_failed_total`) and a
//! failure is logged at most once per [`LOG_EVERY`].

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use weft_telemetry::Metrics;

/// A push (connect, send, answer) that takes longer is given up on and counted failed.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest body pushed; points past it are left out of that push (and logged).
pub const MAX_BODY: usize = 16 << 20;
/// A failing push is logged at most this often (the counter says how many failed).
pub const LOG_EVERY: Duration = Duration::from_secs(60);
/// The shortest `--influxdb-interval`.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The most of InfluxDB's answer kept (for the error message).
const MAX_ANSWER: usize = 64 * 1024;

/// `--influxdb-url`, `--influxdb-interval`, `--influxdb-token-file`, as given.
#[derive(Debug, Clone)]
pub struct InfluxOptions {
    pub url: String,
    pub interval: Duration,
    pub token_file: Option<PathBuf>,
}

/// A checked destination, ready to push to.
pub struct Pusher {
    uri: Uri,
    interval: Duration,
    /// `Authorization: Token …` (InfluxDB 2's v1-compatible API), read at start.
    auth: Option<http::HeaderValue>,
}

impl Pusher {
    /// Checks the options (an `http://host[:port]/write?db=…` URL, a readable token file)
    /// so that a mistake stops the proxy at start rather than failing every push.
    pub fn new(o: &InfluxOptions) -> Result<Pusher, String> {
        let uri = check_url(&o.url)?;
        if o.interval < MIN_INTERVAL {
            return Err(format!("--influxdb-interval {:?} is shorter than {MIN_INTERVAL:?}", o.interval));
        }
        let auth = match &o.token_file {
            None => None,
            Some(f) => {
                let t = std::fs::read_to_string(f).map_err(|e| format!("--influxdb-token-file {}: {e}", f.display()))?;
                let v = http::HeaderValue::from_str(&format!("Token {}", t.trim()));
                Some(v.map_err(|_| format!("--influxdb-token-file {}: not a token (one line of text)", f.display()))?)
            }
        };
        Ok(Pusher { uri, interval: o.interval, auth })
    }

    /// Pushes every interval until the process ends.
    pub async fn run(self, metrics: &'static Metrics) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + self.interval, self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut quiet_until: Option<tokio::time::Instant> = None;
        let mut unlogged = 0u64;
        loop {
            tick.tick().await;
            let result = match tokio::time::timeout(PUSH_TIMEOUT, self.push(metrics)).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {PUSH_TIMEOUT:?}")),
            };
            let counters = &metrics.counters;
            let Err(e) = result else {
                counters.influxdb_pushes.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            counters.influxdb_push_failures.fetch_add(1, Ordering::Relaxed);
            let now = tokio::time::Instant::now();
            if quiet_until.is_some_and(|t| now < t) {
                unlogged += 1;
                continue;
            }
            let more = if unlogged > 0 { format!(" ({unlogged} more failed since the last message)") } else { String::new() };
            tracing::warn!(url = %self.uri, "InfluxDB push failed: {e}{more}");
            (quiet_until, unlogged) = (Some(now + LOG_EVERY), 0);
        }
    }

    /// One push: the metrics now, as line protocol, POSTed; Ok on a 2xx answer.
    async fn push(&self, metrics: &Metrics) -> Result<(), String> {
        let body = render(metrics, unix_ns());
        if body.is_empty() {
            return Ok(());
        }
        post(&self.uri, self.auth.as_ref(), body).await
    }
}

/// The `--influxdb-url`, checked: `http://host[:port]/path[?query]`, nanosecond precision.
pub fn check_url(url: &str) -> Result<Uri, String> {
    let shown = weft_api::truncate(url, 128);
    let uri: Uri = url.parse().map_err(|_| format!("--influxdb-url {shown:?} is not a URL"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(format!("--influxdb-url {shown:?}: an http://host:port/write?db=NAME URL (InfluxDB's v1 write API)"));
    }
    let precision = uri.query().unwrap_or("").split('&').find_map(|p| p.strip_prefix("precision="));
    if precision.is_some_and(|p| p != "ns") {
        return Err(format!("--influxdb-url {shown:?}: points carry nanosecond timestamps; leave precision out (or ns)"));
    }
    Ok(uri)
}

/// The metrics as line protocol, at most [`MAX_BODY`] bytes (cut after a whole line).
fn render(metrics: &Metrics, timestamp_ns: u64) -> String {
    let mut body = String::with_capacity(64 * 1024);
    weft_telemetry::line_protocol::from_prometheus(&metrics.render(), timestamp_ns, &mut body);
    let left_out = cap_at_line(&mut body, MAX_BODY);
    if left_out > 0 {
        tracing::warn!("InfluxDB push: {left_out} points left out, over the {} MiB cap", MAX_BODY >> 20);
    }
    body
}

/// Cuts `body` after its last whole line within `max` bytes; returns the lines left out.
fn cap_at_line(body: &mut String, max: usize) -> usize {
    if body.len() <= max {
        return 0;
    }
    // (Bytes, not chars: the cap may fall inside a character; a newline never does.)
    let cut = body.as_bytes()[..max].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let left_out = body[cut..].lines().count();
    body.truncate(cut);
    left_out
}

fn unix_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// One POST of line protocol; Ok on a 2xx answer (InfluxDB answers 204).
async fn post(uri: &Uri, auth: Option<&http::HeaderValue>, body: String) -> Result<(), String> {
    let host = uri.host().ok_or("no host")?.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((host, uri.port_u16().unwrap_or(80))).await.map_err(|e| format!("connect: {e}"))?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(conn);
    let mut req = Request::post(uri.path_and_query().map_or("/write", |p| p.as_str()))
        .header(header::HOST, uri.authority().map_or(host, |a| a.as_str()))
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    if let Some(a) = auth {
        req.headers_mut().insert(header::AUTHORIZATION, a.clone());
    }
    let resp = tx.send_request(req).await.map_err(|e| format!("HTTP: {e}"))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let answer = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER).collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let answer = String::from_utf8_lossy(&answer);
    Err(format!("InfluxDB answered {status}: {}", weft_api::truncate(answer.trim(), 256)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_at_start() {
        assert!(check_url("http://127.0.0.1:8086/write?db=weft").is_ok());
        assert!(check_url("http://influx/write?db=weft&precision=ns").is_ok());
        for bad in ["influx:8086/write", "https://influx/write?db=w", "http:///write", "not a url", "http://i/write?db=w&precision=s"] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_short_interval_or_a_missing_token_file_stops_the_start() {
        let o = |interval, token_file| InfluxOptions { url: "http://127.0.0.1:8086/write?db=w".into(), interval, token_file };
        assert!(Pusher::new(&o(Duration::from_secs(10), None)).is_ok());
        assert!(Pusher::new(&o(Duration::from_millis(10), None)).is_err());
        assert!(Pusher::new(&o(Duration::from_secs(10), Some("/nonexistent/token".into()))).is_err());
    }

    #[test]
    fn the_cap_cuts_after_a_whole_line_even_inside_a_character() {
        let mut body = "ab\nçç\nxyz\n".to_owned();
        assert_eq!(cap_at_line(&mut body, 5), 2, "the cap falls inside the second ç");
        assert_eq!(body, "ab\n");
        let mut body = "ab\n".to_owned();
        assert_eq!(cap_at_line(&mut body, 3), 0);
        assert_eq!(body, "ab\n");
        let mut body = "a long first line\n".to_owned();
        assert_eq!(cap_at_line(&mut body, 4), 1);
        assert_eq!(body, "");
    }

    #[test]
    fn the_body_is_line_protocol_of_the_metrics() {
        let m = Metrics::new("productpage", "default");
        m.counters.no_route.store(4, Ordering::Relaxed);
        let body = render(&m, 42);
        assert!(body.lines().any(|l| l == "weft_no_route_total value=4 42"), "{body}");
        assert!(body.ends_with('\n'));
    }
}
