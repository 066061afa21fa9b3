//! Telemetry compiled: each resource's tracing rules checked as Istio's validation
//! does, then resolved for one proxy by Istio's precedence — the mesh's (root
//! namespace, no selector), then its namespace's (no selector), then one selecting its
//! workload; each level overrides only the fields it sets, custom tags merge by name.
//! The result is per side: the outbound (client) spans and the inbound (server) spans.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::compile::{Ctx, View};
use crate::istio::{CustomTag, Telemetry, WorkloadMode};
use crate::load::Resource;
use crate::mtls::ROOT_NAMESPACE;

/// The most custom tags one Telemetry may set, all its rules together (a span carries at
/// most three levels' worth: mesh, namespace, workload).
const MAX_TAGS: usize = 64;
/// The most tracing rules one Telemetry may have.
const MAX_RULES: usize = 8;
/// The longest tag name, literal value, variable or header name.
const MAX_TAG_TEXT: usize = 1024;
/// The attributes weft sets itself: a custom tag may not take their names (a span with
/// two `http.status_code`s, one of the client's choosing, would be a lie).
const RESERVED: [&str; 15] = [
    "http.method",
    "http.url",
    "http.status_code",
    "upstream_cluster",
    "upstream_address",
    "response_flags",
    "node_id",
    "component",
    "istio.namespace",
    "guid:x-request-id",
    "peer.service",
    "peer.address",
    "peer.principal",
    "retry.attempt",
    "hedge",
];

/// One Telemetry's tracing, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryPolicy {
    pub name: String,
    pub namespace: String,
    /// None: the whole namespace (or mesh).
    pub selector: Option<BTreeMap<String, String>>,
    pub rules: Vec<(WorkloadMode, TracingRule)>,
}

/// What one rule sets (unset fields are inherited from the wider scope).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TracingRule {
    pub sampling: Option<f64>,
    pub disable_reporting: Option<bool>,
    pub tags: Vec<(String, Tag)>,
}

/// A custom tag's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tag {
    /// (Shared: every span carries the same value without a copy.)
    Literal(Arc<str>),
    /// The proxy's environment variable, or the default when unset.
    Environment { name: String, default: String },
    /// The request header (its first value), or the default when absent.
    Header { name: http::HeaderName, default: String },
}

/// What one side of a proxy's spans follow (from the Telemetry resources that apply to it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tracing {
    /// Percent of new traces sampled; None: the proxy's `--trace-sampling`.
    pub sampling: Option<f64>,
    /// Spans are not reported (the trace context still goes upstream).
    pub disable_reporting: bool,
    pub tags: Vec<(String, Tag)>,
}

/// A proxy's tracing by side: outbound (client spans), inbound (server spans). None
/// when no Telemetry applies (the flags say everything).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyTracing {
    pub outbound: Option<Arc<Tracing>>,
    pub inbound: Option<Arc<Tracing>>,
}

/// Checks one Telemetry; None (with errors) when invalid.
pub(crate) fn compile(r: &Resource, t: &Telemetry, ctx: &mut Ctx) -> Option<TelemetryPolicy> {
    let mut ok = true;
    if t.selector.is_some() && (t.target_ref.is_some() || t.target_refs.is_some()) {
        ctx.err(r, "spec.selector", "only one of selector, targetRef or targetRefs may be set");
        ok = false;
    } else if t.target_ref.is_some() || t.target_refs.is_some() {
        ctx.warn(r, "spec.targetRefs", "Gateway API targets are not served by weft; this Telemetry applies to no proxy");
        return None;
    }
    let selector = t.selector.as_ref().map(|s| {
        for (k, e) in crate::rules::labels(&s.match_labels) {
            ctx.err(r, format!("spec.selector.matchLabels[{k}]"), e);
            ok = false;
        }
        s.match_labels.clone()
    });
    if t.metrics.is_some() {
        ctx.warn(r, "spec.metrics", "not applied: weft's metrics are Istio's standard ones, always on");
    }
    if t.access_logging.is_some() {
        ctx.warn(r, "spec.accessLogging", "not applied: weft's access log is `weft proxy --access-log`");
    }
    if t.tracing.len() > MAX_RULES {
        ctx.err(r, "spec.tracing", format!("at most {MAX_RULES} tracing rules"));
        return None;
    }
    let total: usize = t.tracing.iter().map(|s| s.custom_tags.len()).sum();
    if total > MAX_TAGS {
        ctx.err(r, "spec.tracing", format!("at most {MAX_TAGS} custom tags in all ({total} here)"));
        return None;
    }
    let mut rules = Vec::new();
    for (i, spec) in t.tracing.iter().enumerate() {
        let at = format!("spec.tracing[{i}]");
        if spec.providers.len() > 1 {
            ctx.err(r, format!("{at}.providers"), "at most one provider (Istio's rule)");
            ok = false;
        }
        if let Some(p) = spec.random_sampling_percentage {
            if !(0.0..=100.0).contains(&p) {
                ctx.err(r, format!("{at}.randomSamplingPercentage"), "must be in the range 0 to 100");
                ok = false;
            }
        }
        if spec.use_request_id_for_trace_sampling == Some(false) {
            ctx.warn(r, format!("{at}.useRequestIdForTraceSampling"), "not applied: weft decides at random either way");
        }
        let mut tags = Vec::new();
        for (name, tag) in &spec.custom_tags {
            match custom_tag(name, tag) {
                Ok(t) => tags.push((name.clone(), t)),
                Err(e) => {
                    ctx.err(r, format!("{at}.customTags[{}]", crate::rules::shown(name)), e);
                    ok = false;
                }
            }
        }
        let mode = spec.match_.as_ref().map(|m| m.mode).unwrap_or_default();
        let rule = TracingRule { sampling: spec.random_sampling_percentage, disable_reporting: spec.disable_span_reporting, tags };
        rules.push((mode, rule));
    }
    let namespace = crate::names::namespace_of(r).to_owned();
    ok.then(|| TelemetryPolicy { name: r.metadata.name.clone(), namespace, selector, rules })
}

fn custom_tag(name: &str, tag: &CustomTag) -> Result<Tag, String> {
    let long = |s: &str| s.len() > MAX_TAG_TEXT;
    if name.is_empty() || long(name) || name.chars().any(char::is_control) {
        return Err(format!("a tag name is 1 to {MAX_TAG_TEXT} characters, none of them control characters"));
    }
    if RESERVED.contains(&name) {
        return Err(format!("{name} is an attribute weft sets itself"));
    }
    // The proxy's own credentials live in WEFT_* variables: never exported as a tag.
    if tag.environment.as_ref().is_some_and(|e| e.name.starts_with("WEFT_")) {
        return Err("WEFT_* variables (the proxy's own settings and credentials) cannot be tags".into());
    }
    match (&tag.literal, &tag.environment, &tag.header) {
        (Some(l), None, None) if !long(&l.value) => Ok(Tag::Literal(l.value.as_str().into())),
        (None, Some(e), None) if !e.name.is_empty() && !long(&e.name) && !long(&e.default_value) => {
            Ok(Tag::Environment { name: e.name.clone(), default: e.default_value.clone() })
        }
        (None, None, Some(h)) if !long(&h.default_value) => match http::HeaderName::from_bytes(h.name.as_bytes()) {
            Ok(name) => Ok(Tag::Header { name, default: h.default_value.clone() }),
            Err(_) => Err(format!("header {:?} is not a header name", crate::rules::shown(&h.name))),
        },
        (None, None, None) => Err("one of literal, environment or header".into()),
        (l, e, h) if [l.is_some(), e.is_some(), h.is_some()].iter().filter(|x| **x).count() > 1 => {
            Err("only one of literal, environment or header".into())
        }
        _ => Err(format!("names and values are at most {MAX_TAG_TEXT} bytes; environment needs a name")),
    }
}

/// The tracing of a proxy in `view`'s namespace with `view`'s labels, by Istio's precedence.
pub fn resolve(policies: &[TelemetryPolicy], view: &View) -> ProxyTracing {
    let ns = view.namespace.as_str();
    let selects = |p: &TelemetryPolicy| {
        p.selector.as_ref().is_some_and(|s| view.labels.as_ref().is_some_and(|l| s.iter().all(|(k, v)| l.get(k) == Some(v))))
    };
    // (Several at one scope: the first by name, so that every proxy picks the same.)
    let pick = |f: &dyn Fn(&TelemetryPolicy) -> bool| policies.iter().filter(|p| f(p)).min_by(|a, b| a.name.cmp(&b.name));
    let levels = [
        pick(&|p| p.namespace == ROOT_NAMESPACE && p.selector.is_none()),
        pick(&|p| p.namespace == ns && p.selector.is_none() && ns != ROOT_NAMESPACE),
        pick(&|p| p.namespace == ns && selects(p)),
    ];
    let side = |client: bool| {
        let mut out: Option<Tracing> = None;
        for p in levels.iter().flatten() {
            for (mode, rule) in &p.rules {
                let applies = match mode {
                    WorkloadMode::ClientAndServer => true,
                    WorkloadMode::Client => client,
                    WorkloadMode::Server => !client,
                };
                if applies {
                    merge(out.get_or_insert_with(Tracing::default), rule);
                }
            }
        }
        out.map(Arc::new)
    };
    ProxyTracing { outbound: side(true), inbound: side(false) }
}

fn merge(into: &mut Tracing, rule: &TracingRule) {
    if let Some(s) = rule.sampling {
        into.sampling = Some(s);
    }
    if let Some(d) = rule.disable_reporting {
        into.disable_reporting = d;
    }
    for (name, tag) in &rule.tags {
        match into.tags.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = tag.clone(),
            None => into.tags.push((name.clone(), tag.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(name: &str, ns: &str, spec: &str) -> String {
        format!("---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}")
    }

    fn tracing_in(text: &str, ns: &str, labels: &[(&str, &str)]) -> (ProxyTracing, Vec<String>) {
        let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (_, snap, diags) = crate::build_str_in("t.yaml", text, &View::proxy(ns).with_labels(labels));
        (snap.tracing, diags.errors.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn mesh_then_namespace_then_workload_field_by_field() {
        let mesh = doc(
            "mesh",
            ROOT_NAMESPACE,
            "  tracing:\n  - randomSamplingPercentage: 10\n    customTags: {a: {literal: {value: mesh}}, b: {literal: {value: mesh}}}\n",
        );
        let ns = doc("ns", "shop", "  tracing:\n  - customTags: {b: {literal: {value: ns}}}\n");
        let wl = doc(
            "wl",
            "shop",
            "  selector: {matchLabels: {app: cart}}\n  tracing:\n  - match: {mode: SERVER}\n    randomSamplingPercentage: 50\n    disableSpanReporting: true\n",
        );
        let all = format!("{mesh}{ns}{wl}");
        let (t, errs) = tracing_in(&all, "shop", &[("app", "cart")]);
        assert!(errs.is_empty(), "{errs:?}");
        let out = t.outbound.expect("the client side");
        assert_eq!(out.sampling, Some(10.0), "the workload's rule is for the server side only");
        assert!(!out.disable_reporting);
        let tag = |t: &Tracing, n: &str| t.tags.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(tag(&out, "a"), Some(Tag::Literal("mesh".into())));
        assert_eq!(tag(&out, "b"), Some(Tag::Literal("ns".into())), "the namespace's tag over the mesh's");
        let inb = t.inbound.expect("the server side");
        assert_eq!((inb.sampling, inb.disable_reporting), (Some(50.0), true));
        assert_eq!(tag(&inb, "b"), Some(Tag::Literal("ns".into())), "merged, not replaced");
        // Another workload of the namespace, another namespace, no Telemetry at all.
        let (t, _) = tracing_in(&all, "shop", &[("app", "web")]);
        assert_eq!(t.inbound.unwrap().sampling, Some(10.0));
        let (t, _) = tracing_in(&all, "other", &[("app", "cart")]);
        assert_eq!(tag(t.outbound.as_deref().unwrap(), "b"), Some(Tag::Literal("mesh".into())));
        assert_eq!(tracing_in("", "shop", &[]).0, ProxyTracing::default());
        // A selector in the root namespace is a workload policy there, not the mesh's.
        let root_wl = doc("x", ROOT_NAMESPACE, "  selector: {matchLabels: {app: cart}}\n  tracing:\n  - randomSamplingPercentage: 1\n");
        assert_eq!(tracing_in(&root_wl, "shop", &[("app", "cart")]).0, ProxyTracing::default());
    }

    #[test]
    fn hostile_and_invalid_telemetry_is_refused_by_field() {
        let cases = [
            ("  tracing:\n  - randomSamplingPercentage: -1\n", "spec.tracing[0].randomSamplingPercentage: must be in the range 0 to 100"),
            ("  tracing:\n  - randomSamplingPercentage: .nan\n", "non-finite float"),
            ("  tracing:\n  - providers: [{name: a}, {name: b}]\n", "spec.tracing[0].providers: at most one provider"),
            ("  tracing:\n  - customTags: {t: {}}\n", "one of literal, environment or header"),
            ("  tracing:\n  - customTags: {t: {environment: {name: \"\"}}}\n", "environment needs a name"),
            ("  tracing:\n  - customTags: {t: {header: {name: \"bad header\"}}}\n", "is not a header name"),
            ("  tracing:\n  - customTags: {\"a\\nb\": {literal: {value: x}}}\n", "a tag name is 1 to 1024 characters"),
            ("  selector: {matchLabels: {app: a}}\n  targetRefs: [{kind: Gateway, name: g}]\n", "spec.selector: only one of selector"),
            ("  selector: {matchLabels: {\"bad key!\": a}}\n", "spec.selector.matchLabels"),
        ];
        for (spec, want) in cases {
            let (_, errs) = tracing_in(&doc("t", "default", spec), "default", &[]);
            assert!(errs.iter().any(|e| e.contains(want)), "{spec}: {errs:?}");
        }
        let long = "x".repeat(5000);
        let (_, errs) = tracing_in(
            &doc("t", "default", &format!("  tracing:\n  - customTags: {{t: {{literal: {{value: {long}}}}}}}\n")),
            "default",
            &[],
        );
        assert!(errs.iter().any(|e| e.contains("at most 1024 bytes")), "{errs:?}");
        let many: String = (0..65).map(|i| format!("t{i}: {{literal: {{value: v}}}}, ")).collect();
        let (_, errs) = tracing_in(&doc("t", "default", &format!("  tracing:\n  - customTags: {{{many}}}\n")), "default", &[]);
        assert!(errs.iter().any(|e| e.contains("at most 64 custom tags in all (65 here)")), "{errs:?}");
        // Spread over rules, counted together; too many rules; names weft sets; WEFT_* variables.
        let spread: String = (0..9)
            .map(|r| {
                format!("  - customTags: {{{}}}\n", (0..8).map(|i| format!("t{r}x{i}: {{literal: {{value: v}}}}, ")).collect::<String>())
            })
            .collect();
        let (_, errs) = tracing_in(&doc("t", "default", &format!("  tracing:\n{spread}")), "default", &[]);
        assert!(errs.iter().any(|e| e.contains("at most 8 tracing rules")), "{errs:?}");
        let spread: String = (0..5)
            .map(|r| {
                format!("  - customTags: {{{}}}\n", (0..13).map(|i| format!("t{r}x{i}: {{literal: {{value: v}}}}, ")).collect::<String>())
            })
            .collect();
        let (_, errs) = tracing_in(&doc("t", "default", &format!("  tracing:\n{spread}")), "default", &[]);
        assert!(errs.iter().any(|e| e.contains("at most 64 custom tags in all (65 here)")), "{errs:?}");
        for (spec, want) in [
            (
                "  tracing:\n  - customTags: {http.status_code: {header: {name: x-status}}}\n",
                "http.status_code is an attribute weft sets itself",
            ),
            ("  tracing:\n  - customTags: {\"guid:x-request-id\": {literal: {value: x}}}\n", "an attribute weft sets itself"),
            ("  tracing:\n  - customTags: {tok: {environment: {name: WEFT_TOKEN}}}\n", "WEFT_* variables"),
        ] {
            let (_, errs) = tracing_in(&doc("t", "default", spec), "default", &[]);
            assert!(errs.iter().any(|e| e.contains(want)), "{spec}: {errs:?}");
        }
        // Istio's other parts load, warned, not applied.
        let (_, snap, diags) = crate::build_str("t.yaml", &doc("t", "default", "  metrics: [{providers: [{name: prometheus}]}]\n"));
        assert!(diags.errors.is_empty() && diags.warnings.iter().any(|w| w.to_string().contains("spec.metrics")));
        assert_eq!(snap.tracing, ProxyTracing::default());
    }
}
