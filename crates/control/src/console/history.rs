//! `/ui/history`: the store's revisions, newest first, each with a button that rolls
//! the config back to it (`POST /ui/rollback`, the same rollback as `POST
//! /v1/rollback`); `?rev=N` adds what revision N changed, each object as a line diff
//! of its JSON before and after.

use std::fmt::Write;

use http::StatusCode;

use super::diff::{self, Line};
use super::html::{esc, html, page, problem, utc};
use crate::api::{Resp, Server};
use crate::store::{Change, Revision};

/// Revisions listed at most (the newest).
pub const LISTED: usize = 200;

/// The history page; `rev`: the revision whose changes are shown.
pub async fn show(server: &Server, rev: Option<u64>) -> Resp {
    let p = server.plane.lock().await;
    let latest = p.revision();
    let revisions = match p.store().history().await {
        Ok(r) => r,
        Err(e) => return problem(StatusCode::INTERNAL_SERVER_ERROR, "history", &e.to_string()),
    };
    drop(p);
    let mut body = format!("<p>Latest revision: <b id=\"latest\">{latest}</b></p>");
    if let Some(r) = rev.and_then(|n| revisions.iter().find(|r| r.revision == n)) {
        body += &changes(r);
    }
    body += &list(&revisions, latest);
    html(StatusCode::OK, page("history", &body))
}

/// The revisions, newest first, with their rollback buttons.
fn list(revisions: &[Revision], latest: u64) -> String {
    let mut t = String::from(
        "<table id=\"revisions\"><tr><th>revision</th><th>when (UTC)</th><th>by</th><th>action</th><th>changes</th><th></th></tr>",
    );
    for r in revisions.iter().rev().take(LISTED) {
        let button = if r.revision == latest {
            "current".to_owned()
        } else {
            format!(
                "<form method=\"post\" action=\"/ui/rollback\"><input type=\"hidden\" name=\"to\" value=\"{n}\">\
<button type=\"submit\" class=\"rollback\" id=\"rollback-{n}\">roll back to {n}</button></form>",
                n = r.revision
            )
        };
        let _ = write!(
            t,
            "<tr class=\"revision\" id=\"revision-{n}\"><td><a href=\"/ui/history?rev={n}\">{n}</a></td><td>{}</td><td>{}</td><td class=\"action\">{}</td><td>{}</td><td>{button}</td></tr>",
            utc(r.at_ms),
            esc(&r.client),
            esc(&r.action),
            r.changes.len(),
            n = r.revision,
        );
    }
    t + "</table>"
}

/// What one revision changed, object by object.
fn changes(r: &Revision) -> String {
    let mut out = format!("<h2 id=\"diff\">Revision {} — {} by {}</h2>", r.revision, esc(&r.action), esc(&r.client));
    for c in &r.changes {
        let _ = write!(out, "<h3>{}</h3><pre class=\"change\">{}</pre>", esc(&c.key), change_diff(c));
    }
    out
}

/// One object's JSON before and after, as diff lines (HTML).
fn change_diff(c: &Change) -> String {
    let pretty = |v: &Option<serde_json::Value>| v.as_ref().and_then(|v| serde_json::to_string_pretty(v).ok()).unwrap_or_default();
    let (before, after) = (pretty(&c.before), pretty(&c.after));
    let mut out = String::new();
    for l in diff::lines(&before, &after) {
        let _ = match l {
            Line::Same(s) => writeln!(out, "  {}", esc(s)),
            Line::Removed(s) => writeln!(out, "<span class=\"del\">- {}</span>", esc(s)),
            Line::Added(s) => writeln!(out, "<span class=\"add\">+ {}</span>", esc(s)),
        };
    }
    out
}
