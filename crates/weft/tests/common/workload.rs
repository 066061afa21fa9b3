//! Workloads for the tests: bootstrap tokens and sidecars that follow a control plane.

use std::path::PathBuf;

use super::{spawn, temp_dir, text, Plane, Proc};

/// A sidecar of service `reviews` (app 127.0.0.1:9) following `cp` with the bootstrap
/// token in `token`, and `extra` flags; returned once it listens (it has its certificate).
pub fn spawn_reviews_sidecar(cp: &Plane, token: &std::path::Path, extra: &[&str]) -> Proc {
    let (url, ca) = (cp.url(), cp.ca_file());
    let (ca, token) = (ca.to_str().unwrap(), token.to_str().unwrap());
    let mut args = vec!["proxy", "--control-plane", &url, "--ca-file", ca, "--token-file", token, "--listen", "127.0.0.1:0"];
    args.extend_from_slice(&["--inbound", "127.0.0.1:0", "--app", "127.0.0.1:9", "--service", "reviews"]);
    args.extend_from_slice(extra);
    spawn(&args)
}

/// A workload token for `ns/sa` from the control plane, in a file (for `--token-file`).
pub fn workload_token(cp: &Plane, ns: &str, sa: &str) -> PathBuf {
    let out = cp.weft(&["token", "create", "--namespace", ns, "--service-account", sa]);
    assert!(out.status.success(), "{}", text(&out));
    let f = temp_dir().join(format!("{ns}-{sa}.token"));
    std::fs::write(&f, String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    f
}
