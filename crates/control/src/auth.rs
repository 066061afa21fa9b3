//! Who may call the control plane's API: bearer tokens signed by the control plane,
//! each naming a user's role (`read`, `write`, `admin`) or a workload (namespace and
//! service account), and what each may do.
//!
//! A token is `weft1.<claims>.<tag>`: the claims as base64url JSON, the tag an
//! HMAC-SHA256 of everything before it under the control plane's key (32 random bytes
//! in `<data-dir>/token-key`, mode 0600, made on first start together with the first
//! admin token in `<data-dir>/admin-token`). Nothing but the key is stored (and, for a
//! workload token made with `uses`, how many certificates it has had): a token is valid
//! until it expires or the key is replaced (which revokes every token). Tags are
//! compared in constant time; a token is at most 2 KiB, its claims are parsed only
//! after the tag checks out.

use std::io::Write;
use std::path::{Path, PathBuf};

use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use http::Method;
use serde::{Deserialize, Serialize};
use weft_api::{Role, TokenRequest};

const PREFIX: &str = "weft1.";
/// The longest token accepted (a real one is ~200 bytes).
pub const MAX_TOKEN_BYTES: usize = 2048;
/// The longest lifetime a token may be given: ten years.
pub const MAX_TTL_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

/// The signing key, and where it and the first admin token live.
pub struct Auth {
    key: hmac::Key,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth { key: <secret> }")
    }
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    User {
        id: String,
        role: Role,
    },
    /// `uses`: the certificates its token is good for (none: no count).
    Workload {
        id: String,
        namespace: String,
        service_account: String,
        uses: Option<u32>,
        /// The token's expiry (unix seconds), kept with a counted token's uses.
        exp: Option<u64>,
    },
    /// `--insecure`: nobody is asked; the client names itself (`x-weft-client`).
    Anonymous(String),
}

/// A workload's own service as the registry stores it.
pub fn own_service(service_account: &str, namespace: &str) -> String {
    format!("{}.{namespace}.svc.{}", service_account.to_ascii_lowercase(), weft_config::names::CLUSTER_DOMAIN)
}

impl Principal {
    /// What a proxy's node id is bound to (empty: nothing, under `--insecure`).
    pub fn owner(&self) -> String {
        match self {
            Principal::User { id, .. } => format!("token {id}"),
            Principal::Workload { namespace, service_account, .. } => format!("{namespace}/{service_account}"),
            Principal::Anonymous(_) => String::new(),
        }
    }

    /// How a workload is named, whether its token or its certificate says who it is.
    pub fn workload_name(namespace: &str, service_account: &str) -> String {
        format!("workload {namespace}/{service_account}")
    }

    /// How the history and logs name this caller (and the API's connection limits count it).
    pub fn name(&self) -> String {
        match self {
            Principal::User { id, role } => format!("{} token {id}", role.as_str()),
            Principal::Workload { namespace, service_account, .. } => Principal::workload_name(namespace, service_account),
            Principal::Anonymous(client) => client.clone(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    v: u8,
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sa: Option<String>,
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uses: Option<u32>,
}

/// Why a request was not let in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("authentication required: send `Authorization: Bearer <token>` (weft --token-file, or $WEFT_TOKEN)")]
    NoToken,
    #[error("invalid token: {0}")]
    BadToken(&'static str),
    #[error("token expired")]
    Expired,
    #[error("{0}")]
    Forbidden(String),
}

impl Refused {
    /// The label of `weft_control_auth_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::NoToken => "no_token",
            Refused::BadToken(_) => "bad_token",
            Refused::Expired => "expired",
            Refused::Forbidden(_) => "forbidden",
        }
    }
}

impl Auth {
    pub fn from_key(bytes: &[u8]) -> Auth {
        Auth { key: hmac::Key::new(hmac::HMAC_SHA256, bytes) }
    }

    /// Reads the key at `path`, or makes one (and, when `first_admin` is given, writes an
    /// admin token there). Returns whether the key was made now.
    pub fn load_or_create(path: &Path, first_admin: Option<&Path>) -> Result<(Auth, bool), String> {
        match std::fs::read(path) {
            Ok(bytes) if bytes.len() == 32 => return Ok((Auth::from_key(&bytes), false)),
            Ok(bytes) => return Err(format!("{}: a token key is 32 bytes, this file has {}", path.display(), bytes.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        let key: [u8; 32] = random_bytes()?;
        if !write_secret_once(path, &key)? {
            // Another control plane sharing the file made it first: use theirs.
            return Auth::load_or_create(path, None);
        }
        let auth = Auth::from_key(&key);
        if let Some(admin) = first_admin {
            let (token, _, _) = auth.issue(&TokenRequest { role: Some(Role::Admin), ..TokenRequest::default() }, now_s())?;
            write_secret(admin, format!("{token}\n").as_bytes())?;
        }
        Ok((auth, true))
    }

    /// Signs a new token for `req` (already checked): (token, id, expiry).
    pub fn issue(&self, req: &TokenRequest, now: u64) -> Result<(String, String, Option<u64>), String> {
        let ttl = req.ttl_ms.map(|t| if (1000..=MAX_TTL_MS).contains(&t) { Ok(t) } else { Err("ttl must be 1 s to 10 years") });
        let exp = match ttl {
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(ms)) => Some(now + ms.div_ceil(1000)),
            None => None,
        };
        let id: [u8; 8] = random_bytes()?;
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let claims = Claims {
            v: 1,
            id: id.clone(),
            role: req.role,
            ns: req.namespace.clone(),
            sa: req.service_account.clone(),
            exp,
            uses: req.uses,
        };
        let body = format!("{PREFIX}{}", B64.encode(serde_json::to_vec(&claims).map_err(|e| e.to_string())?));
        let tag = hmac::sign(&self.key, body.as_bytes());
        Ok((format!("{body}.{}", B64.encode(tag.as_ref())), id, exp))
    }

    /// The principal a token names, if its tag is ours and it has not expired.
    pub fn verify(&self, token: &str, now: u64) -> Result<Principal, Refused> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refused::BadToken("too long"));
        }
        let (body, tag) = token.rsplit_once('.').ok_or(Refused::BadToken("malformed"))?;
        let claims = body.strip_prefix(PREFIX).ok_or(Refused::BadToken("not a weft token"))?;
        let tag = B64.decode(tag).map_err(|_| Refused::BadToken("malformed"))?;
        hmac::verify(&self.key, body.as_bytes(), &tag).map_err(|_| Refused::BadToken("not signed by this control plane"))?;
        let raw = B64.decode(claims).map_err(|_| Refused::BadToken("malformed"))?;
        let c: Claims = serde_json::from_slice(&raw).map_err(|_| Refused::BadToken("malformed claims"))?;
        if c.exp.is_some_and(|exp| exp <= now) {
            return Err(Refused::Expired);
        }
        match (c.role, c.ns, c.sa) {
            (Some(role), None, None) => Ok(Principal::User { id: c.id, role }),
            (None, Some(namespace), Some(service_account)) => {
                Ok(Principal::Workload { id: c.id, namespace, service_account, uses: c.uses, exp: c.exp })
            }
            _ => Err(Refused::BadToken("malformed claims")),
        }
    }

    /// The principal an `Authorization` header names.
    pub fn authenticate(&self, header: Option<&http::HeaderValue>, now: u64) -> Result<Principal, Refused> {
        let v = header.ok_or(Refused::NoToken)?;
        let v = v.to_str().map_err(|_| Refused::BadToken("not text"))?;
        let token = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).ok_or(Refused::BadToken("not a bearer token"))?;
        self.verify(token.trim(), now)
    }
}

/// What an endpoint asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A user with at least this role.
    Role(Role),
    /// A workload, or a user who may read (following the mesh, acknowledging it).
    Follow,
    /// A workload for its own service, or a user who may write.
    Registry,
    /// A workload only (a certificate for its own identity).
    Workload,
}

/// The table of who may call what; anything not listed is a read (and then a 404).
pub fn need(method: &Method, path: &str) -> Need {
    match (method.as_str(), path) {
        ("POST", "/v1/apply" | "/v1/rollback") | ("DELETE", "/v1/resources") => Need::Role(Role::Write),
        ("POST", "/v1/tokens") => Need::Role(Role::Admin),
        ("GET", p) if weft_profiling::is_profiling_path(p) => Need::Role(Role::Admin),
        // (`/v1/status` for a workload: the proxies' revisions without their names, so that
        // `weft run` can wait for its deregistration to be acknowledged.)
        ("POST", "/v1/mesh" | "/v1/watch" | "/v1/ack" | "/v1/report") | ("GET", "/v1/status") => Need::Follow,
        ("POST", "/v1/certificate") => Need::Workload,
        ("POST" | "DELETE", "/v1/registry") | ("POST", "/v1/registry/heartbeat") => Need::Registry,
        _ => Need::Role(Role::Read),
    }
}

/// Whether `who` may make a call that needs `need`; `service` is the registry entry a
/// registry call names.
impl Principal {
    /// A workload's namespace.
    pub fn namespace(&self) -> Option<&str> {
        match self {
            Principal::Workload { namespace, .. } => Some(namespace),
            _ => None,
        }
    }
}

pub fn allow(who: &Principal, need: Need, service: Option<&str>) -> Result<(), Refused> {
    let refuse = |m: String| Err(Refused::Forbidden(m));
    match (who, need) {
        (Principal::Anonymous(_), _) => Ok(()),
        (Principal::User { role, .. }, Need::Role(want)) if role >= &want => Ok(()),
        (Principal::User { role, .. }, Need::Follow) if role >= &Role::Read => Ok(()),
        (Principal::User { role, .. }, Need::Registry) if role >= &Role::Write => Ok(()),
        (Principal::User { role, .. }, want) => refuse(format!("a {} token may not do this (needs {})", role.as_str(), needs(want))),
        (Principal::Workload { .. }, Need::Follow | Need::Workload) => Ok(()),
        (Principal::Workload { service_account, namespace, .. }, Need::Registry) => match service {
            // Only its own service, as registered: `<sa>.<namespace>.svc.cluster.local`. (A
            // dotted service-account name is no host of its own: a workload of namespace
            // evil named `reviews.default.svc.cluster.local` registers nothing of default's.)
            Some(s) if s == own_service(service_account, namespace) => Ok(()),
            _ => refuse(format!(
                "workload {namespace}/{service_account} may register only its own service {service_account:?}, not {:?}",
                weft_api::truncate(service.unwrap_or(""), 64)
            )),
        },
        (w @ Principal::Workload { .. }, want) => refuse(format!("{} may not do this (needs {})", w.name(), needs(want))),
    }
}

fn needs(n: Need) -> &'static str {
    match n {
        Need::Role(r) => match r {
            Role::Read => "a read token",
            Role::Write => "a write token",
            Role::Admin => "an admin token",
        },
        Need::Follow => "a workload or read token",
        Need::Registry => "the service's workload token or a write token",
        Need::Workload => "a workload token: certificates are for workloads",
    }
}

pub fn now_s() -> u64 {
    crate::store::now_ms() / 1000
}

fn random_bytes<const N: usize>() -> Result<[u8; N], String> {
    let mut b = [0u8; N];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| "the system's random source failed".to_string())?;
    Ok(b)
}

/// Writes `bytes` to `path` unless it exists (false then), readable by its owner only.
fn write_secret_once(path: &Path, bytes: &[u8]) -> Result<bool, String> {
    let tmp = PathBuf::from(format!("{}.{}.tmp", path.display(), std::process::id()));
    write_file(&tmp, bytes)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes `bytes` to `path` (replacing it), readable by its owner only.
fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = PathBuf::from(format!("{}.{}.tmp", path.display(), std::process::id()));
    write_file(&tmp, bytes)?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests;
