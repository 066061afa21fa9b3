//! Property-based fuzzing of the control protocol: every message's `decode` (and the
//! mesh answer's, and the typed queries' `from_query`) on random and mutated bytes, and
//! `decode(encode(m)) == m` for random messages. A short run is part of `cargo test`;
//! `scripts/fuzz.sh` runs the same properties with `PROPTEST_CASES` in the millions.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::Value;

use crate::admin::Resources;
use crate::*;

/// The case count: `PROPTEST_CASES` when set (the long run), else `short`.
fn config(short: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(short);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Any text: control characters, quotes, backslashes, line and paragraph separators.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![".{0,24}", "[\\x00-\\x1f\"\\\\\u{2028}\u{feff}a-z/#\n-]{0,24}", Just(String::new())]
}

/// An identifier `check_id` accepts: 1 to 253 bytes, no control characters.
fn id() -> impl Strategy<Value = String> {
    "[^\\p{Cc}]{1,40}".prop_filter("253 bytes at most", |s| s.len() <= 253)
}

fn label_value() -> impl Strategy<Value = String> {
    "[^\\p{Cc}]{0,40}"
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        (any::<u64>(), any::<u64>()).prop_map(|(nonce, revision)| Outcome::Ack { nonce, revision }),
        (any::<u64>(), any::<u64>(), text()).prop_map(|(nonce, revision, reason)| Outcome::Nack { nonce, revision, reason }),
    ]
}

fn watch_request() -> impl Strategy<Value = WatchRequest> {
    let identity = ("[^\\p{Cc}]{0,40}", prop::collection::btree_map(id(), label_value(), 0..4))
        .prop_map(|(namespace, labels)| Identity { namespace, labels });
    (prop::option::of(id()), any::<u64>(), any::<u64>(), prop::option::of(identity), prop::option::of(outcome())).prop_map(
        |(node, since, wait_ms, identity, last)| WatchRequest {
            node,
            since,
            wait_ms,
            identity,
            last,
            cert_not_after: None,
            hosts: None,
            names_since: None,
            newly: None,
        },
    )
}

/// A proxy's traffic report: counters consistent (buckets sorted, at most the
/// requests; errors at most the requests), names any text.
fn report() -> impl Strategy<Value = Report> {
    let destination = (text(), prop::collection::vec(any::<u32>(), 13), any::<u32>()).prop_map(|(service, mut b, extra)| {
        b.sort_unstable();
        let buckets: Vec<u64> = b.into_iter().map(u64::from).collect();
        let requests = buckets[12] + u64::from(extra);
        DestinationCounts { service, requests, errors: requests / 2, buckets }
    });
    let ejected = (text(), text(), id(), any::<u64>()).prop_map(|(service, address, reason, remaining_ms)| Ejected {
        service,
        address,
        reason,
        remaining_ms,
    });
    (id(), any::<u64>(), id(), id(), prop::collection::vec(destination, 0..4), prop::collection::vec(ejected, 0..3)).prop_map(
        |(node, started_ms, service, namespace, destinations, ejected)| Report {
            node,
            started_ms,
            service,
            namespace,
            destinations,
            ejected,
            inbound: None,
        },
    )
}

fn registration() -> impl Strategy<Value = Registration> {
    (
        text(),
        text(),
        prop::collection::btree_map(text(), text(), 0..4),
        prop::option::of(text()),
        prop::option::of(any::<u32>()),
        prop::option::of(any::<u64>()),
    )
        .prop_map(|(service, address, labels, locality, weight, ttl_ms)| Registration {
            service,
            address,
            labels,
            locality,
            weight,
            ttl_ms,
            identity: None,
            namespace: None,
        })
}

/// `GET /v1/endpoints`: registrations (flattened) with their TTL left.
fn endpoints() -> impl Strategy<Value = Listing<EndpointInfo>> {
    let e = (registration(), prop::option::of(any::<u64>()), prop::collection::vec(text(), 0..2))
        .prop_map(|(registration, ttl_left_ms, ejected_by)| EndpointInfo { registration, ttl_left_ms, ejected_by });
    (any::<u64>(), prop::collection::vec(e, 0..3)).prop_map(|(revision, items)| Listing { revision, items })
}

fn apply_request() -> impl Strategy<Value = ApplyRequest> {
    prop::collection::vec((text(), text()).prop_map(|(name, text)| FileText { name, text }), 1..4).prop_map(|files| ApplyRequest { files })
}

fn history() -> impl Strategy<Value = Listing<HistoryEntry>> {
    let change = (text(), text()).prop_map(|(key, op)| ChangeEntry { key, op });
    let entry = (any::<u64>(), any::<u64>(), text(), text(), prop::collection::vec(change, 0..3))
        .prop_map(|(revision, at_ms, client, action, changes)| HistoryEntry { revision, at_ms, client, action, changes });
    (any::<u64>(), prop::collection::vec(entry, 0..3)).prop_map(|(revision, items)| Listing { revision, items })
}

fn status() -> impl Strategy<Value = StatusAnswer> {
    let p = (text(), any::<[u64; 4]>(), prop::option::of(any::<u64>()), prop::option::of(text()), any::<u64>(), any::<bool>()).prop_map(
        |(node, [acked, latest, lag, _], nacked, nack_reason, last_seen_ms_ago, connected)| ProxyStatus {
            node,
            acked,
            latest,
            lag,
            nacked,
            nack_reason,
            last_seen_ms_ago,
            connected,
            identity: Some(format!("spiffe://cluster.local/ns/default/sa/{acked}")),
            cert_not_after: Some(latest),
        },
    );
    (any::<u64>(), prop::collection::vec(p, 0..3)).prop_map(|(revision, items)| StatusAnswer { revision, items })
}

/// Random bytes, or a valid encoding with a few bytes changed, inserted or removed.
fn hostile_bytes(valid: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let mutated = (valid, prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6)).prop_map(|(mut v, edits)| {
        for (at, byte, op) in edits {
            let i = at.index(v.len() + 1);
            match op {
                0 if i < v.len() => v[i] = byte,
                1 => v.insert(i, byte),
                _ if i < v.len() => {
                    v.remove(i);
                }
                _ => {}
            }
        }
        v
    });
    prop_oneof![prop::collection::vec(any::<u8>(), 0..300), "[{}\\[\\]\",:0-9a-zA-Z\\\\ ]{0,200}".prop_map(String::into_bytes), mutated]
}

/// Decoding any bytes answers or refuses; what it answers re-encodes to itself and
/// passes its own checks.
fn decodes_sanely<M: Message + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(m) = M::decode(bytes) {
        prop_assert!(m.check().is_ok());
        round_trips(m)?;
    }
    Ok(())
}

/// decode(encode(m)) == m, or, for a message its own checks refuse (a later, stricter
/// check on a field generated here as any text), a decoding error.
fn round_trips<M: Message + PartialEq + std::fmt::Debug>(m: M) -> Result<(), TestCaseError> {
    match m.check() {
        Ok(()) => prop_assert_eq!(M::decode(&m.encode()).unwrap(), m),
        Err(_) => prop_assert!(M::decode(&m.encode()).is_err()),
    }
    Ok(())
}

/// A mesh answer: documents (last one wins per key), removed keys, nonce, revision, kind.
type GenMesh = (u64, u64, bool, Vec<(String, Value)>, Vec<String>);

fn gen_mesh() -> impl Strategy<Value = GenMesh> {
    (any::<u64>(), any::<u64>(), any::<bool>(), prop::collection::vec((text(), json_value()), 0..6), prop::collection::vec(text(), 0..4))
}

fn encode_mesh((nonce, revision, delta, docs, removed): &GenMesh) -> Vec<u8> {
    let mut e = MeshEncoder::new(*revision, if *delta { MeshKind::Delta } else { MeshKind::Full });
    for (k, v) in docs {
        e.put(k, &RawValue::from_string(v.to_string()).unwrap());
    }
    for k in removed {
        e.remove(k);
    }
    e.finish().answer(*nonce).to_vec()
}

/// Regressions: inputs the fuzz targets found failing, kept as plain tests.
#[test]
fn fuzz_regressions() {
    // A number past u64 in a listed resource is an f64; without serde_json's
    // `float_roundtrip` it came back one ULP off after an encode and a decode.
    let bytes = b"{\"revision\":1,\"items\":[{\"lag\":103010014938886195210}]}";
    let m = Resources::decode(bytes).unwrap();
    assert_eq!(Resources::decode(&m.encode()).unwrap(), m);
    assert_eq!(m.items[0]["lag"].as_f64(), Some(103010014938886195210.0));
}

proptest! {
    #![proptest_config(config(3000))]

    /// decode(encode(m)) == m for every client and proxy message.
    #[test]
    fn fuzz_api_messages_round_trip(
        w in watch_request(),
        r in registration(),
        a in apply_request(),
        h in history(),
        s in status(),
        ack in (id(), any::<u64>(), prop::option::of(text())).prop_map(|(node, revision, reason)| AckReport { node, revision, reason }),
        errors in prop::collection::vec(text(), 0..4),
        committed in (any::<u64>(), prop::collection::vec(text(), 0..4), prop::collection::vec(text(), 0..3))
            .prop_map(|(revision, changed, warnings)| Committed { revision, changed, warnings }),
        res in (any::<u64>(), prop::collection::vec(json_value(), 0..3)).prop_map(|(revision, items)| Resources { revision, items }),
        rep in report(),
        eps in endpoints(),
    ) {
        round_trips(rep)?;
        round_trips(eps)?;
        round_trips(w)?;
        round_trips(r)?;
        round_trips(a)?;
        round_trips(h)?;
        round_trips(s)?;
        round_trips(ack)?;
        round_trips(ErrorAnswer { errors })?;
        round_trips(committed)?;
        round_trips(res)?;
    }

    /// Every message decoder on random and mutated bytes: a message or an error, never
    /// a panic; a decoded message re-encodes to itself.
    #[test]
    fn fuzz_api_messages_hostile(
        bytes in hostile_bytes(prop_oneof![
            watch_request().prop_map(|m| m.encode()),
            registration().prop_map(|m| m.encode()),
            apply_request().prop_map(|m| m.encode()),
            history().prop_map(|m| m.encode()),
            status().prop_map(|m| m.encode()),
            report().prop_map(|m| m.encode()),
            endpoints().prop_map(|m| m.encode()),
        ]),
    ) {
        decodes_sanely::<Report>(&bytes)?;
        decodes_sanely::<WatchRequest>(&bytes)?;
        decodes_sanely::<Registration>(&bytes)?;
        decodes_sanely::<ApplyRequest>(&bytes)?;
        decodes_sanely::<Listing<HistoryEntry>>(&bytes)?;
        decodes_sanely::<StatusAnswer>(&bytes)?;
        decodes_sanely::<AckReport>(&bytes)?;
        decodes_sanely::<ErrorAnswer>(&bytes)?;
        decodes_sanely::<Committed>(&bytes)?;
        decodes_sanely::<Resources>(&bytes)?;
        decodes_sanely::<Listing<EndpointInfo>>(&bytes)?;
    }

    /// The mesh answer decodes to what was encoded, whatever its keys hold.
    #[test]
    fn fuzz_api_mesh_round_trip(m in gen_mesh()) {
        let bytes = encode_mesh(&m);
        let a = MeshAnswer::decode(&bytes).unwrap();
        let (nonce, revision, delta, docs, removed) = m;
        prop_assert_eq!((a.nonce, a.revision, a.is_delta(), a.bytes), (nonce, revision, delta, bytes.len()));
        let want: BTreeMap<String, Value> = docs.into_iter().collect();
        let got: BTreeMap<String, Value> = a.documents.iter().map(|(k, v)| (k.clone(), serde_json::from_str(v.get()).unwrap())).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(a.removed, removed);
    }

    /// The mesh answer's decoder on random and mutated bytes: never a panic, and what
    /// it yields is no larger than its input.
    #[test]
    fn fuzz_api_mesh_hostile(bytes in hostile_bytes(gen_mesh().prop_map(|m| encode_mesh(&m)))) {
        if let Ok(a) = MeshAnswer::decode(&bytes) {
            prop_assert_eq!(a.bytes, bytes.len());
            let held: usize = a.documents.iter().map(|(k, v)| k.len() + v.get().len()).sum::<usize>() + a.removed.iter().map(String::len).sum::<usize>();
            prop_assert!(held <= bytes.len());
        }
    }

    /// Typed queries round-trip any text; parsing any query string never panics; a
    /// NACK's reason and `truncate` cut on a character boundary to at most the limit.
    #[test]
    fn fuzz_api_queries(
        service in text(), address in text(),
        kind in prop::option::of(text()), name in prop::option::of(text()), namespace in prop::option::of(text()),
        to in any::<u64>(),
        raw in prop_oneof![".{0,64}", "[a-z=&%+0-9A-F\\u{e9}]{0,64}"],
        cut in 0usize..80,
    ) {
        let e = EndpointRef { service, address, namespace: namespace.clone() };
        prop_assert_eq!(EndpointRef::from_query(&e.to_query()).unwrap(), e);
        let q = ResourceQuery { kind, name, namespace };
        prop_assert_eq!(ResourceQuery::from_query(&q.to_query()), q);
        prop_assert_eq!(Rollback::from_query(&Rollback { to }.to_query()).unwrap(), Rollback { to });
        prop_assert_eq!(query::unescape(&query::escape(&raw)), raw.clone());
        let _ = (EndpointRef::from_query(&raw), ResourceQuery::from_query(&raw), Rollback::from_query(&raw));
        prop_assert!(query::unescape(&raw).len() <= 3 * raw.len());
        let t = truncate(&raw, cut);
        prop_assert!(t.len() <= cut && raw.starts_with(t) && raw.len() - t.len() < 4 + raw.len().saturating_sub(cut));
        if let Outcome::Nack { reason, .. } = Outcome::nack(1, 2, &raw) {
            prop_assert!(reason.len() <= watch::MAX_REASON_BYTES);
        }
    }
}
