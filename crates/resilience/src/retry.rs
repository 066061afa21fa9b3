//! `retryOn`: which outcomes of an attempt are worth another (Envoy's conditions).

use std::fmt;

/// How one attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No connection could be made.
    ConnectFailure,
    /// The connection was reset or closed before a response.
    Reset,
    /// HTTP/2 REFUSED_STREAM: the server did not process the request.
    RefusedStream,
    /// The per-try timeout expired.
    Timeout,
    /// A response head arrived: its status and, for gRPC, its grpc-status.
    Response { status: u16, grpc: Option<u8> },
}

/// The set of retriable conditions of a route.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetryOn {
    bits: u16,
    /// `retriable-status-codes` (and bare numbers in the list).
    pub codes: Vec<u16>,
}

const FIVE_XX: u16 = 1;
const GATEWAY_ERROR: u16 = 1 << 1;
const RESET: u16 = 1 << 2;
const CONNECT_FAILURE: u16 = 1 << 3;
const REFUSED_STREAM: u16 = 1 << 4;
const RETRIABLE_4XX: u16 = 1 << 5;
const CANCELLED: u16 = 1 << 6;
const DEADLINE_EXCEEDED: u16 = 1 << 7;
const RESOURCE_EXHAUSTED: u16 = 1 << 8;
const UNAVAILABLE: u16 = 1 << 9;

const NAMES: [(&str, u16); 11] = [
    ("5xx", FIVE_XX),
    ("gateway-error", GATEWAY_ERROR),
    ("reset", RESET),
    ("connect-failure", CONNECT_FAILURE),
    ("refused-stream", REFUSED_STREAM),
    ("retriable-4xx", RETRIABLE_4XX),
    ("retriable-status-codes", 0),
    ("cancelled", CANCELLED),
    ("deadline-exceeded", DEADLINE_EXCEEDED),
    ("resource-exhausted", RESOURCE_EXHAUSTED),
    ("unavailable", UNAVAILABLE),
];

/// An unknown `retryOn` entry.
#[derive(Debug, PartialEq, Eq)]
pub struct RetryOnError(pub String);

impl fmt::Display for RetryOnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
        write!(f, "unknown retry condition {:?} (expected a status code or one of {})", self.0, known.join(", "))
    }
}

impl RetryOn {
    /// Istio's default when a route sets no `retryOn`.
    pub fn istio_default() -> RetryOn {
        RetryOn { bits: CONNECT_FAILURE | REFUSED_STREAM | UNAVAILABLE | CANCELLED, codes: Vec::new() }
    }

    /// Parses Istio's comma-separated list; numbers are retriable status codes.
    pub fn parse(s: &str) -> Result<RetryOn, RetryOnError> {
        let mut on = RetryOn::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if let Ok(code) = item.parse::<u16>() {
                if !(100..=599).contains(&code) {
                    return Err(RetryOnError(item.to_string()));
                }
                on.codes.push(code);
                continue;
            }
            let bit = NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(item)).map(|(_, b)| *b);
            on.bits |= bit.ok_or_else(|| RetryOnError(item.to_string()))?;
        }
        Ok(on)
    }

    /// Whether this outcome of an attempt should be retried.
    pub fn retries(&self, outcome: Outcome) -> bool {
        let has = |b: u16| self.bits & b != 0;
        match outcome {
            Outcome::ConnectFailure => has(CONNECT_FAILURE | FIVE_XX | GATEWAY_ERROR | RESET),
            Outcome::Reset => has(RESET | FIVE_XX),
            Outcome::RefusedStream => has(REFUSED_STREAM | RESET | FIVE_XX),
            // A per-try timeout counts as the gateway's 504.
            Outcome::Timeout => has(FIVE_XX | GATEWAY_ERROR | RESET),
            Outcome::Response { status, grpc } => {
                (status >= 500 && has(FIVE_XX))
                    || (matches!(status, 502..=504) && has(GATEWAY_ERROR))
                    || (status == 409 && has(RETRIABLE_4XX))
                    || self.codes.contains(&status)
                    || match grpc {
                        Some(1) => has(CANCELLED),
                        Some(4) => has(DEADLINE_EXCEEDED),
                        Some(8) => has(RESOURCE_EXHAUSTED),
                        Some(14) => has(UNAVAILABLE),
                        _ => false,
                    }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16) -> Outcome {
        Outcome::Response { status, grpc: None }
    }

    #[test]
    fn conditions() {
        let on = RetryOn::parse("5xx").unwrap();
        assert!(on.retries(resp(500)) && on.retries(resp(503)) && !on.retries(resp(404)) && !on.retries(resp(200)));
        assert!(on.retries(Outcome::ConnectFailure) && on.retries(Outcome::Reset) && on.retries(Outcome::Timeout));
        let gw = RetryOn::parse("gateway-error").unwrap();
        assert!(gw.retries(resp(502)) && gw.retries(resp(504)) && !gw.retries(resp(500)) && !gw.retries(Outcome::Reset));
        let cf = RetryOn::parse("connect-failure").unwrap();
        assert!(cf.retries(Outcome::ConnectFailure) && !cf.retries(Outcome::Reset) && !cf.retries(resp(503)));
        let codes = RetryOn::parse("retriable-status-codes, 429,503").unwrap();
        assert!(codes.retries(resp(429)) && codes.retries(resp(503)) && !codes.retries(resp(500)));
        assert!(RetryOn::parse("retriable-4xx").unwrap().retries(resp(409)));
        let grpc = RetryOn::parse("unavailable,cancelled").unwrap();
        assert!(grpc.retries(Outcome::Response { status: 200, grpc: Some(14) }));
        assert!(!grpc.retries(Outcome::Response { status: 200, grpc: Some(5) }));
        let d = RetryOn::istio_default();
        assert!(d.retries(Outcome::ConnectFailure) && d.retries(Outcome::RefusedStream) && !d.retries(resp(503)));
    }

    #[test]
    fn unknown_conditions_are_named() {
        let e = RetryOn::parse("5xx,connect-faliure").unwrap_err();
        assert!(e.to_string().starts_with("unknown retry condition \"connect-faliure\" (expected a status code or one of 5xx,"), "{e}");
        assert!(RetryOn::parse("700").is_err());
    }
}
