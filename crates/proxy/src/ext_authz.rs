//! `CUSTOM` AuthorizationPolicy: the request goes to an external authorizer first
//! (an `ExtensionProvider` with `envoyExtAuthzHttp`, Envoy's HTTP ext_authz service).
//!
//! The check is a request to the provider's service (a service of the mesh, balanced
//! and pooled like any upstream) with the original method and path (after
//! `pathPrefix`), no body, and only the headers chosen: `Authorization`, those named in
//! `includeRequestHeadersInCheck`, and `includeAdditionalHeadersInCheck`'s fixed ones.
//! A `2xx` answer allows the request (the headers named in `headersToUpstreamOnAllow`
//! are copied onto it, `headersToDownstreamOnAllow` onto its response); any other answer
//! is returned to the client as it came (status, body, and the headers named in
//! `headersToDownstreamOnDeny`), flag `UAEX`. An authorizer that cannot be reached, or
//! answers too late (`timeout`, 600 s as Istio's), fails closed with `statusOnError`
//! (403) unless `failOpen`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, HOST};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Limited};
use weft_authz::spec::ExtAuthzHttp;
use weft_telemetry::ResponseFlags;

use crate::body::{ReqBody, RespBody};
use crate::request::RequestCtx;

/// The largest authorizer answer body read (a denial's body goes to the client).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Istio's default `timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// A check to make, taken from the request while its head was at hand.
pub struct Call {
    pub provider: Arc<ExtAuthzHttp>,
    pub method: Method,
    /// The original path and query.
    pub path: String,
    /// The headers sent to the authorizer.
    pub headers: HeaderMap,
}

/// Headers to add after an allow.
#[derive(Default)]
pub struct Allowed {
    pub to_upstream: Vec<(HeaderName, HeaderValue)>,
    pub to_downstream: Vec<(HeaderName, HeaderValue)>,
}

impl Call {
    /// The check for a request with `method`, `path_and_query` and `headers`.
    pub fn new(provider: Arc<ExtAuthzHttp>, method: &Method, path_and_query: &str, headers: &HeaderMap) -> Call {
        let mut out = HeaderMap::new();
        let wanted = |name: &HeaderName| {
            name == AUTHORIZATION || provider.include_request_headers_in_check.iter().any(|w| w.eq_ignore_ascii_case(name.as_str()))
        };
        for (name, value) in headers {
            if wanted(name) {
                out.append(name.clone(), value.clone());
            }
        }
        for (k, v) in &provider.include_additional_headers_in_check {
            if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
                out.insert(k, v);
            }
        }
        Call { provider, method: method.clone(), path: path_and_query.to_owned(), headers: out }
    }
}

/// Asks the authorizer: `Ok` with the headers to add when it allows, `Err` with the
/// answer for the client when it denies (recorded as the request's outcome).
pub async fn check(cx: &mut RequestCtx, call: Call) -> Result<Allowed, Response<RespBody>> {
    let p = call.provider.clone();
    let timeout = p.timeout.as_deref().and_then(|t| weft_config::duration::parse_duration(t).ok()).unwrap_or(DEFAULT_TIMEOUT);
    let answer = tokio::time::timeout(timeout, ask(cx, call)).await.unwrap_or_else(|_| Err("timed out".into()));
    let counters = &cx.conn.shared.metrics.counters;
    match answer {
        Ok((status, headers, _)) if status.is_success() => {
            let pick = |names: &[String]| -> Vec<(HeaderName, HeaderValue)> {
                headers
                    .iter()
                    .filter(|(n, _)| names.iter().any(|w| w.eq_ignore_ascii_case(n.as_str())))
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .collect()
            };
            Ok(Allowed { to_upstream: pick(&p.headers_to_upstream_on_allow), to_downstream: pick(&p.headers_to_downstream_on_allow) })
        }
        Ok((status, headers, body)) => {
            counters.authz_denied.fetch_add(1, Ordering::Relaxed);
            let fin = cx.fin.take();
            let mut resp = crate::local::reply(fin, status, ResponseFlags::UAEX, body, cx.version);
            for (n, v) in headers.iter().filter(|(n, _)| p.headers_to_downstream_on_deny.iter().any(|w| w.eq_ignore_ascii_case(n.as_str())))
            {
                resp.headers_mut().append(n.clone(), v.clone());
            }
            Err(resp)
        }
        Err(e) if p.fail_open => {
            tracing::warn!(service = %p.service, "external authorizer: {e}; failOpen lets the request through");
            Ok(Allowed::default())
        }
        Err(e) => {
            tracing::warn!(service = %p.service, "external authorizer: {e}; denied (fail closed)");
            counters.authz_denied.fetch_add(1, Ordering::Relaxed);
            let status = p.status_on_error.as_deref().and_then(|s| s.parse::<u16>().ok()).and_then(|s| StatusCode::from_u16(s).ok());
            let fin = cx.fin.take();
            Err(crate::local::reply(fin, status.unwrap_or(StatusCode::FORBIDDEN), ResponseFlags::UAEX, Bytes::new(), cx.version))
        }
    }
}

/// Sends the check to an endpoint of the provider's service: its status, headers and body.
async fn ask(cx: &RequestCtx, call: Call) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    let p = &call.provider;
    let cluster = {
        let rt = cx.conn.shared.current.load();
        let port = u16::try_from(p.port).map_err(|_| "port out of range".to_owned())?;
        rt.clusters
            .iter()
            .find(|c| c.spec.service.eq_ignore_ascii_case(&p.service) && c.spec.port == port && c.spec.subset.is_none())
            .cloned()
            .ok_or_else(|| format!("no service {}:{} in the mesh", p.service, p.port))?
    };
    let i = cluster.pick(None).ok_or_else(|| format!("no healthy endpoint of {}", p.service))?;
    let ep = cluster.endpoints[i].clone();
    let path = format!("{}{}", p.path_prefix.as_deref().unwrap_or(""), call.path);
    let h2 = cluster.spec.pool.protocol == weft_config::UpstreamProtocol::Http2;
    let mut req = Request::new(ReqBody::Empty);
    *req.method_mut() = call.method;
    *req.headers_mut() = call.headers;
    if h2 {
        *req.version_mut() = Version::HTTP_2;
        *req.uri_mut() = crate::headers::absolute_uri(&p.service, &path).ok_or("invalid path")?;
    } else {
        *req.uri_mut() = path.parse().map_err(|_| "invalid path".to_owned())?;
        let host = HeaderValue::from_str(&p.service).map_err(|_| "invalid service name".to_owned())?;
        req.headers_mut().insert(HOST, host);
    }
    let worker = cx.conn.worker;
    let resp = if h2 {
        crate::pool::send_h2(&ep, worker, req).await.map_err(|e| e.to_string())?
    } else {
        let (resp, returner) = crate::pool::send_h1(&ep, worker, req).await.map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_ANSWER_BYTES).collect().await.map_err(|e| format!("answer: {e}"))?.to_bytes();
        returner.release();
        return Ok((parts.status, parts.headers, body));
    };
    let (parts, body) = resp.into_parts();
    let body = Limited::new(body, MAX_ANSWER_BYTES).collect().await.map_err(|e| format!("answer: {e}"))?.to_bytes();
    Ok((parts.status, parts.headers, body))
}
