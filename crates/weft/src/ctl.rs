//! The control plane's client commands: `weft apply`, `get`, `delete`, `history`,
//! `rollback`, `register`, `deregister`, `status`. Each sends one message of
//! `weft_api` over HTTP/1.1 to `--server` (default `$WEFT_SERVER`, else
//! `http://127.0.0.1:15010`) with a small blocking client (one request, one
//! connection) and decodes the typed answer. An https:// control plane is verified
//! with the mesh root (`--ca-file`, `$WEFT_CA_FILE`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use weft_api::{
    ApplyRequest, Committed, EndpointRef, ErrorAnswer, HistoryEntry, Listing, Message, Registration, ResourceQuery, Rollback, StatusAnswer,
};

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:15010";

#[derive(clap::Args, Clone)]
pub struct ServerArg {
    /// The control plane's URL: https://HOST:PORT (with --ca-file), or http:// for an
    /// --insecure one (default: $WEFT_SERVER, else http://127.0.0.1:15010).
    #[arg(long, env = "WEFT_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// A file holding the API token to send (default: $WEFT_TOKEN_FILE; or the token
    /// itself in $WEFT_TOKEN).
    #[arg(long, env = "WEFT_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The mesh root bundle (PEM) an https:// control plane is verified with: its
    /// <ca-dir>/root-cert.pem (default: $WEFT_CA_FILE).
    #[arg(long, env = "WEFT_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

impl ServerArg {
    /// The token to send: `--token-file`'s, else `$WEFT_TOKEN`, else none.
    pub fn token(&self) -> Result<Option<String>, String> {
        read_token(self.token_file.as_deref())
    }
}

/// A token from `file` (first line, trimmed), else from `$WEFT_TOKEN`.
pub fn read_token(file: Option<&Path>) -> Result<Option<String>, String> {
    if let Some(f) = file {
        // A token is ~200 bytes: read at most 8 KiB of whatever the file is.
        let mut text = String::new();
        std::fs::File::open(f)
            .and_then(|file| file.take(8 << 10).read_to_string(&mut text))
            .map_err(|e| format!("--token-file {}: {e}", f.display()))?;
        let t = text.lines().next().unwrap_or("").trim().to_owned();
        if t.is_empty() {
            return Err(format!("--token-file {}: empty", f.display()));
        }
        return Ok(Some(t));
    }
    Ok(std::env::var("WEFT_TOKEN").ok().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()))
}

#[derive(clap::Args)]
pub struct TokenArgs {
    /// A user token with this role: read, write or admin.
    #[arg(long, value_parser = ["read", "write", "admin"], conflicts_with_all = ["namespace", "service_account"])]
    pub role: Option<String>,
    /// A workload's token (with --service-account): what a proxy presents.
    #[arg(long, short = 'n', requires = "service_account")]
    pub namespace: Option<String>,
    #[arg(long, requires = "namespace")]
    pub service_account: Option<String>,
    /// Valid for this long, e.g. "1h" (default: until the control plane's key changes).
    #[arg(long, value_parser = crate::parse_dur)]
    pub ttl: Option<Duration>,
    /// A workload token good for at most this many certificates (1: single-use — a
    /// replayed token gets none). Default: any number while it is valid.
    #[arg(long, requires = "namespace")]
    pub uses: Option<u32>,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(clap::Args)]
pub struct ApplyArgs {
    /// A YAML file, or a directory of them (*.yaml, *.yml), or `-` for stdin, applied together.
    #[arg(short = 'f', long = "file", required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(clap::Args)]
pub struct DeleteArgs {
    /// The kind of the one to delete (with NAME), or -f.
    #[arg(required_unless_present = "files", conflicts_with = "files")]
    pub kind: Option<String>,
    #[arg(required_unless_present = "files")]
    pub name: Option<String>,
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Delete every resource these YAML files (or directories, or `-` for stdin)
    /// declare, by kind, namespace and name.
    #[arg(short = 'f', long = "file")]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(clap::Args)]
pub struct RollbackArgs {
    /// The revision whose config to restore (see `weft history`).
    pub revision: u64,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(clap::Args)]
pub struct RegisterArgs {
    #[arg(long)]
    pub service: String,
    /// host:port of the endpoint.
    #[arg(long)]
    pub address: String,
    /// The service's namespace: a short name (`reviews`) is the service
    /// reviews.<namespace>.svc.cluster.local (default: the workload token's, else default).
    #[arg(long)]
    pub namespace: Option<String>,
    /// key=value (repeatable).
    #[arg(long = "label", value_parser = crate::parse_label)]
    pub labels: Vec<(String, String)>,
    #[arg(long)]
    pub locality: Option<String>,
    #[arg(long)]
    pub weight: Option<u32>,
    /// Removed unless a heartbeat comes within this long, e.g. "30s".
    #[arg(long, value_parser = crate::parse_dur)]
    pub ttl: Option<Duration>,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(clap::Args)]
pub struct DeregisterArgs {
    #[arg(long)]
    pub service: String,
    #[arg(long)]
    pub address: String,
    /// The namespace of a short service name (default: the workload token's, else default).
    #[arg(long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub server: ServerArg,
}

/// One request: (status, body).
pub(crate) fn call(to: &ServerArg, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<(u16, Vec<u8>), String> {
    let server = to.server.as_str();
    let auth = match to.token()? {
        Some(t) if t.bytes().all(|b| b.is_ascii_graphic()) => format!("authorization: Bearer {t}\r\n"),
        Some(_) => return Err("the token has characters no token has (spaces, control characters)".into()),
        None => String::new(),
    };
    let url = weft_proxy::follow::ApiUrl::parse(server).map_err(|e| format!("--server {e}"))?;
    let authority = url.authority.as_str();
    let tcp = TcpStream::connect(authority).map_err(|e| format!("cannot reach the control plane at {server}: {e}"))?;
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(60)));
    let mut s = stream(&url, to.ca_file.as_deref(), tcp)?;
    let payload = body.unwrap_or_default();
    let client = format!("{}@{}", std::env::var("USER").unwrap_or_else(|_| "cli".into()), hostname());
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\n{auth}x-weft-client: {client}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        payload.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(&payload))
        .and_then(|_| s.flush())
        .map_err(|e| tls_hint(format!("sending to {server}: {e}"), &url))?;
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => {}
        // A server that closes without TLS's close_notify after a whole answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(tls_hint(format!("reading from {server}: {e}"), &url)),
    }
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| format!("{server} sent no HTTP response"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status =
        head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("{server} sent a malformed status line"))?;
    Ok((status, raw[split + 4..].to_vec()))
}

/// A byte stream to the control plane: TLS verified with the root in `ca_file` for an
/// https:// URL, plain TCP for http://.
trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

fn stream(url: &weft_proxy::follow::ApiUrl, ca_file: Option<&Path>, tcp: TcpStream) -> Result<Box<dyn Stream>, String> {
    if !url.https {
        return Ok(Box::new(tcp));
    }
    let ca_file = ca_file.ok_or(
        "an https:// control plane is verified with the mesh root: give --ca-file (or $WEFT_CA_FILE), e.g. <ca-dir>/root-cert.pem",
    )?;
    let roots = std::fs::read_to_string(ca_file).map_err(|e| format!("--ca-file {}: {e}", ca_file.display()))?;
    let config =
        weft_tls::config::control_plane_client_config(&roots, None).map_err(|e| format!("--ca-file {}: {e}", ca_file.display()))?;
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), url.server_name()?).map_err(|e| e.to_string())?;
    Ok(Box::new(rustls::StreamOwned::new(conn, tcp)))
}

/// Says what a failed TLS handshake most likely means.
fn tls_hint(e: String, url: &weft_proxy::follow::ApiUrl) -> String {
    match url.https && (e.contains("certificate") || e.contains("InvalidCertificate")) {
        true => format!("{e} (is --ca-file the root of this control plane's mesh CA, and does its certificate name {}?)", url.host),
        false => e,
    }
}

/// `T` from a 200 answer; anything else is printed (the server's errors) and is `Err`.
pub(crate) fn answer<T: Message>(r: Result<(u16, Vec<u8>), String>) -> Result<T, ExitCode> {
    match r {
        Ok((200, body)) => T::decode(&body).map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }),
        Ok((_, body)) => {
            match ErrorAnswer::decode(&body) {
                // (Escaped: the server's messages quote what clients sent.)
                Ok(e) => e.errors.iter().for_each(|e| eprintln!("{}", crate::table::escape(e))),
                Err(_) => eprintln!("{}", crate::table::escape(String::from_utf8_lossy(&body).trim())),
            }
            Err(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "localhost".into())
}

/// Prints the outcome of a change; exit 1 with the server's errors.
pub(crate) fn outcome(r: Result<(u16, Vec<u8>), String>, what: &str) -> ExitCode {
    let c: Committed = match answer(r) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for w in &c.warnings {
        eprintln!("warning: {}", crate::table::escape(w));
    }
    if c.changed.is_empty() {
        println!("{what}: unchanged (revision {})", c.revision);
    } else {
        println!("{what}: revision {} ({} changed)", c.revision, c.changed.len());
        for k in &c.changed {
            println!("  {k}");
        }
    }
    ExitCode::SUCCESS
}

pub(crate) fn yaml_files(p: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    if p.is_dir() {
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(p).map_err(|e| format!("{}: {e}", p.display()))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for e in entries {
            if e.is_dir() || e.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                yaml_files(&e, out)?;
            }
        }
    } else {
        out.push(p.to_owned());
    }
    Ok(())
}

pub fn apply(a: ApplyArgs) -> ExitCode {
    let files = match crate::manifest::read_all(&a.files) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    outcome(call(&a.server, "POST", "/v1/apply", Some(ApplyRequest { files }.encode())), "applied")
}

pub fn delete(a: DeleteArgs) -> ExitCode {
    if let Some(e) = a.namespace.as_deref().and_then(|ns| crate::get::check_name("-n", ns, 63, false).err()) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let (Some(kind), Some(name)) = (a.kind, a.name) else {
        return crate::manifest::delete_files(&a.files, a.namespace.as_deref(), &a.server);
    };
    let q = ResourceQuery { kind: Some(kind), name: Some(name), namespace: a.namespace };
    outcome(call(&a.server, "DELETE", &format!("/v1/resources?{}", q.to_query()), None), "deleted")
}

pub fn history(s: ServerArg) -> ExitCode {
    let h = match answer::<Listing<HistoryEntry>>(call(&s, "GET", "/v1/history", None)) {
        Ok(h) => h,
        Err(code) => return code,
    };
    println!("{:>8}  {:<24}  {:<24}  {:<28}  changes", "REVISION", "WHEN (UTC)", "CLIENT", "ACTION");
    for r in h.items {
        let changes: Vec<String> =
            r.changes.iter().map(|c| format!("{} {}", c.op, c.key.split_once('/').map(|x| x.1).unwrap_or(""))).collect();
        println!("{:>8}  {:<24}  {:<24}  {:<28}  {}", r.revision, utc(r.at_ms), r.client, r.action, changes.join(", "));
    }
    ExitCode::SUCCESS
}

/// `YYYY-MM-DD HH:MM:SS.mmm` from unix milliseconds (civil-from-days, proleptic Gregorian).
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}", rem / 3600, rem % 3600 / 60, rem % 60, ms % 1000)
}

/// `weft status`: the proxies following the control plane, like `istioctl proxy-status`.
pub fn status(s: ServerArg) -> ExitCode {
    let st = match answer::<StatusAnswer>(call(&s, "GET", "/v1/status", None)) {
        Ok(st) => st,
        Err(code) => return code,
    };
    println!("control plane revision {}", st.revision);
    println!(
        "{:<32}  {:>8}  {:>5}  {:<9}  {:>10}  {:<48}  {:<20}  NACK",
        "NODE", "ACKED", "LAG", "CONNECTED", "LAST SEEN", "IDENTITY", "CERT EXPIRES (UTC)"
    );
    for p in st.items {
        let nack = match (p.nacked, &p.nack_reason) {
            (Some(r), Some(why)) => format!("revision {r}: {why}"),
            _ => String::new(),
        };
        let expires = p.cert_not_after.and_then(expiry_text);
        println!(
            "{:<32}  {:>8}  {:>5}  {:<9}  {:>8.1} s  {:<48}  {:<20}  {nack}",
            p.node,
            p.acked,
            p.lag,
            if p.connected { "yes" } else { "no" },
            p.last_seen_ms_ago as f64 / 1000.0,
            p.identity.as_deref().unwrap_or("-"),
            expires.as_deref().unwrap_or("-"),
        );
    }
    ExitCode::SUCCESS
}

/// A proxy's reported certificate expiry (unix seconds) as RFC 3339; none for a time
/// past what the clock can hold (a proxy's claim is not trusted to be sane).
fn expiry_text(t: u64) -> Option<String> {
    let at = std::time::UNIX_EPOCH
        .checked_add(Duration::from_secs(t))
        .filter(|at| *at < std::time::UNIX_EPOCH + Duration::from_secs(253_402_300_799))?;
    Some(humantime::format_rfc3339_seconds(at).to_string())
}

/// `weft token create`: a new token from the control plane (needs an admin token).
pub fn token_create(a: TokenArgs) -> ExitCode {
    let req = weft_api::TokenRequest {
        role: a.role.as_deref().and_then(weft_api::Role::parse),
        namespace: a.namespace,
        service_account: a.service_account,
        ttl_ms: a.ttl.map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64),
        uses: a.uses,
    };
    if let Err(e) = req.check() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    match answer::<weft_api::TokenAnswer>(call(&a.server, "POST", "/v1/tokens", Some(req.encode()))) {
        Ok(t) => {
            println!("{}", t.token);
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

pub fn rollback(a: RollbackArgs) -> ExitCode {
    let q = Rollback { to: a.revision }.to_query();
    outcome(call(&a.server, "POST", &format!("/v1/rollback?{q}"), None), &format!("rolled back to {}", a.revision))
}

pub fn register(a: RegisterArgs) -> ExitCode {
    let reg = Registration {
        service: a.service,
        address: a.address,
        labels: a.labels.into_iter().collect(),
        locality: a.locality,
        weight: a.weight,
        ttl_ms: a.ttl.map(|t| t.as_millis() as u64),
        identity: None,
        namespace: a.namespace,
    };
    outcome(call(&a.server, "POST", "/v1/registry", Some(reg.encode())), "registered")
}

pub fn deregister(a: DeregisterArgs) -> ExitCode {
    let q = EndpointRef { service: a.service, address: a.address, namespace: a.namespace }.to_query();
    outcome(call(&a.server, "DELETE", &format!("/v1/registry?{q}"), None), "deregistered")
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(super::utc(1_795_000_000_123), "2026-11-18 11:06:40.123");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29 00:00:00.000");
    }
}

#[cfg(test)]
mod expiry_tests {
    #[test]
    fn a_hostile_certificate_expiry_shows_as_nothing_instead_of_panicking() {
        assert_eq!(super::expiry_text(1_800_000_000).as_deref(), Some("2027-01-15T08:00:00Z"));
        assert_eq!(super::expiry_text(u64::MAX), None);
        assert_eq!(super::expiry_text(253_402_300_800), None, "past year 9999");
    }
}
