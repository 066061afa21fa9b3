//! The control plane's own `/metrics`: the store, the proxies following it, refused
//! calls and issued certificates, and (with tracing) its spans.

use super::Server;

impl Server {
    /// The Prometheus text of `/metrics`.
    pub(super) async fn metrics_text(&self) -> String {
        let p = self.plane.lock().await;
        let text = format!(
                    "# HELP weft_control_revision The store's latest revision.\n# TYPE weft_control_revision gauge\nweft_control_revision {}\n\
                     # HELP weft_control_resources Config resources stored.\n# TYPE weft_control_resources gauge\nweft_control_resources {}\n\
                     # HELP weft_control_registered_endpoints Endpoints in the registry.\n# TYPE weft_control_registered_endpoints gauge\nweft_control_registered_endpoints {}\n\
                     # HELP weft_control_proxies_connected Proxies waiting on /v1/watch.\n# TYPE weft_control_proxies_connected gauge\nweft_control_proxies_connected {}\n\
                     # HELP weft_control_api_connections_total API connections accepted (with HTTPS, each a TLS handshake).\n# TYPE weft_control_api_connections_total counter\nweft_control_api_connections_total {}\n",
                    p.revision(),
                    p.list(None, None, None).len(),
                    p.registrations().len(),
                    self.pushed.receiver_count(),
                    self.connections.load(std::sync::atomic::Ordering::Relaxed),
                );
        let zk = self.zookeeper.get().map(|z| z.metrics()).unwrap_or_default();
        text + &self.proxies.metrics() + &self.auth_metrics() + &self.trace_metrics() + &zk + &self.admission_metrics()
    }

    fn admission_metrics(&self) -> String {
        let Some(a) = self.admission.get() else { return String::new() };
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let (open, unproven) = a.held();
        format!(
            "# HELP weft_control_api_connections API connections held, and those not yet proven by a call with valid credentials.\n# TYPE weft_control_api_connections gauge\n\
             weft_control_api_connections{{state=\"all\"}} {open}\nweft_control_api_connections{{state=\"unproven\"}} {unproven}\n\
             # HELP weft_control_api_connections_closed_total API connections closed to make room: unproven ones whose source held too many or when all were taken, proven ones whose credential held too many, or held the most when all were proven and taken.\n# TYPE weft_control_api_connections_closed_total counter\n\
             weft_control_api_connections_closed_total{{reason=\"source\"}} {}\nweft_control_api_connections_closed_total{{reason=\"full\"}} {}\nweft_control_api_connections_closed_total{{reason=\"credential\"}} {}\nweft_control_api_connections_closed_total{{reason=\"share\"}} {}\n\
             # HELP weft_control_api_connections_refused_total API connections closed at accept: every one held was proven.\n# TYPE weft_control_api_connections_refused_total counter\n\
             weft_control_api_connections_refused_total {}\n",
            load(&a.closed_for_source),
            load(&a.closed_for_room),
            load(&a.closed_for_principal),
            load(&a.closed_over_share),
            load(&a.refused)
        )
    }

    fn trace_metrics(&self) -> String {
        let Some(t) = self.tracer.get() else { return String::new() };
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        format!(
            "# HELP weft_trace_spans_exported_total Spans the OTLP collector accepted.\n# TYPE weft_trace_spans_exported_total counter\nweft_trace_spans_exported_total {}\n\
             # HELP weft_trace_spans_dropped_total Spans dropped: queue full, or the collector failed or refused them.\n# TYPE weft_trace_spans_dropped_total counter\nweft_trace_spans_dropped_total {}\n",
            load(t.exported),
            load(t.dropped)
        )
    }

    fn auth_metrics(&self) -> String {
        let mut t = String::from(
            "# HELP weft_control_auth_refused_total API calls refused, by reason.\n# TYPE weft_control_auth_refused_total counter\n",
        );
        for (i, reason) in ["no_token", "bad_token", "expired", "forbidden"].iter().enumerate() {
            let n = self.refused[i].load(std::sync::atomic::Ordering::Relaxed);
            t += &format!("weft_control_auth_refused_total{{reason=\"{reason}\"}} {n}\n");
        }
        let (issued, refused) =
            (self.issued.load(std::sync::atomic::Ordering::Relaxed), self.refused_csrs.load(std::sync::atomic::Ordering::Relaxed));
        t += &format!("# HELP weft_control_certificates_issued_total Workload certificates signed.\n# TYPE weft_control_certificates_issued_total counter\nweft_control_certificates_issued_total {issued}\n");
        t += &format!("# HELP weft_control_csr_refused_total CSRs refused (another identity, malformed, out-of-range TTL).\n# TYPE weft_control_csr_refused_total counter\nweft_control_csr_refused_total {refused}\n");
        t
    }
}
