use super::*;

fn policy() -> CompressionPolicy {
    CompressionPolicy {
        name: "Compression/t".into(),
        matches: Vec::new(),
        encodings: Encoding::ALL.to_vec(),
        min_content_length: 30,
        content_types: vec!["application/json".into(), "text/html".into()],
        levels: Default::default(),
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    h
}

#[test]
fn the_no_compress_cases() {
    let p = policy();
    let json = [("content-type", "application/json")];
    let ok = |m: Method, req: &[(&str, &str)], s: u16, resp: &[(&str, &str)]| {
        should_compress(&p, &m, &headers(req), StatusCode::from_u16(s).unwrap(), &headers(resp))
    };
    assert!(ok(Method::GET, &[], 200, &json));
    assert!(ok(Method::POST, &[], 404, &[("content-type", "Text/HTML; charset=utf-8")]));
    assert!(ok(Method::GET, &[], 200, &[("content-type", "application/json"), ("content-length", "30")]));
    assert!(ok(Method::GET, &[], 200, &[("content-type", "application/json"), ("content-encoding", "identity")]));
    assert!(ok(Method::GET, &[], 200, &[("content-type", "application/json"), ("cache-control", "max-age=60")]));

    assert!(!ok(Method::HEAD, &[], 200, &json));
    assert!(!ok(Method::GET, &[], 204, &json));
    assert!(!ok(Method::GET, &[], 304, &json));
    assert!(!ok(Method::GET, &[], 206, &json));
    assert!(!ok(Method::GET, &[], 101, &json));
    assert!(!ok(Method::GET, &[], 103, &json));
    assert!(!ok(Method::GET, &[("upgrade", "websocket"), ("connection", "Upgrade")], 200, &json));
    assert!(!ok(Method::GET, &[("connection", "keep-alive, upgrade")], 200, &json));
    assert!(!ok(Method::GET, &[], 200, &[("content-type", "application/json"), ("content-encoding", "gzip")]));
    assert!(!ok(Method::GET, &[], 200, &[("content-type", "application/json"), ("content-encoding", "br")]));
    assert!(!ok(Method::GET, &[], 200, &[("content-type", "application/json"), ("cache-control", "public, No-Transform")]));
    assert!(!ok(Method::GET, &[], 200, &[("content-type", "image/png")]));
    assert!(!ok(Method::GET, &[], 200, &[]), "no content-type: not compressed");
    assert!(!ok(Method::GET, &[], 200, &[("content-type", "application/json"), ("content-length", "29")]));
    assert!(!ok(Method::GET, &[], 200, &[("content-type", "application/json"), ("content-length", "lots")]));
    assert!(!ok(Method::GET, &[], 200, &[("content-type", "application/json"), ("content-range", "bytes 0-9/100")]));
}

#[test]
fn head_edit() {
    let mut h = headers(&[("content-length", "1000"), ("vary", "Origin"), ("vary", "Cookie"), ("etag", "\"abc\"")]);
    edit_response_head(&mut h, Encoding::Brotli);
    assert_eq!(h.get(CONTENT_ENCODING).unwrap(), "br");
    assert!(!h.contains_key(CONTENT_LENGTH));
    assert_eq!(h.get_all(VARY).iter().collect::<Vec<_>>(), vec!["Origin, Cookie, Accept-Encoding"]);
    assert_eq!(h.get(ETAG).unwrap(), "W/\"abc\"");

    let mut h = headers(&[("vary", "accept-encoding, origin"), ("etag", "W/\"x\"")]);
    edit_response_head(&mut h, Encoding::Gzip);
    assert_eq!(h.get_all(VARY).iter().collect::<Vec<_>>(), vec!["accept-encoding, origin"]);
    assert_eq!(h.get(ETAG).unwrap(), "W/\"x\"");

    let mut h = headers(&[("vary", "*")]);
    edit_response_head(&mut h, Encoding::Zstd);
    assert_eq!(h.get_all(VARY).iter().collect::<Vec<_>>(), vec!["*"]);
    assert_eq!(h.get(CONTENT_ENCODING).unwrap(), "zstd");

    let mut h = HeaderMap::new();
    edit_response_head(&mut h, Encoding::Gzip);
    assert_eq!(h.get(VARY).unwrap(), "Accept-Encoding");
}
