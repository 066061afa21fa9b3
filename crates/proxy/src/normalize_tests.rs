use super::PathNormalization::{Base, DecodeAndMergeSlashes as Decode, MergeSlashes as Merge, None as NoNorm};
use super::*;
use proptest::prelude::*;

fn ok(p: &str, m: PathNormalization) -> String {
    normalize(p, m).unwrap_or_else(|e| panic!("{p}: {e:?}")).into_owned()
}

#[test]
fn table() {
    let cases: &[(&str, PathNormalization, &str)] = &[
        // The bypasses of issue 12, each must come out as /admin.
        ("/x/../admin", Base, "/admin"),
        ("/./admin", Base, "/admin"),
        ("/%2e%2e/admin", Base, "/admin"),
        ("/%2e%2E/admin", Base, "/admin"),
        ("/%61dmin", Base, "/admin"),
        ("/%61DMIN", Base, "/aDMIN"),
        ("/x\\..\\admin", Base, "/admin"),
        ("/x%5C..%5Cadmin", Decode, "/admin"),
        ("//admin", Merge, "/admin"),
        ("//admin", Decode, "/admin"),
        ("//admin", Base, "//admin"),
        ("/a/b/../../../x", Base, "/x"),
        ("/../../..", Base, "/"),
        ("/a/b/..", Base, "/a/"),
        ("/a/.", Base, "/a/"),
        ("/a/", Base, "/a/"),
        ("/", Base, "/"),
        ("", Base, "/"),
        ("*", Base, "*"),
        ("/a%2fb", Base, "/a%2Fb"),
        ("/a%2Fb", Merge, "/a%2Fb"),
        ("/a%2fb", Decode, "/a/b"),
        ("/a%2F%2Fb", Decode, "/a/b"),
        ("/a%2F..%2Fadmin", Decode, "/admin"),
        ("/a%2F..%2Fadmin", Base, "/a%2F..%2Fadmin"),
        ("/%7euser/%41%5a", Base, "/~user/AZ"),
        ("/caf%c3%a9", Base, "/caf%C3%A9"),
        // An overlong UTF-8 `.` is not a dot: it stays encoded.
        ("/%c0%ae%c0%ae/admin", Base, "/%C0%AE%C0%AE/admin"),
        ("/a//b/../c", Merge, "/a/c"),
        ("/a//b/../c", Base, "/a//c"),
        ("/a/..//", Merge, "/"),
        ("/.well-known/x", Base, "/.well-known/x"),
        ("/a/...", Base, "/a/..."),
        ("/x/../admin", NoNorm, "/x/../admin"),
        ("/%00admin", NoNorm, "/%00admin"),
    ];
    for &(p, m, want) in cases {
        assert_eq!(ok(p, m), want, "{p} under {m:?}");
    }
}

#[test]
fn refused() {
    for p in ["/%00admin", "/a%0d%0aX-Injected:1", "/%1f", "/%7F", "/%zz", "/%", "/%4", "/a%g0", "/a\u{1}b"] {
        for m in [Base, Merge, Decode] {
            assert!(normalize(p, m).is_err(), "{p} under {m:?}");
        }
    }
    assert_eq!(normalize("/%00", Base), Err(Rejected::Control));
    assert_eq!(normalize("/%zz", Base), Err(Rejected::BadEscape));
}

#[test]
fn untouched_paths_are_borrowed() {
    for p in ["/", "/api/v1/items", "/a.b/c.d", "/x-y_z~"] {
        assert!(matches!(normalize(p, Base), Ok(Cow::Borrowed(_))), "{p}");
    }
}

#[test]
fn overlong_paths() {
    let long = "/a/..".repeat(20_000) + "/admin";
    assert_eq!(ok(&long, Base), "/admin");
    let deep = "/%2e%2e".repeat(20_000);
    assert_eq!(ok(&deep, Base), "/");
    let wide = format!("/{}", "x".repeat(100_000));
    assert_eq!(ok(&wide, Merge), wide);
}

fn path_strategy() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_owned()),
        Just("//".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("\\".to_owned()),
        Just("%2e".to_owned()),
        Just("%2E".to_owned()),
        Just("%2f".to_owned()),
        Just("%5c".to_owned()),
        Just("%41".to_owned()),
        Just("%c0%ae".to_owned()),
        Just("%25".to_owned()),
        "[a-z]{1,3}",
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|v| format!("/{}", v.concat()))
}

proptest! {
    // The case count follows PROPTEST_CASES (scripts/fuzz.sh's long run).
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn fuzz_path_idempotent_and_clean(p in path_strategy()) {
        for m in [Base, Merge, Decode] {
            let Ok(once) = normalize(&p, m) else { continue };
            let once = once.into_owned();
            let twice = ok(&once, m);
            prop_assert_eq!(&once, &twice, "{} under {:?}", p, m);
            prop_assert!(!once.contains('\\'));
            prop_assert!(once.starts_with('/'));
            prop_assert!(once.split('/').all(|s| s != ".." && s != "."), "{} -> {}", p, once);
            if m != Base {
                prop_assert!(!once.contains("//"), "{} -> {}", p, once);
            }
        }
    }

    #[test]
    fn fuzz_path_never_panics(p in "\\PC{0,64}") {
        for m in [NoNorm, Base, Merge, Decode] {
            let _ = normalize(&p, m);
        }
    }
}
