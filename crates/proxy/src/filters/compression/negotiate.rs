//! `Accept-Encoding` (RFC 9110 §12.5.3): the client's weights, the server's order for ties.

use http::header::ACCEPT_ENCODING;
use http::HeaderMap;
use weft_config::Encoding;

/// The coding to use for this client among `offered` (server preference, best first),
/// or `None` for identity.
///
/// The highest q wins and ties go to the earlier entry in `offered`; `*` stands for
/// every coding not named; `q=0` refuses a coding. An element with a malformed
/// q-value is the client's mistake and is skipped (it neither grants nor refuses).
/// A request without `Accept-Encoding` gets identity, as Envoy does (RFC 9110 would
/// allow anything; clients that decode say so). Work is linear in the header's length.
pub fn negotiate(headers: &HeaderMap, offered: &[Encoding]) -> Option<Encoding> {
    // Weights in thousandths; None = not mentioned.
    let mut named: [Option<u16>; 3] = [None; 3];
    let mut star: Option<u16> = None;
    let mut any = false;
    for value in headers.get_all(ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        any = true;
        for element in value.split(',') {
            let mut parts = element.split(';');
            let coding = parts.next().unwrap_or("").trim();
            if coding.is_empty() {
                continue;
            }
            let Some(q) = weight(parts) else { continue };
            let slot = if coding == "*" {
                &mut star
            } else if let Some(e) = Encoding::from_token(coding) {
                &mut named[index(e)]
            } else {
                continue; // identity, deflate, …: nothing weft produces
            };
            // A coding listed twice keeps its highest weight.
            *slot = Some(slot.map_or(q, |old| old.max(q)));
        }
    }
    if !any {
        return None;
    }
    let mut best: Option<(Encoding, u16)> = None;
    for &e in offered {
        let q = named[index(e)].or(star).unwrap_or(0);
        if q > 0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((e, q));
        }
    }
    best.map(|(e, _)| e)
}

fn index(e: Encoding) -> usize {
    match e {
        Encoding::Gzip => 0,
        Encoding::Brotli => 1,
        Encoding::Zstd => 2,
    }
}

/// The element's q in thousandths (1000 when absent); `None` when malformed.
fn weight<'a>(params: impl Iterator<Item = &'a str>) -> Option<u16> {
    let mut q = 1000;
    for p in params {
        let p = p.trim();
        let Some((name, value)) = p.split_once('=') else {
            return if p.is_empty() { Some(q) } else { None };
        };
        if name.trim().eq_ignore_ascii_case("q") {
            q = parse_q(value.trim())?;
        }
    }
    Some(q)
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`.
fn parse_q(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use Encoding::*;

    const ALL: [Encoding; 3] = [Zstd, Brotli, Gzip];

    fn ae(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn q_values_and_ties() {
        let cases: &[(&[&str], &[Encoding], Option<Encoding>)] = &[
            (&[], &ALL, None),
            (&[""], &ALL, None),
            (&["identity"], &ALL, None),
            (&["gzip"], &ALL, Some(Gzip)),
            (&["gzip, br, zstd"], &ALL, Some(Zstd)),
            (&["gzip, br, zstd"], &[Gzip, Brotli], Some(Gzip)),
            (&["gzip;q=0.5, br;q=1.0"], &ALL, Some(Brotli)),
            (&["gzip;q=0.5, br;q=0.4"], &ALL, Some(Gzip)),
            (&["GZIP; Q=0.8"], &ALL, Some(Gzip)),
            (&["x-gzip"], &ALL, Some(Gzip)),
            (&["*"], &ALL, Some(Zstd)),
            (&["*;q=0"], &ALL, None),
            (&["gzip;q=0, *"], &[Gzip, Brotli], Some(Brotli)),
            (&["*;q=0, gzip"], &ALL, Some(Gzip)),
            (&["gzip;q=0,*;q=1"], &[Gzip], None),
            (&["br;q=0"], &ALL, None),
            (&["gzip;q=1.5, br"], &ALL, Some(Brotli)),
            (&["gzip;q=abc"], &ALL, None),
            (&["gzip;q=0.1234"], &ALL, None),
            (&["gzip;q=1.001"], &ALL, None),
            (&["gzip;q="], &ALL, None),
            (&["gzip;foo"], &ALL, None),
            (&["gzip;level=1;q=0.2, br;q=0.1"], &ALL, Some(Gzip)),
            (&["gzip;q=0.2", "br;q=0.3"], &ALL, Some(Brotli)),
            (&["gzip;q=0", "gzip;q=0.5"], &ALL, Some(Gzip)),
            (&[" , ,gzip , "], &ALL, Some(Gzip)),
            (&["deflate, compress"], &ALL, None),
        ];
        for (values, offered, want) in cases {
            assert_eq!(negotiate(&ae(values), offered), *want, "{values:?} offered {offered:?}");
        }
    }

    #[test]
    fn a_64k_header_is_linear() {
        let big = "foo;q=0.5, ".repeat(64 * 1024 / 11) + "gzip";
        let h = ae(&[&big]);
        let t = std::time::Instant::now();
        for _ in 0..10 {
            assert_eq!(negotiate(&h, &ALL), Some(Gzip));
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(2), "{:?}", t.elapsed());
        let commas = ",".repeat(64 * 1024);
        assert_eq!(negotiate(&ae(&[&commas]), &ALL), None);
    }
}
