//! The mesh graph, drawn on the server as inline SVG: services on a circle, an arrow
//! per edge (source → destination) labelled with its request rate, error share and
//! p99; a table of the same numbers beneath (readable without the picture).

use std::fmt::Write;

use super::gather::Edge;
use super::html::esc;

const SIZE: f64 = 720.0;
const RADIUS: f64 = 270.0;

/// The numbers an edge is labelled with.
pub fn label(e: &Edge) -> String {
    let w = &e.window;
    let err = w.error_share().map(|s| format!("{:.1}%", s * 100.0)).unwrap_or_else(|| "–".into());
    let p99 = w.quantile_ms(0.99).map(|ms| format!("{ms:.0} ms")).unwrap_or_else(|| "–".into());
    format!("{:.1} req/s · {err} err · p99 {p99}", w.rate)
}

/// A service's short name (`reviews` of `reviews.default.svc.cluster.local`).
pub fn short(service: &str) -> &str {
    service.split('.').next().unwrap_or(service)
}

fn position(i: usize, n: usize) -> (f64, f64) {
    let angle = std::f64::consts::TAU * i as f64 / n.max(1) as f64 - std::f64::consts::FRAC_PI_2;
    (SIZE / 2.0 + RADIUS * angle.cos(), SIZE / 2.0 + RADIUS * angle.sin())
}

/// The SVG of `services` (the nodes, in order) and `edges` between them.
pub fn svg(services: &[String], edges: &[Edge]) -> String {
    let index: std::collections::HashMap<&str, usize> = services.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
    let at = |s: &str| index.get(s).map(|&i| position(i, services.len()));
    let mut out = format!(
        "<svg id=\"mesh\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{SIZE}\" height=\"{SIZE}\" viewBox=\"0 0 {SIZE} {SIZE}\">\
<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto\">\
<path d=\"M0,0 L10,5 L0,10 z\" fill=\"#555\"/></marker></defs>"
    );
    for e in edges {
        if let (Some(a), Some(b)) = (at(&e.source), at(&e.destination)) {
            edge(&mut out, a, b, e);
        }
    }
    for (i, s) in services.iter().enumerate() {
        let (x, y) = position(i, services.len());
        let _ = write!(
            out,
            "<g class=\"service\"><title>{full}</title><circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"26\" fill=\"#e8f0fe\" stroke=\"#36c\"/>\
<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-weight=\"bold\">{name}</text></g>",
            y + 42.0,
            full = esc(s),
            name = esc(short(s)),
        );
    }
    out + "</svg>"
}

/// One arrow from `a` to `b`, stopping at the circles, its label beside its middle
/// (on its left, so that the two directions between a pair do not overlap).
fn edge(out: &mut String, a: (f64, f64), b: (f64, f64), e: &Edge) {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len = (dx * dx + dy * dy).sqrt();
    let colour = if e.window.error_share().unwrap_or(0.0) > 0.05 { "#c00" } else { "#555" };
    let title = format!("{} → {}: {}", e.source, e.destination, label(e));
    if len < 1.0 {
        // A service calling itself: the label beside its node.
        let _ =
            write!(out, "<text x=\"{:.1}\" y=\"{:.1}\"><title>{}</title>{}</text>", a.0 + 30.0, a.1 - 30.0, esc(&title), esc(&label(e)));
        return;
    }
    let (ux, uy) = (dx / len, dy / len);
    let (x1, y1, x2, y2) = (a.0 + ux * 28.0, a.1 + uy * 28.0, b.0 - ux * 28.0, b.1 - uy * 28.0);
    let (mx, my) = ((x1 + x2) / 2.0 + uy * 12.0, (y1 + y2) / 2.0 - ux * 12.0);
    let _ = write!(
        out,
        "<g class=\"edge\"><title>{t}</title><line x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" stroke=\"{colour}\" \
stroke-width=\"2\" marker-end=\"url(#arrow)\"/><text x=\"{mx:.1}\" y=\"{my:.1}\" text-anchor=\"middle\" fill=\"{colour}\">{l}</text></g>",
        t = esc(&title),
        l = esc(&label(e)),
    );
}

/// The edges as a table: source, destination, rate, errors, p99.
pub fn table(edges: &[Edge]) -> String {
    if edges.is_empty() {
        return "<p class=\"muted\" id=\"no-edges\">No traffic reported yet: proxies report every 10 s, and an edge needs two reports.</p>"
            .into();
    }
    let mut t = String::from("<table id=\"edges\"><tr><th>source</th><th>destination</th><th>req/s</th><th>errors</th><th>p99</th></tr>");
    for e in edges {
        let w = &e.window;
        let _ = write!(
            t,
            "<tr class=\"edge\"><td class=\"source\">{}</td><td class=\"destination\">{}</td><td class=\"rate\">{:.2}</td><td class=\"errors\">{}</td><td class=\"p99\">{}</td></tr>",
            esc(&e.source),
            esc(&e.destination),
            w.rate,
            w.error_share().map(|s| format!("{:.1} %", s * 100.0)).unwrap_or_else(|| "–".into()),
            w.quantile_ms(0.99).map(|ms| format!("{ms:.1} ms")).unwrap_or_else(|| "–".into()),
        );
    }
    t + "</table>"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::stats::Window;

    #[test]
    fn the_graph_escapes_names_and_labels_its_edges() {
        let services = vec!["<b>.default.svc.cluster.local".to_owned(), "reviews.default.svc.cluster.local".to_owned()];
        let window = Window { requests: 100, errors: 10, buckets: vec![100; 13], rate: 12.5 };
        let edges = vec![Edge { source: services[0].clone(), destination: services[1].clone(), window }];
        let svg = svg(&services, &edges);
        assert!(!svg.contains("<b>") && svg.contains("&lt;b&gt;"), "{svg}");
        assert!(svg.contains("12.5 req/s · 10.0% err · p99 0 ms"), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(table(&edges).contains("<td class=\"rate\">12.50</td>"));
    }
}
