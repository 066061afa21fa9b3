//! The proxy in-process, for tests: its state built from YAML text without threads or
//! listeners ([`crate::run::build_shared`]), client connections served on in-memory
//! streams through the server's own code ([`crate::server::connection`]), and
//! upstream endpoints that are services in this process ([`Network`], behind
//! [`crate::transport::Transport::Memory`]). With every byte in memory, nothing waits
//! on the operating system, so tests under `#[tokio::test(start_paused = true)]` run on
//! a simulated clock: a 300 ms route timeout answers at exactly 300 ms, at once.
//!
//! Only in test builds (`cfg(test)`, or the `test-util` feature the crate's own
//! integration tests turn on); production builds do not carry it.
//!
//! ```ignore
//! let net = Network::new();
//! net.serve(addr("10.0.0.1:80"), |_req| async { answer(200, "a") });
//! net.refuse(addr("10.0.0.2:80"));
//! let h = Harness::new(&net, &service_entry("svc", &["10.0.0.1:80", "10.0.0.2:80"]));
//! let r = h.get("svc", "/").await;
//! assert_eq!((r.status, r.text()), (200, "a"));
//! ```

mod harness;
mod network;

pub use harness::{answer, Answer, Harness};
pub use network::Network;

/// A `SocketAddr` from text (test addresses are literals).
pub fn addr(s: &str) -> std::net::SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s:?} is not an address: {e}"))
}

/// A ServiceEntry for `host` (port 80, `resolution: STATIC`) with these endpoints
/// (`ip:port`), each labelled `v: <index>`.
pub fn service_entry(host: &str, endpoints: &[&str]) -> String {
    let eps: String = endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let (ip, port) = e.rsplit_once(':').unwrap_or((e, "80"));
            format!("  - {{address: {ip}, ports: {{http: {port}}}, labels: {{v: \"{i}\"}}}}\n")
        })
        .collect();
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {host}}}\nspec:\n  hosts: [{host}]\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints:\n{eps}"
    )
}

/// A VirtualService for `host` sending everything to it, with `http_extra` (indented
/// four spaces, e.g. `"    timeout: 300ms\n"`) added to its one HTTP route.
pub fn virtual_service(host: &str, http_extra: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {host}}}\nspec:\n  hosts: [{host}]\n  http:\n  - route: [{{destination: {{host: {host}}}}}]\n{http_extra}"
    )
}

/// A DestinationRule for `host` with this `trafficPolicy` (a YAML flow mapping).
pub fn destination_rule(host: &str, policy: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {host}}}\nspec:\n  host: {host}\n  trafficPolicy: {policy}\n"
    )
}
