//! The console's HTML: escaping (every string shown comes from users: names, labels,
//! NACK reasons), the page frame, and the answers (pages, redirects) with headers that
//! keep the pages from being framed, cached or running scripts.

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};

use crate::api::{reply, Resp};

/// `s` safe as HTML text and as a quoted attribute value.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}nav a{margin-right:1.2em}\
table{border-collapse:collapse;margin:.8em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}.bad{color:#b00}.ok{color:#070}pre{background:#f7f7f7;padding:.5em;overflow:auto}\
.del{background:#fdd}.add{background:#dfd}svg text{font-size:12px}.muted{color:#777}";

/// A whole page: the navigation, `title` and `body` (already HTML).
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>weft · {t}</title><style>{STYLE}</style></head><body>\
<nav><b>weft</b> · <a href=\"/ui\">mesh</a><a href=\"/ui/services\">services</a><a href=\"/ui/proxies\">proxies</a>\
<a href=\"/ui/history\">history</a><a href=\"/ui/login\">login</a></nav><h1>{t}</h1>{body}</body></html>\n",
        t = esc(title)
    )
}

/// An HTML answer with the console's headers.
pub fn html(status: StatusCode, text: String) -> Resp {
    let mut r = reply(status, "text/html; charset=utf-8", Bytes::from(text));
    let h = r.headers_mut();
    // No scripts at all, nothing from elsewhere, never inside another site's frame.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    r
}

/// A page saying what went wrong.
pub fn problem(status: StatusCode, title: &str, message: &str) -> Resp {
    html(status, page(title, &format!("<p class=\"bad\">{}</p>", esc(message))))
}

/// `303 See Other` to `location` (a path of the console).
pub fn redirect(location: &str) -> Resp {
    let mut r = html(StatusCode::SEE_OTHER, page("moved", &format!("<a href=\"{0}\">{0}</a>", esc(location))));
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Unix ms as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_become_markup() {
        assert_eq!(esc("<script>alert('x')</script> & \"q\""), "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;");
        assert_eq!(esc("a\u{0}b"), "a\u{fffd}b");
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_709_210_096_000), "2024-02-29 12:34:56");
        assert_eq!(utc(1_798_675_200_000), "2026-12-31 00:00:00");
    }
}
