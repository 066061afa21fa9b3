//! Cleartext HTTP/2 (prior knowledge) connections of the load generator, on hyper's client.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::h1::Answer;
use crate::record::ErrorKind;
use crate::target::{RequestSpec, Target};

/// The parts of every request, prepared once.
pub struct Template {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Template {
    pub fn new(spec: &RequestSpec, target: &Target) -> Result<Template, String> {
        let method = Method::from_bytes(spec.method.as_bytes()).map_err(|_| format!("invalid method {:?}", spec.method))?;
        let uri: Uri =
            format!("http://{}{}", spec.authority(target), target.path).parse().map_err(|e| format!("invalid request URI: {e}"))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &spec.headers {
            if name.eq_ignore_ascii_case("host") {
                continue;
            }
            let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("invalid header name {name:?}"))?;
            let value = http::HeaderValue::from_str(value).map_err(|_| format!("invalid value for header {name}"))?;
            headers.append(name, value);
        }
        Ok(Template { method, uri, headers, body: spec.body.clone() })
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

pub type Sender = SendRequest<Full<Bytes>>;

/// Opens a connection and starts its driver on the current task set.
pub async fn connect(addr: SocketAddr) -> Result<Sender, ErrorKind> {
    let stream = TcpStream::connect(addr).await.map_err(|_| ErrorKind::Connect)?;
    let _ = stream.set_nodelay(true);
    let (tx, conn) = http2::Builder::new(TokioExecutor::new()).handshake(TokioIo::new(stream)).await.map_err(|_| ErrorKind::Connect)?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(tx)
}

/// Sends one request on the connection and reads its response to the end.
pub async fn exchange(tx: &mut Sender, template: &Template) -> Result<Answer, ErrorKind> {
    tx.ready().await.map_err(|e| classify(&e))?;
    let resp = tx.send_request(template.request()).await.map_err(|e| classify(&e))?;
    let first_byte = Instant::now();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        frame.map_err(|e| classify(&e))?;
    }
    Ok(Answer { status, first_byte, reusable: true })
}

fn classify(e: &hyper::Error) -> ErrorKind {
    if e.is_parse() || e.is_user() {
        return ErrorKind::Protocol;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return ErrorKind::of_io(io);
        }
        source = s.source();
    }
    ErrorKind::Reset
}
