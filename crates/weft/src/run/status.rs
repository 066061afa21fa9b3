//! What `weft run` tells about its app: `--metrics ADDR` serves `weft_app_up`,
//! `weft_app_restarts_total` and `weft_app_last_exit_code` (Prometheus text), and a
//! restarted app's registration carries `weft.io/restarts` and `weft.io/last-exit`
//! labels, so that `weft get endpoints` shows them.

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

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
        format!(
            "# HELP weft_app_up Whether the app runs and was ready.\n# TYPE weft_app_up gauge\nweft_app_up {}\n\
             # HELP weft_app_restarts_total Times the app was started again after a crash.\n# TYPE weft_app_restarts_total counter\nweft_app_restarts_total {}\n\
             # HELP weft_app_last_exit_code The app's last exit code (128 + signal; -1: none).\n# TYPE weft_app_last_exit_code gauge\nweft_app_last_exit_code {}\n",
            u8::from(self.up.load(Ordering::Relaxed)),
            self.restarts.load(Ordering::Relaxed),
            self.last_exit.load(Ordering::Relaxed),
        )
    }
}

/// Serves `GET /metrics` (any request, answered once, connection closed) on `addr`.
pub async fn serve(addr: SocketAddr, status: Arc<AppStatus>) -> Result<(), String> {
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
}
