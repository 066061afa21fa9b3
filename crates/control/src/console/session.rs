//! Who is using the console. The API's tokens, as the API checks them: a browser
//! cannot send `Authorization`, so `/ui/login` takes a token once and keeps it in a
//! cookie (`HttpOnly`: no script reads it; `SameSite=Strict`: no other site's page
//! sends it; `Path=/ui`: the API never accepts it; `Secure` over HTTPS). A change (the
//! rollback button, logging in and out) must also come from a console page: its
//! `Origin` (or, without one, its `Referer`) must name the host it was sent to.

use http::{header, HeaderMap, HeaderValue};

use crate::api::Server;
use crate::auth::{Principal, Refused};

/// The cookie that holds the token.
pub const COOKIE: &str = "weft_console";

/// The caller: the token in the console's cookie (or an `Authorization` header),
/// checked like the API's; everyone under `--insecure`.
pub fn who(server: &Server, headers: &HeaderMap) -> Result<Principal, Refused> {
    let Some(auth) = &server.auth else { return Ok(Principal::Anonymous("console".into())) };
    match cookie_token(headers) {
        Some(token) => auth.verify(token, crate::auth::now_s()),
        None => auth.authenticate(headers.get(header::AUTHORIZATION), crate::auth::now_s()),
    }
}

/// The token in the console's cookie, if the request carries one.
fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// The `Set-Cookie` that keeps `token` for the console's pages (empty: logs out).
pub fn set_cookie(token: &str, secure: bool) -> Option<HeaderValue> {
    // (A token is base64url and dots: nothing in it can end the cookie.)
    if !token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return None;
    }
    let age = if token.is_empty() { "; Max-Age=0" } else { "" };
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict{secure}{age}")).ok()
}

/// Whether a state-changing request comes from a page of this console: its `Origin`
/// (else `Referer`) names the same host and port as its `Host`.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let text = |h| headers.get(h).and_then(|v: &HeaderValue| v.to_str().ok());
    let Some(host) = text(header::HOST) else { return false };
    let from = text(header::ORIGIN).filter(|o| *o != "null").or_else(|| text(header::REFERER));
    from.and_then(authority).is_some_and(|a| a.eq_ignore_ascii_case(host))
}

/// `host[:port]` of an `http(s)://` URL or origin.
fn authority(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    Some(rest.split(['/', '?', '#']).next().unwrap_or(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn changes_must_come_from_the_console_itself() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:15010"), ("origin", "https://127.0.0.1:15010")])));
        assert!(same_origin(&headers(&[("host", "cp:15010"), ("referer", "https://cp:15010/ui/history?rev=3")])));
        assert!(!same_origin(&headers(&[("host", "cp:15010"), ("origin", "https://evil.example")])));
        assert!(!same_origin(&headers(&[("host", "cp:15010"), ("origin", "https://cp:15010.evil.example")])));
        assert!(!same_origin(&headers(&[("host", "cp:15010"), ("origin", "null")])));
        assert!(!same_origin(&headers(&[("host", "cp:15010")])), "neither Origin nor Referer");
    }

    #[test]
    fn the_token_cookie_is_found_among_others_and_kept_from_scripts() {
        let h = headers(&[("cookie", "a=b; weft_console=weft1.x.y"), ("cookie", "c=d")]);
        assert_eq!(cookie_token(&h), Some("weft1.x.y"));
        assert_eq!(cookie_token(&headers(&[("cookie", "weft_console=")])), None);
        let c = set_cookie("weft1.abc.def", true).unwrap();
        assert_eq!(c, "weft_console=weft1.abc.def; Path=/ui; HttpOnly; SameSite=Strict; Secure");
        assert!(set_cookie("x; Domain=evil", false).is_none());
        assert!(set_cookie("", false).unwrap().to_str().unwrap().ends_with("Max-Age=0"));
    }
}
