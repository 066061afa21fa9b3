use super::*;

const CURATOR: &str = r#"{"name":"Reviews","id":"6b2c","address":"10.0.0.7","port":9080,"sslPort":null,
  "payload":{"@class":"org.springframework.cloud.zookeeper.discovery.ZookeeperInstance","id":"reviews","name":"reviews",
  "metadata":{"version":"v2","bad key!":"x","zone":"a\nb"}},
  "registrationTimeUTC":1700000000000,"serviceType":"DYNAMIC","uriSpec":null}"#;

#[test]
fn a_curator_instance_is_an_endpoint_of_its_service_in_default() {
    let r = curator("Reviews", CURATOR.as_bytes()).unwrap();
    assert_eq!(r.service, "reviews.default.svc.cluster.local");
    assert_eq!(r.address, "10.0.0.7:9080");
    assert_eq!(r.namespace.as_deref(), Some("default"));
    let want: BTreeMap<String, String> = [("version", "v2"), (SOURCE_LABEL, SOURCE)].map(|(k, v)| (k.into(), v.into())).into();
    assert_eq!(r.labels, want, "only the metadata labels weft's rules allow");
    assert!(is_zookeeper(&serde_json::to_value(&r).unwrap()));
    let v6 = curator("r", br#"{"address":"::1","port":80}"#).unwrap();
    assert_eq!(v6.address, "[::1]:80");
}

#[test]
fn bad_curator_nodes_are_refused_with_a_reason() {
    let cases: [(&str, &[u8], &str); 8] = [
        ("r", b"{not json", "malformed"),
        ("r", b"", "malformed"),
        ("r", br#"{"address":"10.0.0.1"}"#, "no port"),
        ("r", br#"{"address":"10.0.0.1","port":0}"#, "bad port"),
        ("r", br#"{"address":"10.0.0.1","port":70000}"#, "bad port"),
        ("r", br#"{"address":"db.example.com","port":80}"#, "not an IP"),
        ("../../x", br#"{"address":"10.0.0.1","port":80}"#, "service"),
        ("r", br#"{"address":"10.0.0.1","port":"80"}"#, "malformed"),
    ];
    for (name, data, why) in cases {
        let e = curator(name, data).unwrap_err();
        assert!(e.contains(why) && e.len() < 300, "{name} {:?}: {e}", String::from_utf8_lossy(data));
    }
}

#[test]
fn a_dubbo_provider_url_is_an_endpoint_with_its_labels() {
    let child = "dubbo%3A%2F%2F10.0.0.1%3A20880%2Fcom.foo.DemoService%3Fanyhost%3Dtrue%26application%3Ddemo%26group%3Dg1%26interface%3Dcom.foo.DemoService%26methods%3DsayHello%26version%3D1.0.0";
    let r = dubbo("com.foo.DemoService", child).unwrap();
    assert_eq!(r.service, "com-foo-demoservice.default.svc.cluster.local");
    assert_eq!(r.address, "10.0.0.1:20880");
    let want: BTreeMap<String, String> =
        [("application", "demo"), ("group", "g1"), ("version", "1.0.0"), (SOURCE_LABEL, SOURCE)].map(|(k, v)| (k.into(), v.into())).into();
    assert_eq!(r.labels, want);
    let bare = dubbo("a.B", "tri%3A%2F%2F%5B%3A%3A1%5D%3A50051").unwrap();
    assert_eq!((bare.service.as_str(), bare.address.as_str()), ("a-b.default.svc.cluster.local", "[::1]:50051"));
}

#[test]
fn bad_dubbo_providers_are_refused_with_a_reason() {
    let cases = [
        ("com.Foo", "dubbo%3A%2F%2F10.0.0.1%3Ax%2Fcom.Foo", "bad port"),
        ("com.Foo", "dubbo%3A%2F%2F10.0.0.1%3A99999%2Fcom.Foo", "bad port"),
        ("com.Foo", "10.0.0.1%3A80", "no scheme"),
        ("com.Foo", "dubbo%3A%2F%2F10.0.0.1%2Fcom.Foo", "no host:port"),
        ("com.Foo", "dubbo%ZZ", "URL-encoded"),
        ("com.Foo", "dubbo%3A%2F%2Fhost.example%3A80", "not an IP"),
        ("...", "dubbo%3A%2F%2F10.0.0.1%3A80", "service"),
    ];
    for (iface, child, why) in cases {
        let e = dubbo(iface, child).unwrap_err();
        assert!(e.contains(why) && e.len() < 300, "{child}: {e}");
    }
    // A parameter that is no label value is dropped, the provider kept.
    let r = dubbo("com.Foo", "dubbo%3A%2F%2F10.0.0.1%3A80%3Fversion%3Da%2520b%26group%3D*%26application%3Dok").unwrap();
    assert_eq!(r.labels.keys().map(String::as_str).collect::<Vec<_>>(), ["application", SOURCE_LABEL]);
    let long = format!("com.{}", "x".repeat(80));
    assert!(dubbo(&long, "dubbo%3A%2F%2F10.0.0.1%3A80").unwrap_err().contains("service"));
}

#[test]
fn dubbo_service_names_are_dns_labels() {
    assert_eq!(dubbo_service("com.foo.DemoService"), "com-foo-demoservice");
    assert_eq!(dubbo_service("org.x.Y$Inner"), "org-x-y-inner");
    assert_eq!(dubbo_service(".a."), "a");
}
