//! The tracing flags the proxy, the gateway and the control plane share, and the
//! standard OpenTelemetry variables they fall back on.

use weft_telemetry::trace::Protocol;

#[derive(clap::Args, Clone)]
pub struct TracingArgs {
    /// Export spans to this OTLP collector, e.g. http://127.0.0.1:4318/v1/traces
    /// (http/protobuf) or http://127.0.0.1:4317 (grpc); default
    /// $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or $OTEL_EXPORTER_OTLP_ENDPOINT (+ /v1/traces
    /// for http/protobuf). Without it no spans are made.
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
    /// How spans travel: http/protobuf or grpc; default
    /// $OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, $OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf.
    #[arg(long)]
    pub otlp_protocol: Option<String>,
    /// Percent (0-100) of the traces started here that are sampled (a caller's
    /// decision, in traceparent or B3, is followed; a Telemetry resource's
    /// randomSamplingPercentage overrides it for the proxies it selects). Istio's default: 1.
    #[arg(long, default_value_t = 1.0, value_parser = parse_percent)]
    pub trace_sampling: f64,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a percentage 0-100")),
    }
}

impl TracingArgs {
    /// The collector and its protocol: the flags, else the OpenTelemetry variables;
    /// none when no endpoint is set. A protocol other than the two spoken is an error.
    pub fn resolve(&self) -> Result<Option<(String, Protocol)>, String> {
        self.resolve_with(|k| std::env::var(k).ok())
    }

    fn resolve_with(&self, var: impl Fn(&str) -> Option<String>) -> Result<Option<(String, Protocol)>, String> {
        let env = |k: &str| var(k).filter(|v| !v.is_empty());
        let protocol = match self
            .otlp_protocol
            .clone()
            .or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
            .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
        {
            Some(p) => p.parse::<Protocol>()?,
            None => Protocol::HttpProtobuf,
        };
        // The general endpoint is the collector's base: http/protobuf adds the traces path.
        let general = |e: String| match protocol {
            Protocol::HttpProtobuf => format!("{}/v1/traces", e.trim_end_matches('/')),
            Protocol::Grpc => e,
        };
        let endpoint = self
            .otlp_endpoint
            .clone()
            .or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
            .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT").map(general));
        Ok(endpoint.map(|e| (e, protocol)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(endpoint: Option<&str>, protocol: Option<&str>) -> TracingArgs {
        TracingArgs { otlp_endpoint: endpoint.map(Into::into), otlp_protocol: protocol.map(Into::into), trace_sampling: 1.0 }
    }

    #[test]
    fn flags_then_variables() {
        let none = |_: &str| None;
        assert_eq!(args(None, None).resolve_with(none), Ok(None));
        let got = args(Some("http://c:4318/v1/traces"), None).resolve_with(none).unwrap();
        assert_eq!(got, Some(("http://c:4318/v1/traces".into(), Protocol::HttpProtobuf)));
        let vars = |k: &str| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://c:4318/".into()),
            "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("grpc".into()),
            _ => None,
        };
        assert_eq!(args(None, None).resolve_with(vars).unwrap(), Some(("http://c:4318/".into(), Protocol::Grpc)));
        let got = args(None, Some("http/protobuf")).resolve_with(vars).unwrap();
        assert_eq!(got, Some(("http://c:4318/v1/traces".into(), Protocol::HttpProtobuf)), "the flag wins");
        assert!(args(Some("http://c"), Some("http/json")).resolve_with(none).is_err());
    }
}
