use super::*;

fn user(role: Role) -> TokenRequest {
    TokenRequest { role: Some(role), ..TokenRequest::default() }
}

fn workload(ns: &str, sa: &str) -> TokenRequest {
    TokenRequest { namespace: Some(ns.into()), service_account: Some(sa.into()), ..TokenRequest::default() }
}

const NOW: u64 = 1_800_000_000;

#[test]
fn a_token_names_who_it_was_issued_to() {
    let a = Auth::from_key(&[7; 32]);
    let (t, id, exp) = a.issue(&user(Role::Write), NOW).unwrap();
    assert_eq!(exp, None);
    assert_eq!(a.verify(&t, NOW), Ok(Principal::User { id, role: Role::Write }));
    let (t, id, _) = a.issue(&workload("default", "reviews"), NOW).unwrap();
    assert_eq!(
        a.verify(&t, NOW),
        Ok(Principal::Workload { id, namespace: "default".into(), service_account: "reviews".into(), uses: None, exp: None })
    );
}

#[test]
fn a_token_expires_at_its_ttl() {
    let a = Auth::from_key(&[7; 32]);
    let (t, _, exp) = a.issue(&TokenRequest { ttl_ms: Some(3_600_000), ..user(Role::Read) }, NOW).unwrap();
    assert_eq!(exp, Some(NOW + 3600));
    assert!(a.verify(&t, NOW + 3599).is_ok());
    assert_eq!(a.verify(&t, NOW + 3600), Err(Refused::Expired));
    for bad in [0, 999, MAX_TTL_MS + 1, u64::MAX] {
        assert!(a.issue(&TokenRequest { ttl_ms: Some(bad), ..user(Role::Read) }, NOW).is_err(), "ttl {bad}");
    }
}

#[test]
fn a_forged_or_altered_token_is_refused() {
    let a = Auth::from_key(&[7; 32]);
    let other = Auth::from_key(&[8; 32]);
    let (read, _, _) = a.issue(&user(Role::Read), NOW).unwrap();
    // Another control plane's token.
    let (foreign, _, _) = other.issue(&user(Role::Admin), NOW).unwrap();
    assert_eq!(a.verify(&foreign, NOW), Err(Refused::BadToken("not signed by this control plane")));
    // The claims rewritten to admin, the tag kept.
    let (body, tag) = read.rsplit_once('.').unwrap();
    let claims = String::from_utf8(B64.decode(body.strip_prefix(PREFIX).unwrap()).unwrap()).unwrap();
    let forged = format!("{PREFIX}{}.{tag}", B64.encode(claims.replace("read", "admin")));
    assert!(matches!(a.verify(&forged, NOW), Err(Refused::BadToken(_))));
    // An expiry removed.
    let (short, _, _) = a.issue(&TokenRequest { ttl_ms: Some(1000), ..user(Role::Read) }, NOW).unwrap();
    let (body, tag) = short.rsplit_once('.').unwrap();
    let claims = String::from_utf8(B64.decode(body.strip_prefix(PREFIX).unwrap()).unwrap()).unwrap();
    let unexpiring = claims.split(",\"exp\"").next().unwrap().to_owned() + "}";
    assert!(a.verify(&format!("{PREFIX}{}.{tag}", B64.encode(unexpiring)), NOW + 10).is_err());
}

#[test]
fn hostile_tokens_are_refused_cheaply() {
    let a = Auth::from_key(&[7; 32]);
    let huge = format!("{PREFIX}{}.{}", "A".repeat(1 << 20), "B".repeat(43));
    for t in ["", ".", "weft1.", "weft1..", "weft1.e30.", "Bearer x", "weft1.e30.AAAA\n", "weft2.e30.AAAA", "\u{0}", huge.as_str()] {
        assert!(matches!(a.verify(t, NOW), Err(Refused::BadToken(_))), "{:?}", weft_api::truncate(t, 40));
    }
    // A correctly signed body whose claims are not ours.
    let body = format!("{PREFIX}{}", B64.encode(br#"{"v":1,"id":"x","role":"admin","ns":"a","sa":"b"}"#));
    let tag = B64.encode(hmac::sign(&a.key, body.as_bytes()).as_ref());
    assert_eq!(a.verify(&format!("{body}.{tag}"), NOW), Err(Refused::BadToken("malformed claims")));
    assert_eq!(a.authenticate(None, NOW), Err(Refused::NoToken));
    let basic = http::HeaderValue::from_static("Basic dXNlcjpwYXNz");
    assert_eq!(a.authenticate(Some(&basic), NOW), Err(Refused::BadToken("not a bearer token")));
}

#[test]
fn roles_and_workloads_get_what_they_need_and_no_more() {
    let reader = Principal::User { id: "r".into(), role: Role::Read };
    let writer = Principal::User { id: "w".into(), role: Role::Write };
    let admin = Principal::User { id: "a".into(), role: Role::Admin };
    let reviews =
        Principal::Workload { id: "p".into(), namespace: "default".into(), service_account: "reviews".into(), uses: None, exp: None };
    let apply = need(&Method::POST, "/v1/apply");
    let tokens = need(&Method::POST, "/v1/tokens");
    let register = need(&Method::POST, "/v1/registry");
    let watch = need(&Method::POST, "/v1/watch");
    let list = need(&Method::GET, "/v1/resources");
    assert!(allow(&reader, list, None).is_ok());
    assert!(allow(&reader, watch, None).is_ok());
    assert!(allow(&reader, apply, None).is_err());
    assert!(allow(&reader, register, Some("reviews")).is_err());
    assert!(allow(&writer, apply, None).is_ok());
    assert!(allow(&writer, register, Some("anything")).is_ok());
    assert!(allow(&writer, tokens, None).is_err());
    assert!(allow(&admin, tokens, None).is_ok());
    assert!(allow(&reviews, watch, None).is_ok());
    // (The API hands `allow` the service as stored: a short name's FQDN.)
    assert!(allow(&reviews, register, Some("reviews.default.svc.cluster.local")).is_ok());
    assert!(allow(&reviews, register, Some("reviews")).is_err(), "a literal short host is no service of its");
    assert!(allow(&reviews, register, Some("reviews.other.svc.cluster.local")).is_err());
    let e = allow(&reviews, register, Some("ratings")).unwrap_err();
    assert!(e.to_string().contains("only its own service"), "{e}");
    assert!(allow(&reviews, apply, None).is_err());
    assert!(allow(&reviews, list, None).is_err());
    assert!(allow(&reviews, need(&Method::POST, "/v1/rollback"), None).is_err());
    assert!(allow(&reviews, need(&Method::DELETE, "/v1/registry"), Some("ratings")).is_err());
    assert!(allow(&reviews, need(&Method::POST, "/v1/registry/heartbeat"), Some("reviews.default.svc.cluster.local")).is_ok());
}

#[test]
fn the_key_and_first_admin_token_are_made_once_and_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("weft-auth-{}-{}", std::process::id(), NOW));
    let _ = std::fs::remove_dir_all(&dir);
    let (key, admin) = (dir.join("token-key"), dir.join("admin-token"));
    let (a, made) = Auth::load_or_create(&key, Some(&admin)).unwrap();
    assert!(made);
    let token = std::fs::read_to_string(&admin).unwrap();
    assert!(matches!(a.verify(token.trim(), now_s()), Ok(Principal::User { role: Role::Admin, .. })));
    for f in [&key, &admin] {
        assert_eq!(std::fs::metadata(f).unwrap().permissions().mode() & 0o777, 0o600, "{}", f.display());
    }
    let (b, made) = Auth::load_or_create(&key, Some(&admin)).unwrap();
    assert!(!made);
    assert!(b.verify(token.trim(), now_s()).is_ok(), "the same key after a restart");
    std::fs::write(&key, b"short").unwrap();
    assert!(Auth::load_or_create(&key, None).unwrap_err().contains("32 bytes"));
    let _ = std::fs::remove_dir_all(&dir);
}
