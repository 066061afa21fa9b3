//! `weft run --intercept` (Linux): the app runs in a network namespace of its own whose
//! outbound TCP goes to the sidecar without the app knowing — Istio's `istio-iptables`
//! model, with nftables rules. The namespace has only a loopback, and every IPv4
//! address is local to it (`ip route add local default dev lo`), so a connection to any
//! address leaves the app and meets the rules:
//! - DNS (UDP and TCP port 53, to any server) → the sidecar's mesh DNS;
//! - loopback destinations stay the app's own (its health checks, the sidecar's
//!   connections to it);
//! - every other TCP connection → the sidecar's outbound listener, which reads where it
//!   was going from `SO_ORIGINAL_DST` ([`weft_proxy::intercept`]).
//!
//! Nothing from outside reaches the app except through the sidecar's inbound listener:
//! the namespace has no other interface. The sidecar itself stays in the machine's
//! namespace (its connections to the mesh are never intercepted: no exemption rule is
//! needed) and opens its outbound listener, its DNS sockets and its connections to the
//! app inside this one ([`weft_proxy::netns`]). IPv6 has no route in the namespace: an
//! app's IPv6 connections fail at once, and it falls back to IPv4.
//!
//! Needs CAP_NET_ADMIN: as root the namespace is made directly; as another user,
//! `weft run` first enters a user namespace of its own (mapping the user to root in it),
//! so that no privilege is needed — the app then sees itself as uid 0. `ip` (iproute2)
//! and `nft` (nftables) must be installed.

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

use weft_proxy::netns::NetNs;

/// The sidecar's outbound listener and DNS port inside the namespace (its own: they
/// cannot collide with anything on the machine).
pub const OUTBOUND: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 15001);
pub const DNS: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 15053);

/// Enters a user namespace of our own when not root: done first, while `weft run` is
/// one thread (the kernel refuses it to a process with threads).
pub fn enter_user_namespace() -> Result<(), String> {
    // SAFETY: geteuid/getegid(2) have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid == 0 {
        return Ok(());
    }
    // SAFETY: unshare(2) of the user namespace; fails (EINVAL) if threads exist.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!(
            "--intercept as a user other than root needs user namespaces ({e}); run as root, or allow them (sysctl kernel.unprivileged_userns_clone=1)"
        ));
    }
    let write = |path: &str, text: String| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("{path}: {e}"))
    };
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", format!("0 {uid} 1"))?;
    write("/proc/self/gid_map", format!("0 {gid} 1"))
}

/// The app's namespace, made and set up: loopback up, every IPv4 address local, the
/// interception rules. `app_port` must not be one of the sidecar's ports in it.
pub fn create(app_port: u16) -> Result<(NetNs, File), String> {
    check_port(app_port)?;
    let ns = NetNs::create(|| {
        command("ip", &["link", "set", "lo", "up"], None)?;
        command("ip", &["route", "add", "local", "default", "dev", "lo"], None)?;
        command("nft", &["-f", "-"], Some(&rules(OUTBOUND.port(), DNS.port())))
    })
    .map_err(|e| format!("--intercept: cannot set up the app's network namespace: {e}"))?;
    let file = File::open(ns.path()).map_err(|e| format!("{}: {e}", ns.path().display()))?;
    Ok((ns, file))
}

/// The app's port must not be one of the sidecar's in the namespace.
pub fn check_port(app_port: u16) -> Result<(), String> {
    if app_port == OUTBOUND.port() || app_port == DNS.port() {
        return Err(format!("--port {app_port}: with --intercept, ports {} and {} are the sidecar's", OUTBOUND.port(), DNS.port()));
    }
    Ok(())
}

/// The nftables rules (one table, `weft`): DNS to the mesh DNS, loopback left alone,
/// all other TCP to the outbound listener.
pub fn rules(outbound: u16, dns: u16) -> String {
    format!(
        "table ip weft {{\n\
         \tchain output {{\n\
         \t\ttype nat hook output priority -100; policy accept;\n\
         \t\tudp dport 53 redirect to :{dns}\n\
         \t\ttcp dport 53 redirect to :{dns}\n\
         \t\tip daddr 127.0.0.0/8 return\n\
         \t\tmeta l4proto tcp redirect to :{outbound}\n\
         \t}}\n\
         }}\n"
    )
}

/// Runs a setup command (looked for on PATH, then /usr/sbin and /sbin), feeding it
/// `input`; its stderr is the error.
fn command(name: &str, args: &[&str], input: Option<&str>) -> std::io::Result<()> {
    let sbin = ["/usr/sbin", "/sbin"].iter().map(|d| std::path::Path::new(d).join(name)).find(|p| p.is_file());
    let program = match sbin {
        Some(p) if !on_path(name) => p,
        _ => name.into(),
    };
    let mut child = Command::new(&program)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            let package = if name == "nft" { "nftables" } else { "iproute2" };
            std::io::Error::new(e.kind(), format!("{name}: {e} (install {package})"))
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(std::io::Error::other(format!("{name} {}: {}", args.join(" "), err.trim())))
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

/// Where the app's connections are made from: its namespace under `--intercept`, else here.
pub struct AppNet(pub Option<(NetNs, File)>);

impl AppNet {
    /// A connection to `addr` as the app would make it.
    pub async fn connect(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        match &self.0 {
            Some((ns, _)) => ns.connect(addr).await,
            None => tokio::net::TcpStream::connect(addr).await,
        }
    }
}

/// Makes `cmd`'s process join the namespace before it runs (the app).
pub fn join_before_exec(cmd: &mut tokio::process::Command, ns: &File) {
    let fd = ns.as_raw_fd();
    // SAFETY: between fork and exec only setns(2) runs, on a descriptor the parent keeps
    // open for as long as it starts apps (async-signal-safe, no allocation).
    unsafe {
        cmd.pre_exec(move || match libc::setns(fd, libc::CLONE_NEWNET) {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_send_dns_before_leaving_loopback_alone() {
        let r = rules(15001, 15053);
        let dns = r.find("udp dport 53").unwrap();
        let lo = r.find("127.0.0.0/8 return").unwrap();
        let tcp = r.find("meta l4proto tcp redirect to :15001").unwrap();
        assert!(dns < lo && lo < tcp, "{r}");
        assert!(r.contains("tcp dport 53 redirect to :15053"));
    }
}
