//! SPIFFE ID parsing: one canonical spelling per identity, everything else refused.

use proptest::prelude::*;
use weft_tls::spiffe::{SpiffeId, SpiffeIdError, MAX_SPIFFE_ID_LEN};

#[test]
fn istio_shaped_ids_parse_and_print_back_unchanged() {
    for s in [
        "spiffe://cluster.local/ns/default/sa/reviews",
        "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account",
        "spiffe://prod.example.com/ns/a/sa/b",
        "spiffe://td/ns/n1/sa/my.sa-2",
    ] {
        let id = SpiffeId::parse(s).unwrap();
        assert_eq!(id.to_string(), s);
    }
    let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/reviews".parse().unwrap();
    assert_eq!((id.trust_domain(), id.namespace(), id.service_account()), ("cluster.local", "default", "reviews"));
}

#[test]
fn hostile_or_non_canonical_ids_are_refused() {
    let long_sa = "a".repeat(300);
    let huge = format!("spiffe://cluster.local/ns/default/sa/{}", "a".repeat(1 << 20));
    for s in [
        "",
        "spiffe://",
        "https://cluster.local/ns/default/sa/reviews",
        "SPIFFE://cluster.local/ns/default/sa/reviews",
        "spiffe://cluster.local",
        "spiffe://cluster.local/",
        "spiffe://cluster.local/ns/default",
        "spiffe://cluster.local/ns/default/sa/",
        "spiffe://cluster.local/ns//sa/reviews",
        "spiffe://cluster.local/ns/default/sa/reviews/",
        "spiffe://cluster.local/ns/default/sa/reviews/extra",
        "spiffe://cluster.local/ns/default/sa/reviews?x=1",
        "spiffe://cluster.local/ns/default/sa/reviews#frag",
        "spiffe://cluster.local/sa/reviews/ns/default",
        "spiffe://cluster.local/ns/../sa/reviews",
        "spiffe://cluster.local/ns/default/sa/..",
        "spiffe://cluster.local/ns/default/sa/a..b",
        "spiffe://cluster.local/ns/default/sa/.reviews",
        "spiffe://cluster.local/ns/de.fault/sa/reviews",
        "spiffe://cluster.local/ns/default/sa/re%76iews",
        "spiffe://cluster.local/ns/default/sa/Reviews",
        "spiffe://Cluster.local/ns/default/sa/reviews",
        "spiffe://cluster.local/ns/default/sa/reviews\n",
        "spiffe://cluster.local/ns/default/sa/rev\niews",
        "spiffe://cluster.local/ns/default/sa/rev iews",
        "spiffe://cluster.local/ns/default/sa/révi",
        "spiffe://cluster.local/ns/-default/sa/reviews",
        "spiffe://cluster.local/ns/default-/sa/reviews",
        "spiffe://cluster..local/ns/default/sa/reviews",
        "spiffe://.cluster.local/ns/default/sa/reviews",
        "spiffe://user@cluster.local/ns/default/sa/reviews",
        "spiffe://cluster.local:8080/ns/default/sa/reviews",
        "spiffe://cluster.local//ns/default/sa/reviews",
        "spiffe://cluster_local/ns/default/sa/reviews",
        "spiffe://cluster.local/ns/default/sa/reviews\0",
    ] {
        assert!(SpiffeId::parse(s).is_err(), "accepted {s:?}");
    }
    let too_long_sa = format!("spiffe://cluster.local/ns/default/sa/{long_sa}");
    assert!(matches!(SpiffeId::parse(&too_long_sa), Err(SpiffeIdError::ServiceAccount(_))));
    assert!(matches!(SpiffeId::parse(&huge), Err(SpiffeIdError::TooLong { .. })));
    assert!(huge.len() > MAX_SPIFFE_ID_LEN);
    let long_ns = format!("spiffe://td/ns/{}/sa/x", "a".repeat(64));
    assert!(matches!(SpiffeId::parse(&long_ns), Err(SpiffeIdError::Namespace(_))));
}

#[test]
fn errors_name_the_part_that_is_wrong() {
    let err = SpiffeId::parse("spiffe://cluster.local/ns/Default/sa/reviews").unwrap_err();
    assert_eq!(err.to_string(), "invalid namespace: only lowercase letters, digits, '-' and '.' are allowed");
    let err = SpiffeId::new("cluster.local", "default", "a..b").unwrap_err();
    assert!(err.to_string().starts_with("invalid service account"), "{err}");
}

proptest! {
    #[test]
    fn parse_never_panics_and_accepted_ids_round_trip(s in "\\PC{0,80}|spiffe://[a-z.-]{0,12}/ns/[a-z0-9.-]{0,8}/sa/[a-z0-9./-]{0,8}") {
        if let Ok(id) = SpiffeId::parse(&s) {
            prop_assert_eq!(id.to_string(), s.clone());
            prop_assert_eq!(SpiffeId::parse(&id.to_string()).ok(), Some(id));
        }
    }

    #[test]
    fn valid_parts_always_build_and_round_trip(
        td in "[a-z][a-z0-9]{0,10}(\\.[a-z][a-z0-9]{0,10}){0,3}",
        ns in "[a-z]([a-z0-9-]{0,20}[a-z0-9])?",
        sa in "[a-z]([a-z0-9-]{0,20}[a-z0-9])?",
    ) {
        let id = SpiffeId::new(&td, &ns, &sa).unwrap();
        prop_assert_eq!(SpiffeId::parse(&id.to_string()), Ok(id));
    }
}
