//! The console's read-only pages: the mesh graph (`/ui`), the services with their
//! endpoints (`/ui/services`) and the proxies following the control plane
//! (`/ui/proxies`).

use std::collections::BTreeSet;
use std::fmt::Write;

use http::StatusCode;
use tokio::time::Instant;

use super::graph;
use super::html::{esc, html, page};
use crate::api::{Resp, Server};

/// Edges drawn in the picture, and listed in the table, at most (the busiest first): the
/// page stays small and quick however many edges the reports hold (the control plane
/// serves everything on one thread).
const MAX_DRAWN: usize = 100;
const MAX_LISTED: usize = 1_000;
/// Services drawn on the circle, at most.
const MAX_NODES: usize = 100;

/// `/ui`: the busiest reported edges, drawn between their services (and registered
/// services while there is room), then listed.
pub async fn mesh(server: &Server) -> Resp {
    let mut edges = server.reports.edges(Instant::now());
    edges.sort_by(|a, b| b.window.rate.total_cmp(&a.window.rate));
    let more = edges.len().saturating_sub(MAX_LISTED);
    edges.truncate(MAX_LISTED);
    let drawn = &edges[..edges.len().min(MAX_DRAWN)];
    let mut services: BTreeSet<String> = drawn.iter().flat_map(|e| [e.source.clone(), e.destination.clone()]).collect();
    for s in server.plane.lock().await.registrations_by_service().into_keys() {
        if services.len() >= MAX_NODES {
            break;
        }
        services.insert(s);
    }
    let services: Vec<String> = services.into_iter().collect();
    let note = match (edges.len() > MAX_DRAWN, more) {
        (false, _) => String::new(),
        (true, 0) => format!("<p class=\"muted\">The {MAX_DRAWN} busiest of {} edges are drawn; all are listed.</p>", edges.len()),
        (true, n) => format!(
            "<p class=\"muted\">The {MAX_DRAWN} busiest edges are drawn and the {MAX_LISTED} busiest listed; {n} more are not shown.</p>"
        ),
    };
    let body = format!(
        "<p>Services and the traffic between them over the proxies' last two reports (each proxy reports every ~10 s).</p>{}{note}{}",
        graph::svg(&services, drawn),
        graph::table(&edges)
    );
    html(StatusCode::OK, page("mesh", &body))
}

/// `/ui/services`: each registered service's endpoints, with what the proxies'
/// outlier detection says of them.
pub async fn services(server: &Server) -> Resp {
    let ejected = server.reports.ejected(Instant::now());
    let p = server.plane.lock().await;
    let mut body = String::new();
    for (service, regs) in p.registrations_by_service() {
        let _ = write!(
            body,
            "<h2 class=\"service\">{}</h2><table><tr><th>address</th><th>labels</th><th>locality</th><th>weight</th><th>TTL left</th><th>identity</th><th>outlier detection</th></tr>",
            esc(&service)
        );
        for r in regs {
            let ttl = match (r.ttl_ms, p.ttl_left(&service, &r.address)) {
                (Some(_), Some(left)) => format!("{:.1} s", left.as_secs_f64()),
                (Some(ttl), None) => format!("lease of {:.1} s", ttl as f64 / 1000.0),
                (None, _) => "none".into(),
            };
            let labels: Vec<String> = r.labels.iter().map(|(k, v)| esc(&format!("{k}={v}"))).collect();
            let ejections: Vec<String> = ejected
                .iter()
                .filter(|(_, e)| e.address == r.address && e.service.eq_ignore_ascii_case(&service))
                .map(|(node, e)| {
                    format!(
                        "<span class=\"bad\">ejected by {} ({}, {:.1} s left)</span>",
                        esc(node),
                        esc(&e.reason),
                        e.remaining_ms as f64 / 1000.0
                    )
                })
                .collect();
            let _ = write!(
                body,
                "<tr class=\"endpoint\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{ttl}</td><td>{}</td><td>{}</td></tr>",
                esc(&r.address),
                labels.join("<br>"),
                esc(r.locality.as_deref().unwrap_or("")),
                r.weight.map(|w| w.to_string()).unwrap_or_default(),
                esc(r.identity.as_deref().unwrap_or("")),
                if ejections.is_empty() { "<span class=\"ok\">serving</span>".to_owned() } else { ejections.join("<br>") },
            );
        }
        body += "</table>";
    }
    if body.is_empty() {
        body = "<p class=\"muted\">No endpoints are registered (weft register).</p>".into();
    }
    html(StatusCode::OK, page("services", &body))
}

/// `/ui/proxies`: node, acknowledged revision and lag, last NACK, last seen.
pub async fn proxies(server: &Server) -> Resp {
    let latest = server.plane.lock().await.revision();
    let mut t = format!(
        "<p>Latest revision: <b id=\"latest\">{latest}</b></p><table id=\"proxies\"><tr><th>node</th><th>acknowledged</th><th>lag</th>\
<th>last NACK</th><th>last seen</th><th>watching</th><th>identity</th></tr>"
    );
    for s in server.proxies.status(latest, str::to_owned) {
        let nack = match (s.nacked, &s.nack_reason) {
            (Some(rev), Some(why)) => format!("<span class=\"bad\">revision {rev}: {}</span>", esc(why)),
            _ => "none".into(),
        };
        let _ = write!(
            t,
            "<tr class=\"proxy\"><td class=\"node\">{}</td><td class=\"acked\">{}</td><td class=\"lag\">{}</td><td>{nack}</td><td>{:.1} s ago</td><td>{}</td><td>{}</td></tr>",
            esc(&s.node),
            s.acked,
            s.lag,
            s.last_seen_ms_ago as f64 / 1000.0,
            if s.connected { "yes" } else { "no" },
            esc(s.identity.as_deref().unwrap_or("")),
        );
    }
    html(StatusCode::OK, page("proxies", &(t + "</table>")))
}
