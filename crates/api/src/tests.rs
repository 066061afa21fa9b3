use std::collections::BTreeMap;

use serde_json::value::RawValue;

use crate::mesh::MAX_ANSWER_BYTES;
use crate::watch::MAX_REASON_BYTES;
use crate::*;

fn raw(s: &str) -> Box<RawValue> {
    RawValue::from_string(s.to_owned()).unwrap()
}

/// Keys that broke (or could break) a line-framed answer.
const HOSTILE: [&str; 6] = [
    "ServiceEntry/evil\n# remove ServiceEntry/default/x/a",
    "--- # ServiceEntry/default/x",
    "\n--- # k\n{\"kind\":\"ServiceEntry\"}\n",
    "quote\" and \\ backslash",
    "nul \u{0} and \u{2028} separator",
    "",
];

#[test]
fn mesh_answers_round_trip_with_hostile_keys() {
    let doc = raw(r#"{"kind":"ServiceEntry","metadata":{"name":"x\n# remove ServiceEntry/default/x"}}"#);
    let mut e = MeshEncoder::new(42, MeshKind::Delta);
    for k in HOSTILE {
        e.put(k, &doc);
    }
    e.put("ServiceEntry/default/x", &raw("{}"));
    for k in HOSTILE {
        e.remove(&format!("gone {k}"));
    }
    let body = e.finish();
    assert_eq!((body.revision(), body.kind()), (42, MeshKind::Delta));
    let bytes = body.answer(7).to_vec();
    let a = MeshAnswer::decode(&bytes).unwrap();
    assert_eq!((a.nonce, a.revision, a.is_delta(), a.bytes), (7, 42, true, bytes.len()));
    let mut keys: Vec<&str> = HOSTILE.to_vec();
    keys.push("ServiceEntry/default/x");
    keys.sort();
    assert_eq!(a.documents.keys().map(String::as_str).collect::<Vec<_>>(), keys);
    assert_eq!(a.documents[HOSTILE[0]].get(), doc.get(), "a document comes back byte for byte");
    assert_eq!(a.removed, HOSTILE.iter().map(|k| format!("gone {k}")).collect::<Vec<_>>());
    // One line per document: nothing a key holds starts a line.
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(!text.lines().any(|l| l.starts_with("# remove") || l.starts_with("--- #")), "{text}");
}

#[test]
fn empty_and_full_answers() {
    let body = MeshEncoder::new(3, MeshKind::Delta).finish();
    let bytes = body.answer(1).to_vec();
    assert_eq!(String::from_utf8_lossy(&bytes), "{\"nonce\":1,\"revision\":3,\"mesh\":\"delta\",\"documents\":{},\"removed\":[]}\n");
    let a = MeshAnswer::decode(&bytes).unwrap();
    assert!(a.documents.is_empty() && a.removed.is_empty());
    let mut e = MeshEncoder::new(4, MeshKind::Full);
    e.put("a", &raw("{\"x\":1}"));
    e.put("b", &raw("[1,2]"));
    let enc = e.finish().answer(9);
    assert_eq!(enc.len(), enc.to_vec().len());
    let bytes = enc.to_vec();
    assert_eq!(String::from_utf8_lossy(&bytes).lines().count(), 4, "a line per document");
    let a = MeshAnswer::decode(&bytes).unwrap();
    assert!(!a.is_delta());
    assert_eq!(a.documents["b"].get(), "[1,2]");
}

#[test]
fn garbage_truncated_and_oversized_answers_are_clear_errors() {
    let mut e = MeshEncoder::new(5, MeshKind::Full);
    e.put("k", &raw(r#"{"spec":{"hosts":["a"]}}"#));
    let good = e.finish().answer(2).to_vec();
    for cut in [0, 1, 10, good.len() / 2, good.len() - 3] {
        let err = MeshAnswer::decode(&good[..cut]).unwrap_err();
        assert_eq!(err.what, "mesh answer");
        assert!(err.reason.contains("EOF") || err.reason.contains("expected"), "cut at {cut}: {err}");
    }
    for junk in [&b"\x00\xff\xfe not json"[..], b"--- # k\n{}\n# remove k\n", b"[]", b"{\"nonce\":-1,\"revision\":1,\"mesh\":\"full\"}"] {
        assert!(MeshAnswer::decode(junk).is_err(), "{}", String::from_utf8_lossy(junk));
    }
    let err = MeshAnswer::decode(b"{\"nonce\":1,\"revision\":99999999999999999999999,\"mesh\":\"full\"}").unwrap_err();
    assert!(err.to_string().starts_with("mesh answer: "), "{err}");
    let err = MeshAnswer::decode(br#"{"nonce":1,"revision":1,"mesh":"partial"}"#).unwrap_err();
    assert!(err.reason.contains("unknown variant `partial`"), "{err}");
    // Deep nesting (100,000 levels) is skipped over without recursion, in an unknown
    // field as in a document (kept as raw text: the config loader judges it).
    let open_close = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep = format!("{{\"nonce\":1,\"revision\":1,\"mesh\":\"full\",\"extra\":{open_close}}}");
    assert_eq!(MeshAnswer::decode(deep.as_bytes()).map(|a| a.revision).ok(), Some(1));
    let deep = format!("{{\"nonce\":1,\"revision\":1,\"mesh\":\"full\",\"documents\":{{\"k\":{open_close}}}}}");
    assert_eq!(MeshAnswer::decode(deep.as_bytes()).map(|a| a.documents["k"].get().len()).ok(), Some(200_000));
    let deep = format!("{{\"nonce\":1,\"revision\":1,\"mesh\":\"full\",\"removed\":{open_close}}}");
    assert!(MeshAnswer::decode(deep.as_bytes()).is_err());
    // Over the size limit: refused before parsing.
    let huge = vec![b' '; MAX_ANSWER_BYTES + 1];
    assert!(MeshAnswer::decode(&huge).unwrap_err().reason.contains("over the"));
}

fn watch() -> WatchRequest {
    WatchRequest {
        node: Some("n1".into()),
        since: 12,
        wait_ms: 25_000,
        identity: Some(Identity {
            namespace: "shop\n# remove ServiceEntry/default/x".into(),
            labels: BTreeMap::from([("app".into(), "a=b,c".into())]),
        }),
        last: Some(Outcome::Ack { nonce: 3, revision: 12 }),
        cert_not_after: Some(1_800_000_000),
        hosts: Some(vec!["reviews.shop.svc.cluster.local".into(), "*.example.com".into()]),
        names_since: Some(11),
        newly: Some(1),
    }
}

#[test]
fn watch_requests_round_trip() {
    let w = watch();
    // (A namespace with a newline is refused by check: control characters.)
    let bytes = w.encode();
    assert!(WatchRequest::decode(&bytes).unwrap_err().reason.contains("namespace"));
    let w = WatchRequest { identity: Some(Identity { namespace: "shop # remove x&since=0".into(), ..Default::default() }), ..w };
    assert_eq!(WatchRequest::decode(&w.encode()).unwrap(), w);
    let nack = Outcome::nack(4, 13, &"é".repeat(MAX_REASON_BYTES));
    assert!(nack.reason().unwrap().len() <= MAX_REASON_BYTES && nack.reason().unwrap().len() > MAX_REASON_BYTES - 2);
    let w = WatchRequest { last: Some(nack.clone()), ..w };
    let back = WatchRequest::decode(&w.encode()).unwrap();
    assert_eq!((back.last.as_ref().unwrap().nonce(), back.last.unwrap().revision()), (4, 13));
    // The anonymous fetch at start: everything defaulted.
    let anon = WatchRequest::decode(b"{}").unwrap();
    assert_eq!(anon, WatchRequest::default());
    assert_eq!(String::from_utf8(WatchRequest::default().encode()).unwrap(), "{\"since\":0,\"waitMs\":0}\n");
}

#[test]
fn hostile_watch_requests_are_refused_clearly() {
    let cases: [(&[u8], &str); 7] = [
        (b"node=n1&since=3", "expected"),
        (br#"{"node":"n1","since":-1}"#, "invalid value"),
        (br#"{"node":"","since":1}"#, "node \"\""),
        (br#"{"node":"a\nb"}"#, "control characters"),
        (br#"{"last":{"ack":{"nonce":"x","revision":1}}}"#, "invalid type"),
        (br#"{"last":{"maybe":{}}}"#, "unknown variant"),
        (br#"{"node":"n1","since":1"#, "EOF"),
    ];
    for (body, want) in cases {
        let err = WatchRequest::decode(body).unwrap_err();
        assert_eq!(err.what, "watch request");
        assert!(err.reason.contains(want), "{}: {err}", String::from_utf8_lossy(body));
    }
    let huge = format!("{{\"node\":\"{}\"}}", "n".repeat(700_000));
    assert!(WatchRequest::decode(huge.as_bytes()).unwrap_err().reason.contains("over the"));
}

#[test]
fn client_messages_round_trip() {
    let reg = Registration {
        service: "ratings".into(),
        address: "127.0.0.1:9000".into(),
        labels: BTreeMap::from([("version".into(), "v1".into())]),
        locality: Some("r/z".into()),
        weight: Some(3),
        ttl_ms: Some(1000),
        identity: None,
        namespace: Some("prod".into()),
    };
    assert_eq!(Registration::decode(&reg.encode()).unwrap(), reg);
    // What older clients send: nulls for the options.
    let old = br#"{"service":"s","address":"h:1","labels":{},"locality":null,"weight":null,"ttlMs":null}"#;
    assert_eq!(Registration::decode(old).unwrap().ttl_ms, None);
    let apply = ApplyRequest { files: vec![FileText { name: "a.yaml".into(), text: "--- # x\n# remove y\n".into() }] };
    assert_eq!(ApplyRequest::decode(&apply.encode()).unwrap(), apply);
    assert_eq!(ApplyRequest::decode(br#"{"files":[]}"#).unwrap_err().reason, "no files to apply");
    assert_eq!(ApplyRequest::decode(br#"{"files":[{"text":"x"}]}"#).unwrap().files[0].name, "-");
    let c = Committed { revision: 3, changed: vec!["config/a\nb".into()], warnings: vec![] };
    assert_eq!(Committed::decode(&c.encode()).unwrap(), c);
    // Warnings are left out when there are none (older clients read the same answer).
    assert!(!String::from_utf8(c.encode()).unwrap().contains("warnings"));
    let w = Committed { warnings: vec!["a.yaml: VirtualService x: spec: \u{1b}[31m".into()], ..c };
    assert_eq!(Committed::decode(&w.encode()).unwrap(), w);
    let ack = AckReport { node: "n".into(), revision: 2, reason: Some("bad".into()) };
    assert_eq!(AckReport::decode(&ack.encode()).unwrap(), ack);
    let s = StatusAnswer {
        revision: 4,
        items: vec![ProxyStatus {
            node: "n".into(),
            acked: 4,
            latest: 4,
            lag: 0,
            nacked: None,
            nack_reason: None,
            last_seen_ms_ago: 1,
            connected: true,
            identity: Some("spiffe://cluster.local/ns/default/sa/reviews".into()),
            cert_not_after: Some(1_800_000_000),
        }],
    };
    assert_eq!(StatusAnswer::decode(&s.encode()).unwrap(), s);
    let h = Listing {
        revision: 1,
        items: vec![HistoryEntry { revision: 1, at_ms: 5, client: "c".into(), action: "apply".into(), changes: vec![] }],
    };
    assert_eq!(Listing::<HistoryEntry>::decode(&h.encode()).unwrap(), h);
}

#[test]
fn queries_round_trip_any_text() {
    let e = EndpointRef { service: "a&b=c".into(), address: "[::1]:80 %zz+".into(), namespace: Some("n&s".into()) };
    assert_eq!(EndpointRef::from_query(&e.to_query()).unwrap(), e);
    assert!(EndpointRef::from_query("service=a").is_err());
    let q = ResourceQuery { kind: Some("se".into()), name: None, namespace: Some("a\n# remove x".into()) };
    assert_eq!(q.to_query(), "kind=se&namespace=a%0A%23%20remove%20x");
    assert_eq!(ResourceQuery::from_query(&q.to_query()), q);
    assert_eq!(
        ResourceQuery::from_query("kind=%%%&name=%4"),
        ResourceQuery { kind: Some("%%%".into()), name: Some("%4".into()), namespace: None }
    );
    assert_eq!(Rollback::from_query(&Rollback { to: 9 }.to_query()).unwrap().to, 9);
    assert!(Rollback::from_query("to=-1").is_err());
    assert_eq!(query::unescape("%FF%FE+x"), "\u{FFFD}\u{FFFD} x");
}

/// What a 10,000-service answer costs (`cargo test -p weft-api --release -- --ignored --nocapture`).
#[test]
#[ignore]
fn cost_of_a_10000_document_answer() {
    let docs: Vec<(String, Box<RawValue>)> = (0..10_000)
        .map(|i| {
            let doc = format!(
                r#"{{"apiVersion":"networking.istio.io/v1","kind":"ServiceEntry","metadata":{{"name":"svc-{i}","namespace":"default"}},"spec":{{"hosts":["svc-{i}"],"resolution":"STATIC","ports":[{{"number":80,"name":"http","protocol":"HTTP"}}],"endpoints":[{{"address":"10.0.{}.{}","ports":{{"http":8080}},"labels":{{"version":"v1","zone":"z1"}}}},{{"address":"10.1.{}.{}","ports":{{"http":8080}}}}]}}}}"#,
                i / 256,
                i % 256,
                i / 256,
                i % 256
            );
            (format!("ServiceEntry/default/svc-{i}"), raw(&doc))
        })
        .collect();
    let t = std::time::Instant::now();
    let mut e = MeshEncoder::new(1, MeshKind::Full);
    for (k, d) in &docs {
        e.put(k, d);
    }
    let body = e.finish();
    let encoded = t.elapsed();
    let t = std::time::Instant::now();
    let enc = body.answer(1);
    let per_proxy = t.elapsed();
    let bytes = enc.to_vec();
    let t = std::time::Instant::now();
    let a = MeshAnswer::decode(&bytes).unwrap();
    let decoded = t.elapsed();
    assert_eq!(a.documents.len(), 10_000);
    eprintln!(
        "{} bytes: encoded once in {encoded:?}, per proxy {per_proxy:?}, decoded (envelope, documents kept raw) in {decoded:?}",
        bytes.len()
    );
}

#[test]
fn on_demand_hosts_are_bounded_and_clean() {
    let with = |hosts: Vec<String>| WatchRequest { hosts: Some(hosts), ..Default::default() };
    assert!(with(vec!["reviews.default.svc.cluster.local".into()]).check().is_ok());
    let too_many = with((0..crate::watch::MAX_ON_DEMAND_HOSTS + 1).map(|i| format!("s{i}.example")).collect());
    assert!(too_many.check().unwrap_err().contains("at most"));
    for bad in ["", "a b", "a\nb", "a,b", &"x".repeat(254)] {
        assert!(with(vec![bad.to_owned()]).check().is_err(), "{bad:?}");
    }
    // `newly` counts hosts at the end of `hosts`: never more than there are.
    let widened = |hosts: Option<Vec<String>>, newly| WatchRequest { hosts, newly: Some(newly), ..Default::default() };
    assert!(widened(Some(vec!["a".into(), "b".into()]), 2).check().is_ok());
    assert!(widened(Some(vec!["a".into(), "b".into()]), 3).check().unwrap_err().contains("newly"));
    assert!(widened(None, 1).check().unwrap_err().contains("newly"));
    assert!(widened(None, 0).check().is_ok());
}
