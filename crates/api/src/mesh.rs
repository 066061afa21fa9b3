//! The mesh answer: the control plane's reply to a watch — its revision, a nonce that
//! the proxy's next outcome names, whether it is the whole mesh or a delta (the
//! documents changed since the revision the proxy held, and the keys removed), and the
//! documents by key.
//!
//! ```text
//! {"nonce":7,"revision":42,"mesh":"delta","documents":{
//! "ServiceEntry/shop/reviews":{"apiVersion":…},
//! "registry/ratings":{…}
//! },"removed":["registry/old"]}
//! ```
//!
//! Keys are JSON strings and documents JSON values, so no key or document can end
//! one record and start another; one document per line keeps it readable. Why JSON
//! with raw documents: the documents are JSON already (the store keeps resources as
//! JSON), so embedding them costs nothing on the control plane, and a proxy decoding
//! the envelope keeps each one as a slice of the body ([`RawValue`]) — it parses only
//! the documents it does not already hold parsed. Everything but the nonce is the
//! same for every proxy at one revision and scope, so it is encoded once
//! ([`MeshBody`]) and the nonce goes out as a separate chunk in front of it
//! ([`EncodedAnswer`]): a 10 MB answer is never copied per proxy.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{json, DecodeError};

/// The largest answer a proxy accepts (a 10,000-service mesh is ~10 MB).
pub const MAX_ANSWER_BYTES: usize = 256 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MeshKind {
    /// Every document: the proxy drops what it held.
    Full,
    /// What changed since the revision the proxy held.
    Delta,
}

impl MeshKind {
    fn as_str(self) -> &'static str {
        match self {
            MeshKind::Full => "full",
            MeshKind::Delta => "delta",
        }
    }
}

/// A decoded answer; its documents borrow the body they came in.
#[derive(Debug, Deserialize)]
pub struct MeshAnswer<'a> {
    pub nonce: u64,
    pub revision: u64,
    pub mesh: MeshKind,
    /// Documents by key (added or changed, in a delta).
    #[serde(borrow, default)]
    pub documents: BTreeMap<String, &'a RawValue>,
    /// Keys removed (a delta's only).
    #[serde(default)]
    pub removed: Vec<String>,
    /// On demand: every service host the proxy may ask for (a full answer's, or a delta's
    /// when they changed), canonical (a short host resolved in its namespace).
    #[serde(default)]
    pub names: Option<Vec<String>>,
    /// The size of the encoded answer.
    #[serde(skip)]
    pub bytes: usize,
}

impl<'a> MeshAnswer<'a> {
    pub fn decode(body: &'a [u8]) -> Result<MeshAnswer<'a>, DecodeError> {
        let mut a: MeshAnswer = json("mesh answer", body, MAX_ANSWER_BYTES)?;
        a.bytes = body.len();
        Ok(a)
    }

    pub fn is_delta(&self) -> bool {
        self.mesh == MeshKind::Delta
    }
}

/// Builds the shared part of an answer, document by document.
pub struct MeshEncoder {
    revision: u64,
    kind: MeshKind,
    docs: Vec<u8>,
    removed: Vec<u8>,
    names: Option<Vec<u8>>,
}

impl MeshEncoder {
    pub fn new(revision: u64, kind: MeshKind) -> MeshEncoder {
        MeshEncoder { revision, kind, docs: Vec::new(), removed: Vec::new(), names: None }
    }

    /// The mesh's names (on demand).
    pub fn names<'n>(&mut self, names: impl IntoIterator<Item = &'n str>) {
        let mut out = Vec::new();
        for n in names {
            if !out.is_empty() {
                out.push(b',');
            }
            string(&mut out, n);
        }
        self.names = Some(out);
    }

    /// Whether it carries nothing (a delta with no change for this proxy).
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty() && self.removed.is_empty() && self.names.is_none()
    }

    /// A document under `key` (any string: it is escaped as JSON).
    pub fn put(&mut self, key: &str, doc: &RawValue) {
        if !self.docs.is_empty() {
            self.docs.push(b',');
        }
        self.docs.push(b'\n');
        string(&mut self.docs, key);
        self.docs.push(b':');
        self.docs.extend_from_slice(doc.get().as_bytes());
    }

    /// A key the proxy should drop.
    pub fn remove(&mut self, key: &str) {
        if !self.removed.is_empty() {
            self.removed.push(b',');
        }
        string(&mut self.removed, key);
    }

    pub fn finish(self) -> MeshBody {
        let mut out = Vec::with_capacity(self.docs.len() + self.removed.len() + 64);
        out.extend_from_slice(format!("\"revision\":{},\"mesh\":\"{}\",\"documents\":{{", self.revision, self.kind.as_str()).as_bytes());
        out.extend_from_slice(&self.docs);
        if !self.docs.is_empty() {
            out.push(b'\n');
        }
        out.extend_from_slice(b"},\"removed\":[");
        out.extend_from_slice(&self.removed);
        out.push(b']');
        let empty = self.docs.is_empty() && self.removed.is_empty() && self.names.is_none();
        if let Some(names) = &self.names {
            out.extend_from_slice(b",\"names\":[");
            out.extend_from_slice(names);
            out.push(b']');
        }
        out.extend_from_slice(b"}\n");
        MeshBody { bytes: Bytes::from(out), revision: self.revision, kind: self.kind, empty }
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    // (Writing a string into a Vec cannot fail.)
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Everything of an answer but its nonce, encoded once per revision and scope.
#[derive(Debug, Clone)]
pub struct MeshBody {
    bytes: Bytes,
    revision: u64,
    kind: MeshKind,
    empty: bool,
}

impl MeshBody {
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn kind(&self) -> MeshKind {
        self.kind
    }

    /// Bytes of the shared part.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// A delta that carries nothing.
    pub fn is_empty_delta(&self) -> bool {
        self.kind == MeshKind::Delta && self.empty
    }

    /// The whole answer for one proxy: its nonce in front of the shared part.
    pub fn answer(&self, nonce: u64) -> EncodedAnswer {
        EncodedAnswer { head: Bytes::from(format!("{{\"nonce\":{nonce},")), body: self.bytes.clone() }
    }
}

/// An answer as two chunks to send one after the other (the second shared).
#[derive(Debug, Clone)]
pub struct EncodedAnswer {
    pub head: Bytes,
    pub body: Bytes,
}

impl EncodedAnswer {
    pub fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The answer in one buffer (a copy: for tests and small answers).
    pub fn to_vec(&self) -> Vec<u8> {
        [&self.head[..], &self.body[..]].concat()
    }
}
