//! The web console at `/ui`, served by the control plane itself: server-rendered HTML
//! (no scripts), every string escaped. Pages: the mesh graph with each edge's request
//! rate, error share and p99 from the proxies' traffic reports ([`gather`]); the
//! services' endpoints; the proxies' acknowledged revisions and NACKs; the revision
//! history with diffs and a rollback button.
//!
//! Access is the API's: with tokens, `/ui/login` takes one (checked like the API's)
//! into an `HttpOnly`, `SameSite=Strict` cookie good for `/ui` only ([`session`]);
//! pages need the read role, the rollback what `POST /v1/rollback` needs; changes must
//! come from the console's own pages (Origin/Host). Under `--insecure`, open.

mod diff;
pub mod gather;
mod graph;
mod history;
mod html;
mod pages;
mod session;
pub mod stats;

pub use gather::Reports;

use http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use weft_api::query;

use crate::api::{Resp, Server};
use crate::auth::{Need, Principal, Refused};
use html::{esc, html, page, problem, redirect};

/// The largest form accepted (a token is at most 2 KiB).
const MAX_FORM: usize = 16 << 10;

/// Whether `path` is the console's.
pub fn is_console(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// Who a console request comes from (the cookie's token, or an `Authorization` header),
/// or why not (`NoToken`: it carries neither).
pub fn caller(server: &Server, headers: &HeaderMap) -> Result<Principal, Refused> {
    session::who(server, headers)
}

/// One request to the console.
pub async fn handle(server: &Server, req: Request<Incoming>) -> Resp {
    let (parts, body) = req.into_parts();
    let (method, path, q) = (parts.method.clone(), parts.uri.path().to_owned(), parts.uri.query().unwrap_or("").to_owned());
    match (&method, path.as_str()) {
        (&Method::GET, "/ui/login") => return login_page(server, ""),
        (&Method::POST, "/ui/login") => return login(server, &parts.headers, &read_form(body).await).await,
        (&Method::POST, "/ui/logout") => return logout(server, &parts.headers),
        _ => {}
    }
    let who = match session::who(server, &parts.headers) {
        Ok(who) => who,
        Err(Refused::NoToken) if method == Method::GET => return login_page(server, "Log in to see this page."),
        Err(e) if method == Method::GET => return login_page(server, &e.to_string()),
        Err(e) => return problem(StatusCode::UNAUTHORIZED, "not logged in", &e.to_string()),
    };
    let need = if method == Method::GET { Need::Role(weft_api::Role::Read) } else { crate::auth::need(&Method::POST, "/v1/rollback") };
    if let Err(e) = crate::auth::allow(&who, need, None) {
        tracing::warn!("console: refused {method} {}: {e}", weft_api::truncate(&path, 128));
        return problem(StatusCode::FORBIDDEN, "forbidden", &e.to_string());
    }
    match (&method, path.as_str()) {
        (&Method::GET, "/ui" | "/ui/") => pages::mesh(server).await,
        (&Method::GET, "/ui/services") => pages::services(server).await,
        (&Method::GET, "/ui/proxies") => pages::proxies(server).await,
        (&Method::GET, "/ui/history") => history::show(server, query::get(&q, "rev").and_then(|r| r.parse().ok())).await,
        (&Method::POST, "/ui/rollback") => rollback(server, &who, &parts.headers, &read_form(body).await).await,
        _ => problem(StatusCode::NOT_FOUND, "not found", &format!("no console page {method} {}", weft_api::truncate(&path, 128))),
    }
}

/// A form body (`application/x-www-form-urlencoded`), at most [`MAX_FORM`] bytes;
/// empty when larger or broken off.
async fn read_form(body: Incoming) -> String {
    match Limited::new(body, MAX_FORM).collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(_) => String::new(),
    }
}

fn login_page(server: &Server, why: &str) -> Resp {
    let intro = match &server.auth {
        None => "<p>This control plane runs <code>--insecure</code>: the console is open, no token is needed.</p>",
        Some(_) => "<p>Paste a token (<code>weft token create --role read</code>, or <code>write</code> to roll back). It is kept in a cookie for the console only.</p>",
    };
    let why = if why.is_empty() { String::new() } else { format!("<p class=\"bad\">{}</p>", esc(why)) };
    let body = format!(
        "{intro}{why}<form method=\"post\" action=\"/ui/login\"><input type=\"password\" name=\"token\" id=\"token\" size=\"60\" autocomplete=\"off\">\
<button type=\"submit\" id=\"login\">log in</button></form><form method=\"post\" action=\"/ui/logout\"><button type=\"submit\" id=\"logout\">log out</button></form>"
    );
    html(if why.is_empty() { StatusCode::OK } else { StatusCode::UNAUTHORIZED }, page("login", &body))
}

/// Checks the token like the API does, then keeps it in the console's cookie.
async fn login(server: &Server, headers: &HeaderMap, form: &str) -> Resp {
    if !session::same_origin(headers) {
        return problem(StatusCode::FORBIDDEN, "login", "refused: the form was not sent from this console (Origin does not match Host)");
    }
    let Some(auth) = &server.auth else { return redirect("/ui") };
    let token = query::get(form, "token").unwrap_or_default();
    let token = token.trim();
    let who = auth.verify(token, crate::auth::now_s());
    match who.and_then(|w| crate::auth::allow(&w, Need::Role(weft_api::Role::Read), None).map(|_| w)) {
        Ok(who) => match session::set_cookie(token, server.ca.is_some()) {
            Some(cookie) => {
                tracing::info!("console: {} logged in", who.name());
                let mut r = redirect("/ui");
                r.headers_mut().insert(header::SET_COOKIE, cookie);
                r
            }
            None => login_page(server, "invalid token: malformed"),
        },
        Err(e @ Refused::Forbidden(_)) => problem(StatusCode::FORBIDDEN, "login", &e.to_string()),
        Err(e) => login_page(server, &e.to_string()),
    }
}

fn logout(server: &Server, headers: &HeaderMap) -> Resp {
    if !session::same_origin(headers) {
        return problem(StatusCode::FORBIDDEN, "logout", "refused: the form was not sent from this console");
    }
    let mut r = redirect("/ui/login");
    if let Some(c) = session::set_cookie("", server.ca.is_some()) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

/// The rollback button: `POST /v1/rollback`'s rollback, then the history page at the
/// revision it made.
async fn rollback(server: &Server, who: &Principal, headers: &HeaderMap, form: &str) -> Resp {
    if !session::same_origin(headers) {
        return problem(
            StatusCode::FORBIDDEN,
            "rollback",
            "refused: the request did not come from this console (Origin does not match Host)",
        );
    }
    let Some(to) = query::get(form, "to").and_then(|t| t.parse::<u64>().ok()) else {
        return problem(StatusCode::BAD_REQUEST, "rollback", "to=REVISION is required");
    };
    let (r, current) = server.rollback(&who.name(), to).await;
    match r {
        Ok(rev) => {
            let made = rev.as_ref().map_or(current, |r| r.revision);
            server.finish(Ok(rev), current);
            redirect(&format!("/ui/history?rev={made}"))
        }
        Err(e) => {
            let message = e.to_string();
            let status = server.finish(Err(e), current).status();
            problem(status, "rollback", &message)
        }
    }
}

#[cfg(test)]
mod tests;
