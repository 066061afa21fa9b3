//! What `weft`'s client commands (and `bench-control-plane`) send to the control
//! plane and what it answers: applies, registrations, the queries of `get`, `delete`,
//! `deregister` and heartbeats, and the listings and status that come back.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{check_id, query, DecodeError, Message};

/// Bodies a client sends: a whole directory of YAML fits easily.
pub const MAX_REQUEST_BYTES: usize = 8 << 20;
/// Answers a client reads (a listing of a large mesh).
pub const MAX_LISTING_BYTES: usize = 256 << 20;

/// One file of `weft apply`: its name (for error messages) and its YAML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileText {
    #[serde(default = "unnamed")]
    pub name: String,
    pub text: String,
}

fn unnamed() -> String {
    "-".into()
}

/// `POST /v1/apply`: files applied together, as one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyRequest {
    pub files: Vec<FileText>,
}

impl Message for ApplyRequest {
    const WHAT: &'static str = "apply request";
    const MAX_BYTES: usize = MAX_REQUEST_BYTES;

    fn check(&self) -> Result<(), String> {
        if self.files.is_empty() {
            return Err("no files to apply".into());
        }
        Ok(())
    }
}

/// A change's answer: the revision it made (or the current one, when it changed
/// nothing) and the keys it changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub revision: u64,
    #[serde(default)]
    pub changed: Vec<String>,
    /// What the whole-mesh compile warned about the resources applied (a VirtualService
    /// shadowed by another for the same host, a destination no ServiceEntry declares, …):
    /// stored all the same, as `istioctl analyze` would warn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Message for Committed {
    const WHAT: &'static str = "answer";
    const MAX_BYTES: usize = MAX_LISTING_BYTES;
}

/// Any refusal (4xx, 5xx): the messages say why, one per problem.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    pub errors: Vec<String>,
}

impl ErrorAnswer {
    pub fn one(m: impl Into<String>) -> ErrorAnswer {
        ErrorAnswer { errors: vec![m.into()] }
    }
}

impl Message for ErrorAnswer {
    const WHAT: &'static str = "error answer";
    const MAX_BYTES: usize = MAX_LISTING_BYTES;
}

/// An endpoint registered by `weft register` (`POST /v1/registry`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    /// A service name: a short one (`reviews`, no dot) is the Kubernetes-style service of
    /// `namespace`, stored as its FQDN (`reviews.default.svc.cluster.local`); one with
    /// dots is a host, taken literally.
    pub service: String,
    /// The service's namespace (default: a workload token's own, else `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `host:port`.
    pub address: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Without a heartbeat for this long the endpoint is removed; none = until deregistered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// The SPIFFE ID of the workload that registered it, set by the control plane from
    /// the caller's credentials (never taken from the client): the endpoint is in the
    /// mesh and speaks mTLS as that identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

impl Message for Registration {
    const WHAT: &'static str = "registration";
    const MAX_BYTES: usize = 64 << 10;
}

/// A registered endpoint as `GET /v1/endpoints` shows it (`weft get endpoints`): the
/// registration and how long its TTL has left, which only the control plane's memory
/// holds (a heartbeat costs no store write, so `/v1/registry`'s stored form lacks it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EndpointInfo {
    #[serde(flatten)]
    pub registration: Registration,
    /// Milliseconds until it is removed without a heartbeat; none without a TTL, or
    /// where an etcd lease keeps the time instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_left_ms: Option<u64>,
    /// The proxies whose outlier detection keeps it out now, as their last reports
    /// (`POST /v1/report`) say: `node: reason`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ejected_by: Vec<String>,
}

/// One registered endpoint, named in a query: `DELETE /v1/registry?service=&address=`
/// and `POST /v1/registry/heartbeat?service=&address=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRef {
    pub service: String,
    pub address: String,
    /// The namespace a short service name is in (as [`Registration::namespace`]).
    pub namespace: Option<String>,
}

impl EndpointRef {
    pub fn to_query(&self) -> String {
        query::build(&[("service", Some(&self.service)), ("address", Some(&self.address)), ("namespace", self.namespace.as_deref())])
    }

    pub fn from_query(q: &str) -> Result<EndpointRef, DecodeError> {
        match (query::get(q, "service"), query::get(q, "address")) {
            (Some(service), Some(address)) => Ok(EndpointRef { service, address, namespace: query::get(q, "namespace") }),
            _ => Err(DecodeError::new("endpoint", "service and address are required")),
        }
    }
}

/// `GET` and `DELETE /v1/resources?kind=&name=&namespace=` (`weft get`, `weft delete`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceQuery {
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

impl ResourceQuery {
    pub fn to_query(&self) -> String {
        query::build(&[("kind", self.kind.as_deref()), ("name", self.name.as_deref()), ("namespace", self.namespace.as_deref())])
    }

    pub fn from_query(q: &str) -> ResourceQuery {
        ResourceQuery { kind: query::get(q, "kind"), name: query::get(q, "name"), namespace: query::get(q, "namespace") }
    }
}

/// `POST /v1/rollback?to=N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollback {
    pub to: u64,
}

impl Rollback {
    pub fn to_query(&self) -> String {
        format!("to={}", self.to)
    }

    pub fn from_query(q: &str) -> Result<Rollback, DecodeError> {
        let to = query::get(q, "to").and_then(|t| t.parse().ok());
        to.map(|to| Rollback { to }).ok_or_else(|| DecodeError::new("rollback", "to=REVISION is required"))
    }
}

/// `POST /v1/ack`: an ACK (or, with a reason, a NACK) reported on its own, by a
/// client that does not watch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckReport {
    pub node: String,
    pub revision: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Message for AckReport {
    const WHAT: &'static str = "ack";
    const MAX_BYTES: usize = 64 << 10;

    fn check(&self) -> Result<(), String> {
        check_id("node", &self.node)
    }
}

/// A list answer (`/v1/resources`, `/v1/registry`, `/v1/history`) at a revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listing<T> {
    pub revision: u64,
    pub items: Vec<T>,
}

impl<T: Serialize + DeserializeOwned> Message for Listing<T> {
    const WHAT: &'static str = "listing";
    const MAX_BYTES: usize = MAX_LISTING_BYTES;
}

/// One revision in `weft history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub revision: u64,
    pub at_ms: u64,
    pub client: String,
    pub action: String,
    pub changes: Vec<ChangeEntry>,
}

/// A key a revision changed: `created`, `updated` or `deleted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEntry {
    pub key: String,
    pub op: String,
}

/// `GET /v1/status` (`weft status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusAnswer {
    pub revision: u64,
    pub items: Vec<ProxyStatus>,
}

impl Message for StatusAnswer {
    const WHAT: &'static str = "status";
    const MAX_BYTES: usize = MAX_LISTING_BYTES;
}

/// A proxy following the control plane, as it knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatus {
    pub node: String,
    /// The latest revision it ACKed.
    pub acked: u64,
    /// The control plane's latest revision.
    pub latest: u64,
    pub lag: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nacked: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nack_reason: Option<String>,
    pub last_seen_ms_ago: u64,
    /// Waiting on a watch now.
    pub connected: bool,
    /// Who follows as this node: a workload's SPIFFE ID, or a token's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// When its workload certificate expires (unix seconds), as it last said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_not_after: Option<u64>,
}

/// Resources as stored (JSON), for `weft get`.
pub type Resources = Listing<Value>;
