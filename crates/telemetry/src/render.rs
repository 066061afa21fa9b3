//! Prometheus text exposition (version 0.0.4) of [`Metrics`].

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::registry::{DestLabels, DnsFailure, DnsResult, HandshakeFailure, Metrics, PeerId, PeerLabels};

impl Metrics {
    /// Renders every metric; called by the admin endpoint on each scrape.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let labels = self.dest_labels.pin();
        let unknown = DestLabels::unknown();
        let peers = self.peer_labels.pin();
        let series = self.series.pin();
        let mut rows: Vec<_> = series.iter().collect();
        rows.sort_by_key(|(k, _)| (k.dest.0, k.peer.0, k.code, k.flags.0, k.grpc_status));

        let base = |out: &mut String, d: &DestLabels, peer: PeerId, code: u16, flags: &str, proto: &str, grpc: i16| {
            let grpc = if grpc < 0 { String::new() } else { grpc.to_string() };
            // mTLS (an interned peer): Istio's principals and `mutual_tls`; plaintext: none.
            let (source_principal, destination_principal, security) = match peers.get(&peer) {
                Some(PeerLabels { source_principal, destination_principal }) => {
                    (source_principal.as_str(), destination_principal.as_str(), "mutual_tls")
                }
                None => ("unknown", "unknown", "none"),
            };
            let (reporter, source_workload, source_namespace) = match d.inbound {
                true => ("destination", "unknown", "unknown"),
                false => ("source", self.source_workload.as_str(), self.source_namespace.as_str()),
            };
            let _ = write!(
                out,
                "reporter=\"{}\",source_workload=\"{}\",source_workload_namespace=\"{}\",source_principal=\"{}\",source_app=\"{}\",source_version=\"unknown\",destination_workload=\"{}\",destination_workload_namespace=\"{}\",destination_principal=\"{}\",destination_app=\"{}\",destination_version=\"{}\",destination_service=\"{}\",destination_service_name=\"{}\",destination_service_namespace=\"{}\",request_protocol=\"{}\",response_code=\"{}\",grpc_response_status=\"{}\",response_flags=\"{}\",connection_security_policy=\"{}\"",
                reporter,
                esc(source_workload),
                esc(source_namespace),
                esc(source_principal),
                esc(source_workload),
                esc(d.short_name()),
                esc(&d.namespace),
                esc(destination_principal),
                esc(d.short_name()),
                esc(&d.version),
                esc(&d.service),
                esc(d.short_name()),
                esc(&d.namespace),
                proto,
                code,
                grpc,
                flags,
                security,
            );
        };

        out.push_str("# HELP istio_requests_total Requests handled, by destination and response.\n# TYPE istio_requests_total counter\n");
        for (k, s) in &rows {
            let d = labels.get(&k.dest).unwrap_or(&unknown);
            out.push_str("istio_requests_total{");
            base(&mut out, d, k.peer, k.code, &k.flags.to_string(), k.protocol.as_str(), k.grpc_status);
            let _ = writeln!(out, "}} {}", s.requests.load(Ordering::Relaxed));
        }
        for (name, help, pick) in [
            ("istio_request_duration_milliseconds", "Request duration, until the response's last byte.", 0),
            ("istio_request_bytes", "Request body size.", 1),
            ("istio_response_bytes", "Response body size.", 2),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (k, s) in &rows {
                let d = labels.get(&k.dest).unwrap_or(&unknown);
                let mut lbl = String::with_capacity(512);
                base(&mut lbl, d, k.peer, k.code, &k.flags.to_string(), k.protocol.as_str(), k.grpc_status);
                let (buckets, count, sum) = match pick {
                    0 => s.duration_ms.snapshot(),
                    1 => s.request_bytes.snapshot(),
                    _ => s.response_bytes.snapshot(),
                };
                for (b, c) in buckets {
                    let _ = writeln!(out, "{name}_bucket{{{lbl},le=\"{b}\"}} {c}");
                }
                let _ = writeln!(out, "{name}_bucket{{{lbl},le=\"+Inf\"}} {count}");
                let _ = writeln!(out, "{name}_sum{{{lbl}}} {sum}");
                let _ = writeln!(out, "{name}_count{{{lbl}}} {count}");
            }
        }

        let tcp = self.tcp.pin();
        let mut trows: Vec<_> = tcp.iter().collect();
        trows.sort_by_key(|(k, _)| (k.0 .0, k.1 .0));
        for (name, help, kind, f) in [
            ("istio_tcp_connections_opened_total", "Upstream connections opened.", "counter", 0),
            ("istio_tcp_connections_closed_total", "Upstream connections closed.", "counter", 1),
            ("istio_tcp_sent_bytes_total", "Bytes sent upstream through tunnels (upgrade, CONNECT).", "counter", 2),
            ("istio_tcp_received_bytes_total", "Bytes received from upstream through tunnels.", "counter", 3),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (k, s) in &trows {
                let d = labels.get(&k.0).unwrap_or(&unknown);
                let v = [&s.opened, &s.closed, &s.sent, &s.received][f].load(Ordering::Relaxed);
                let _ = write!(out, "{name}{{");
                base(&mut out, d, k.1, 0, "-", "tcp", -1);
                let _ = writeln!(out, "}} {v}");
            }
        }

        let c = &self.counters;
        let mut counter = |name: &str, help: &str, kind: &str, v: &std::sync::atomic::AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}", v.load(Ordering::Relaxed));
        };
        counter("weft_downstream_connections_total", "Client connections accepted.", "counter", &c.downstream_connections);
        counter("weft_downstream_connections_active", "Client connections open now.", "gauge", &c.downstream_connections_active);
        counter(
            "weft_downstream_overflow_total",
            "Client connections closed at accept because the proxy held --max-connections.",
            "counter",
            &c.downstream_overflow,
        );
        counter("weft_identity_renewals_total", "Workload certificates renewed (at half-life).", "counter", &c.identity_renewals);
        counter(
            "weft_identity_cert_expiry_timestamp_seconds",
            "When the workload certificate in use expires (unix seconds; 0 without a mesh identity).",
            "gauge",
            &c.identity_expiry,
        );
        counter(
            "weft_inbound_plaintext_refused_total",
            "Plaintext connections the inbound listener closed because PeerAuthentication requires mTLS (STRICT).",
            "counter",
            &c.inbound_plaintext_refused,
        );
        let name = "weft_inbound_tls_handshake_failures_total";
        let _ = writeln!(
            out,
            "# HELP {name} TLS connections the inbound listener refused (unknown CA, expired or missing client certificate, timeout, no identity).\n# TYPE {name} counter"
        );
        for why in HandshakeFailure::ALL {
            let v = c.inbound_tls_handshake_failures[why as usize].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{reason=\"{}\"}} {v}", why.as_str());
        }
        let name = "weft_dns_queries_total";
        let _ = writeln!(
            out,
            "# HELP {name} Mesh DNS queries (--dns): answered locally (mesh names), forwarded to the upstream resolver, or failed.\n# TYPE {name} counter"
        );
        for r in DnsResult::ALL {
            let _ = writeln!(out, "{name}{{result=\"{}\"}} {}", r.as_str(), c.dns_queries[r as usize].load(Ordering::Relaxed));
        }
        let name = "weft_dns_failures_total";
        let _ = writeln!(
            out,
            "# HELP {name} Mesh DNS failures by reason: malformed or oversized queries, upstream timeouts and errors, overload, TCP connections refused at the limit.\n# TYPE {name} counter"
        );
        for why in DnsFailure::ALL {
            let _ = writeln!(out, "{name}{{reason=\"{}\"}} {}", why.as_str(), c.dns_failures[why as usize].load(Ordering::Relaxed));
        }
        let name = "weft_inbound_tls_handshakes_total";
        let _ = writeln!(out, "# HELP {name} mTLS handshakes the inbound listener completed, full or resumed.\n# TYPE {name} counter");
        for (kind, v) in [("full", &c.inbound_tls_handshakes[0]), ("resumed", &c.inbound_tls_handshakes[1])] {
            let _ = writeln!(out, "{name}{{kind=\"{kind}\"}} {}", v.load(Ordering::Relaxed));
        }
        let name = "weft_intercepted_connections_total";
        let _ = writeln!(
            out,
            "# HELP {name} Connections transparent interception brought to the outbound listener, by kind.\n# TYPE {name} counter"
        );
        for (kind, v) in crate::registry::INTERCEPTED_KINDS.iter().zip(&c.intercepted) {
            let _ = writeln!(out, "{name}{{kind=\"{kind}\"}} {}", v.load(Ordering::Relaxed));
        }
        let mut counter = |name: &str, help: &str, kind: &str, v: &std::sync::atomic::AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}", v.load(Ordering::Relaxed));
        };
        counter(
            "weft_downstream_idle_timeouts_total",
            "Client connections closed after --idle-timeout.",
            "counter",
            &c.downstream_idle_timeouts,
        );
        counter(
            "weft_downstream_header_timeouts_total",
            "Client connections closed because a request head took longer than --header-read-timeout.",
            "counter",
            &c.downstream_header_timeouts,
        );
        counter(
            "weft_accept_exhausted_total",
            "Accepts that failed for want of file descriptors or memory (EMFILE, ENFILE), each followed by a 100 ms pause.",
            "counter",
            &c.accept_exhausted,
        );
        counter("weft_no_route_total", "Requests for a host no route serves (404, flag NR).", "counter", &c.no_route);
        counter(
            "weft_discovery_timeouts_total",
            "Requests that waited in vain for a service asked for on demand (503, flag NC).",
            "counter",
            &c.discovery_timeouts,
        );
        counter("weft_discovery_hosts", "Services asked for on demand and held now.", "gauge", &c.discovery_hosts);
        counter("weft_discovery_names", "The mesh's service names known (on-demand discovery).", "gauge", &c.discovery_names);
        counter("weft_no_healthy_upstream_total", "Requests whose destination had no endpoint (503, flag UH).", "counter", &c.no_endpoint);
        counter("weft_downstream_bad_request_total", "Malformed requests rejected (400).", "counter", &c.bad_request);
        counter(
            "weft_downstream_header_too_large_total",
            "Requests whose headers exceeded the limit (431).",
            "counter",
            &c.header_too_large,
        );
        counter(
            "weft_downstream_reset_total",
            "Clients that disconnected before their response completed (flag DC).",
            "counter",
            &c.downstream_reset,
        );
        counter(
            "weft_upstream_connect_failure_total",
            "Upstream connections that failed (flag UF).",
            "counter",
            &c.upstream_connect_failure,
        );
        counter("weft_upstream_reset_total", "Upstream connections that broke mid-request (flag UC).", "counter", &c.upstream_reset);
        counter("weft_upstream_timeout_total", "Requests that hit their route timeout (flag UT).", "counter", &c.upstream_timeout);
        counter(
            "weft_stream_idle_timeouts_total",
            "Requests whose stream saw no activity for --stream-idle-timeout (flag SI).",
            "counter",
            &c.stream_idle_timeouts,
        );
        counter("weft_upstream_retries_total", "Tries after the first, made by a route's retry policy.", "counter", &c.retries);
        counter("weft_retry_limit_reached_total", "Requests whose retries ran out (flag URX).", "counter", &c.retry_limit_reached);
        counter("weft_fault_delays_total", "Requests delayed by a route's fault (flag DI).", "counter", &c.faults_delayed);
        counter("weft_fault_aborts_total", "Requests aborted by a route's fault (flag FI).", "counter", &c.faults_aborted);
        counter("weft_hedged_requests_total", "Extra tries started by a Hedging policy.", "counter", &c.hedges);
        counter("weft_upstream_overflow_total", "Requests refused by a circuit breaker (flag UO).", "counter", &c.overflow);
        counter("weft_retry_overflow_total", "Retries not made: maxRetries or the retry budget.", "counter", &c.retry_overflow);
        counter(
            "weft_retry_body_unreplayable_total",
            "Retries not made: the request body did not fit the replay buffer.",
            "counter",
            &c.retry_body_unreplayable,
        );
        counter("weft_adaptive_concurrency_shed_total", "Requests shed by adaptive concurrency (503).", "counter", &c.shed);
        counter("weft_rate_limited_total", "Requests answered 429 by a RateLimit (flag RL).", "counter", &c.rate_limited);
        counter("weft_authz_denied_total", "Requests denied by an AuthorizationPolicy (403, flag RBAC).", "counter", &c.authz_denied);
        counter("weft_authz_audited_total", "Requests an AUDIT AuthorizationPolicy matched.", "counter", &c.authz_audited);
        counter(
            "weft_authz_dry_run_denied_total",
            "Requests the dry-run (istio.io/dry-run) AuthorizationPolicies would have denied; not enforced.",
            "counter",
            &c.authz_dry_run_denied,
        );
        counter("weft_jwt_verified_total", "Requests whose JWT a RequestAuthentication verified.", "counter", &c.jwt_verified);
        counter("weft_jwt_refused_total", "Requests refused for a JWT that failed verification (401).", "counter", &c.jwt_refused);
        counter("weft_jwks_fetched_total", "jwksUri fetches that brought keys.", "counter", &c.jwks_fetched);
        counter("weft_trace_spans_exported_total", "Spans the OTLP collector accepted.", "counter", &c.spans_exported);
        counter(
            "weft_trace_spans_dropped_total",
            "Spans dropped: the export queue was full, or the collector failed or refused them.",
            "counter",
            &c.spans_dropped,
        );
        counter("weft_influxdb_pushes_total", "Metrics pushes InfluxDB accepted (--influxdb-url).", "counter", &c.influxdb_pushes);
        counter(
            "weft_influxdb_push_failed_total",
            "Metrics pushes to InfluxDB that failed, were refused or timed out.",
            "counter",
            &c.influxdb_push_failures,
        );
        counter("weft_jwks_fetch_failed_total", "jwksUri fetches that failed (the keys held are kept).", "counter", &c.jwks_fetch_failed);
        counter("weft_cache_hits_total", "Requests answered by a ResponseCache (fresh or revalidated).", "counter", &c.cache_hits);
        counter("weft_cache_misses_total", "Cacheable requests a ResponseCache sent upstream.", "counter", &c.cache_misses);
        counter("weft_cache_evictions_total", "ResponseCache entries evicted for room.", "counter", &c.cache_evictions);
        counter("weft_outlier_ejections_total", "Endpoints ejected by outlier detection.", "counter", &c.outlier_ejections);
        counter("weft_mirrored_requests_total", "Requests copied to a mirror destination.", "counter", &c.mirrored);
        counter("weft_upgrades_total", "Connections upgraded (WebSocket) or tunnelled (CONNECT).", "counter", &c.upgrades);
        counter("weft_config_reloads_total", "Config reloads applied.", "counter", &c.reloads_ok);
        counter("weft_config_reload_failures_total", "Config reloads rejected; the running config stayed.", "counter", &c.reloads_failed);
        counter("weft_control_plane_revision", "The control plane's revision this proxy runs.", "gauge", &c.control_plane_revision);
        counter(
            "weft_control_plane_nacks_total",
            "Meshes from the control plane refused (the last good one kept).",
            "counter",
            &c.control_plane_nacks,
        );
        counter("weft_control_plane_full_updates_total", "Whole meshes received from the control plane.", "counter", &c.control_plane_full);
        counter(
            "weft_control_plane_deltas_total",
            "Deltas (what changed since the revision held) received from the control plane.",
            "counter",
            &c.control_plane_deltas,
        );
        counter(
            "weft_control_plane_received_bytes_total",
            "Bytes of mesh received from the control plane.",
            "counter",
            &c.control_plane_bytes,
        );
        counter(
            "weft_control_plane_in_place_updates_total",
            "Deltas that changed only endpoints and VirtualServices, applied in place (no recompilation of the mesh).",
            "counter",
            &c.control_plane_in_place,
        );
        counter(
            "weft_control_plane_routes_in_place_updates_total",
            "Deltas applied in place that changed VirtualServices (only their virtual hosts recompiled).",
            "counter",
            &c.control_plane_routes_in_place,
        );
        counter("weft_config_revision", "Revision of the active config (1 = the config at start).", "gauge", &c.config_revision);
        out
    }
}

fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['"', '\\', '\n']) {
        s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n").into()
    } else {
        s.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;

    #[test]
    fn renders_istio_names_and_labels() {
        let m = Metrics::new("productpage", "default");
        let d = m.dest_id(DestLabels {
            service: "reviews.default.svc".into(),
            namespace: "default".into(),
            version: "v2".into(),
            inbound: false,
        });
        let key = SeriesKey { dest: d, code: 503, flags: ResponseFlags::UH, protocol: Protocol::Http, grpc_status: -1, peer: PeerId(0) };
        m.record(key, 3.0, 0, 19);
        let t = m.render();
        assert!(t.contains("istio_requests_total{reporter=\"source\",source_workload=\"productpage\""), "{t}");
        assert!(t.contains("destination_service=\"reviews.default.svc\",destination_service_name=\"reviews\""));
        assert!(t.contains("response_code=\"503\",grpc_response_status=\"\",response_flags=\"UH\""));
        assert!(t.contains("istio_request_duration_milliseconds_bucket{") && t.contains(",le=\"5\"} 1"));
        assert!(t.contains("source_principal=\"unknown\"") && t.contains("connection_security_policy=\"none\""), "{t}");
        assert_eq!(m.requests_to("reviews.default.svc"), 1);
    }

    #[test]
    fn an_mtls_request_carries_its_principals_and_mutual_tls() {
        let m = Metrics::new("reviews", "default");
        let d = m.dest_id(DestLabels {
            service: "reviews.default.svc.cluster.local".into(),
            namespace: "default".into(),
            version: "unknown".into(),
            inbound: true,
        });
        let labels = |src: &str| PeerLabels {
            source_principal: format!("spiffe://cluster.local/ns/default/sa/{src}"),
            destination_principal: "spiffe://cluster.local/ns/default/sa/reviews".into(),
        };
        let peer = m.peer_id(labels("productpage"));
        assert_eq!(m.peer_id(labels("productpage")), peer, "interned once");
        assert_ne!(m.peer_id(labels("ratings")), peer);
        assert_ne!(peer, PeerId(0));
        let key = SeriesKey { dest: d, code: 200, flags: ResponseFlags::NONE, protocol: Protocol::Http, grpc_status: -1, peer };
        m.record(key, 1.0, 0, 2);
        m.record(SeriesKey { peer: PeerId(0), ..key }, 1.0, 0, 2);
        let t = m.render();
        let mtls: Vec<_> = t.lines().filter(|l| l.starts_with("istio_requests_total{") && l.contains("mutual_tls")).collect();
        assert_eq!(mtls.len(), 1, "{t}");
        assert!(mtls[0].contains("source_principal=\"spiffe://cluster.local/ns/default/sa/productpage\""), "{}", mtls[0]);
        assert!(mtls[0].contains("destination_principal=\"spiffe://cluster.local/ns/default/sa/reviews\""), "{}", mtls[0]);
        assert!(mtls[0].contains("connection_security_policy=\"mutual_tls\""));
        let plain =
            t.lines().filter(|l| l.starts_with("istio_requests_total{") && l.contains("connection_security_policy=\"none\"")).count();
        assert_eq!(plain, 1, "{t}");
    }
}
