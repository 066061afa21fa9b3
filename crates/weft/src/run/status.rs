//! What `weft run` tells about its app: `--metrics ADDR` serves `weft_app_up`,
//! `weft_app_restarts_total` and `weft_app_last_exit_code` (Prometheus text), and a
//! restarted app's registration carries `weft.io/restarts` and `weft.io/last-exit`
//! labels, so that `weft get endpoints` shows them. Under `--replicas`, each
//! instance's series carry `instance` and `port` labels, beside `weft_app_replicas`
//! (instances running) and `weft_app_desired_replicas` (the scaler's recommendation).

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Default)]
pub struct AppStatus {
    pub up: AtomicBool,
    pub restarts: AtomicU64,
    /// The last exit's code (128 + the signal for a signal, as shells say); -1: none yet.
    pub last_exit: AtomicI64,
    /// The signal that ended it last (0: it exited by itself): an exit code of 130 is no SIGINT.
    pub last_signal: AtomicI64,
}

impl AppStatus {
    pub fn new() -> Arc<AppStatus> {
        Arc::new(AppStatus { last_exit: AtomicI64::new(-1), ..AppStatus::default() })
    }

    pub fn exited(&self, s: &std::io::Result<ExitStatus>) {
        self.up.store(false, Ordering::Relaxed);
        let signal = s.as_ref().ok().and_then(|s| s.signal()).map_or(0, i64::from);
        let code = match s {
            Ok(s) => s.code().map(i64::from).unwrap_or(128 + signal),
            Err(_) => -1,
        };
        self.last_exit.store(code, Ordering::Relaxed);
        self.last_signal.store(signal, Ordering::Relaxed);
    }

    /// The registration labels of a restarted app (none before its first restart).
    pub fn labels(&self) -> Vec<(String, String)> {
        let restarts = self.restarts.load(Ordering::Relaxed);
        if restarts == 0 {
            return Vec::new();
        }
        let (code, signal) = (self.last_exit.load(Ordering::Relaxed), self.last_signal.load(Ordering::Relaxed));
        let last = if signal > 0 { format!("signal-{signal}") } else { format!("exit-{code}") };
        vec![("weft.io/restarts".into(), restarts.to_string()), ("weft.io/last-exit".into(), last)]
    }

    fn render(&self) -> String {
        render_series(&[(String::new(), self)])
    }
}

/// A series: name, help, type, and how its value is read.
type Series = (&'static str, &'static str, &'static str, fn(&AppStatus) -> i64);

/// The app's series, one line each per (labels, status).
fn render_series(all: &[(String, &AppStatus)]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let series: [Series; 3] = [
        ("weft_app_up", "Whether the app runs and was ready.", "gauge", |s| i64::from(s.up.load(Ordering::Relaxed))),
        ("weft_app_restarts_total", "Times the app was started again after a crash.", "counter", |s| {
            s.restarts.load(Ordering::Relaxed) as i64
        }),
        ("weft_app_last_exit_code", "The app's last exit code (128 + signal; -1: none).", "gauge", |s| s.last_exit.load(Ordering::Relaxed)),
    ];
    for (name, help, kind, value) in series {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        for (labels, s) in all {
            let _ = writeln!(out, "{name}{labels} {}", value(s));
        }
    }
    out
}

/// Under `--replicas`: the instances and what the scaler wants.
#[derive(Default)]
pub struct FleetStatus {
    pub replicas: AtomicUsize,
    pub desired: AtomicUsize,
    /// Each running instance: (index, port, status).
    pub instances: Mutex<Vec<(usize, u16, Arc<AppStatus>)>>,
}

impl FleetStatus {
    fn render(&self) -> String {
        let instances = self.instances.lock().map(|i| i.clone()).unwrap_or_default();
        let labelled: Vec<(String, &AppStatus)> =
            instances.iter().map(|(i, port, s)| (format!("{{instance=\"{i}\",port=\"{port}\"}}"), s.as_ref())).collect();
        format!(
            "# HELP weft_app_replicas Instances of the app running.\n# TYPE weft_app_replicas gauge\nweft_app_replicas {}\n\
             # HELP weft_app_desired_replicas Instances the scaler recommends now.\n# TYPE weft_app_desired_replicas gauge\nweft_app_desired_replicas {}\n{}",
            self.replicas.load(Ordering::Relaxed),
            self.desired.load(Ordering::Relaxed),
            render_series(&labelled)
        )
    }
}

/// What `--metrics` shows: one app, or the instances of one.
#[derive(Clone)]
pub enum Page {
    One(Arc<AppStatus>),
    Fleet(Arc<FleetStatus>),
}

impl Page {
    fn render(&self) -> String {
        match self {
            Page::One(s) => s.render(),
            Page::Fleet(f) => f.render(),
        }
    }
}

/// Serves `GET /metrics` (any request, answered once, connection closed) on `addr`.
pub async fn serve(addr: SocketAddr, status: Page) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("--metrics {addr}: {e}"))?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let status = status.clone();
            tokio::spawn(async move {
                // (The request is read, bounded, and not looked at: there is one page.)
                let mut buf = [0u8; 2048];
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), s.read(&mut buf)).await;
                let body = status.render();
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body.as_bytes()).await;
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_become_labels_and_metrics() {
        let s = AppStatus::new();
        assert!(s.labels().is_empty());
        assert!(s.render().contains("weft_app_last_exit_code -1"));
        s.exited(&Ok(ExitStatus::from_raw(9)));
        s.restarts.store(1, Ordering::Relaxed);
        assert_eq!(s.labels()[1], ("weft.io/last-exit".to_owned(), "signal-9".to_owned()));
        s.exited(&Ok(ExitStatus::from_raw(3 << 8)));
        assert_eq!(s.labels(), vec![("weft.io/restarts".into(), "1".into()), ("weft.io/last-exit".into(), "exit-3".into())]);
        s.exited(&Ok(ExitStatus::from_raw(130 << 8)));
        assert_eq!(s.labels()[1].1, "exit-130", "an exit code of 130 is no signal");
        assert!(s.render().contains("weft_app_restarts_total 1\n") && s.render().contains("weft_app_up 0\n"));
    }

    #[test]
    fn a_fleets_series_carry_the_instance() {
        let f = FleetStatus::default();
        f.replicas.store(2, Ordering::Relaxed);
        f.desired.store(3, Ordering::Relaxed);
        let (a, b) = (AppStatus::new(), AppStatus::new());
        a.up.store(true, Ordering::Relaxed);
        f.instances.lock().unwrap().extend([(0, 8080, a), (1, 8081, b)]);
        let text = f.render();
        for line in ["weft_app_replicas 2\n", "weft_app_desired_replicas 3\n", "weft_app_up{instance=\"0\",port=\"8080\"} 1\n"] {
            assert!(text.contains(line), "{line}: {text}");
        }
        assert!(text.contains("weft_app_last_exit_code{instance=\"1\",port=\"8081\"} -1\n"), "{text}");
        assert_eq!(text.matches("# TYPE weft_app_up gauge").count(), 1, "{text}");
    }
}
