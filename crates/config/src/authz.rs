//! AuthorizationPolicy, RequestAuthentication and ExtensionProvider compiled into the
//! snapshot ([`weft_authz`] holds the matchers and their evaluation): every policy
//! checked as Istio's validation checks it, with its scope; the policies that apply to
//! the proxy's own workload are picked when the inbound side is added
//! ([`Snapshot::add_inbound`](crate::Snapshot::add_inbound)).

use std::collections::BTreeMap;
use std::sync::Arc;

use weft_authz::spec::{ExtAuthzHttp, ExtensionProvider, RequestAuthentication, TargetRef, WorkloadSelector};
use weft_authz::{CompiledPolicy, Scope};

use crate::compile::Ctx;
use crate::load::Resource;

/// An AuthorizationPolicy and the workloads it applies to.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopedPolicy {
    pub scope: Scope,
    pub policy: Arc<CompiledPolicy>,
}

/// A RequestAuthentication and the workloads it applies to.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopedRequestAuthn {
    pub name: String,
    pub scope: Scope,
    pub spec: Arc<RequestAuthentication>,
    /// Its `jwtRules`, compiled.
    pub authn: Arc<weft_authz::jwt::Authenticator>,
}

fn namespace(r: &Resource) -> String {
    r.metadata.namespace.clone().unwrap_or_else(|| "default".into())
}

/// The scope of a policy from its `selector` / `targetRef(s)`; errors name the field.
fn scope(
    r: &Resource,
    selector: Option<&WorkloadSelector>,
    target_ref: Option<&TargetRef>,
    target_refs: &[TargetRef],
    ctx: &mut Ctx,
) -> Option<Scope> {
    let mut ok = true;
    if let Some(s) = selector {
        for (k, e) in crate::rules::labels(&s.match_labels) {
            ctx.err(r, format!("spec.selector.matchLabels[{k}]"), e);
            ok = false;
        }
    }
    let refs: Vec<(String, &TargetRef)> = match target_ref {
        Some(t) => vec![("spec.targetRef".to_owned(), t)],
        None => target_refs.iter().enumerate().map(|(i, t)| (format!("spec.targetRefs[{i}]"), t)).collect(),
    };
    let mut services = Vec::new();
    for (at, t) in refs {
        if t.kind != "Service" || !(t.group.is_empty() || t.group == "core") {
            ctx.err(
                r,
                format!("{at}.kind"),
                format!("weft applies policies to kind Service (group \"\"), not {:?}", crate::rules::shown(&t.kind)),
            );
            ok = false;
        } else if t.name.is_empty() {
            ctx.err(r, format!("{at}.name"), "missing field");
            ok = false;
        } else if t.namespace.as_ref().is_some_and(|n| *n != namespace(r)) {
            ctx.err(r, format!("{at}.namespace"), "a policy targets a Service in its own namespace");
            ok = false;
        } else {
            services.push(t.name.to_ascii_lowercase());
        }
    }
    ok.then(|| Scope { namespace: namespace(r), selector: selector.map(|s| s.match_labels.clone()), services })
}

pub(crate) fn compile_policy(r: &Resource, p: &weft_authz::spec::AuthorizationPolicy, ctx: &mut Ctx) -> Option<ScopedPolicy> {
    let name = format!("{}/{}", namespace(r), r.metadata.name);
    let compiled = match weft_authz::policy::compile(&name, p) {
        Ok(c) => Some(c),
        Err(errors) => {
            for (path, msg) in errors {
                ctx.err(r, path, msg);
            }
            None
        }
    };
    let scope = scope(r, p.selector.as_ref(), p.target_ref.as_ref(), &p.target_refs, ctx)?;
    let mut policy = compiled?;
    policy.dry_run = dry_run(r, &policy, ctx);
    Some(ScopedPolicy { scope, policy: Arc::new(policy) })
}

/// Istio's `istio.io/dry-run` annotation (`"true"` or `"false"`), for ALLOW and DENY.
fn dry_run(r: &Resource, p: &CompiledPolicy, ctx: &mut Ctx) -> bool {
    const KEY: &str = "istio.io/dry-run";
    match r.metadata.annotations.get(KEY).map(String::as_str) {
        None | Some("false") => false,
        Some("true") if matches!(p.action, weft_authz::Action::Allow | weft_authz::Action::Deny) => true,
        Some("true") => {
            ctx.err(r, format!("metadata.annotations[{KEY}]"), "dry-run applies to ALLOW and DENY policies only");
            false
        }
        Some(v) => {
            ctx.err(r, format!("metadata.annotations[{KEY}]"), format!("{} is not \"true\" or \"false\"", crate::rules::shown(v)));
            false
        }
    }
}

/// Warns of each policy that depends on the caller's mTLS identity where mTLS is not
/// required: no STRICT PeerAuthentication for the whole mesh or the policy's namespace.
pub(crate) fn warn_permissive(resources: &[Resource], snap: &crate::Snapshot, ctx: &mut Ctx) {
    use crate::istio::MtlsMode;
    let strict = |ns: &str| {
        snap.peer_authentication
            .iter()
            .filter(|p| p.selector.is_none() && (p.namespace == crate::mtls::ROOT_NAMESPACE || p.namespace == ns))
            .any(|p| p.mode == MtlsMode::Strict)
    };
    for r in resources.iter().filter(|r| matches!(r.spec, crate::Spec::AuthorizationPolicy(_))) {
        let name = format!("{}/{}", namespace(r), r.metadata.name);
        let needs = snap.authorization.iter().any(|p| *p.policy.name == *name && p.policy.needs_peer_identity());
        if needs && !strict(&namespace(r)) {
            ctx.warn(
                r,
                "spec.rules",
                "depends on the caller's mTLS identity (principals, namespaces), but mTLS is not STRICT for the mesh or this \
                 namespace: a plaintext caller has no identity, and such a rule then matches nothing in ALLOW and everything \
                 in DENY — add a STRICT PeerAuthentication",
            );
        }
    }
}

pub(crate) fn compile_request_authn(r: &Resource, ra: &RequestAuthentication, ctx: &mut Ctx) -> Option<ScopedRequestAuthn> {
    if ra.selector.is_some() && (ra.target_ref.is_some() || !ra.target_refs.is_empty()) {
        ctx.err(r, "spec.selector", "only one of selector and targetRef(s) may be set");
        return None;
    }
    let authn = weft_authz::jwt::compile(ra).map_err(|errors| {
        for (path, msg) in errors {
            ctx.err(r, path, msg);
        }
    });
    let scope = scope(r, ra.selector.as_ref(), ra.target_ref.as_ref(), &ra.target_refs, ctx)?;
    let authn = Arc::new(authn.ok()?);
    Some(ScopedRequestAuthn { name: format!("{}/{}", namespace(r), r.metadata.name), scope, spec: Arc::new(ra.clone()), authn })
}

pub(crate) fn compile_provider(r: &Resource, p: &ExtensionProvider, ctx: &mut Ctx) -> Option<(String, ExtAuthzHttp)> {
    let Some(http) = &p.envoy_ext_authz_http else {
        ctx.err(r, "spec.envoyExtAuthzHttp", "missing field (the one provider type weft serves)");
        return None;
    };
    let mut ok = true;
    if http.service.is_empty() {
        ctx.err(r, "spec.envoyExtAuthzHttp.service", "missing field");
        ok = false;
    }
    if !(1..=65535).contains(&http.port) {
        ctx.err(r, "spec.envoyExtAuthzHttp.port", "a port is 1 to 65535");
        ok = false;
    }
    ok.then(|| (r.metadata.name.clone(), http.clone()))
}

/// Every CUSTOM policy's provider must exist.
pub(crate) fn check_providers(resources: &[Resource], providers: &BTreeMap<String, ExtAuthzHttp>, ctx: &mut Ctx) {
    for r in resources {
        if let crate::Spec::AuthorizationPolicy(p) = &r.spec {
            if p.action.as_deref() != Some("CUSTOM") {
                continue;
            }
            if let Some(name) = p.provider.as_ref().map(|p| &p.name).filter(|n| !n.is_empty() && !providers.contains_key(*n)) {
                ctx.err(r, "spec.provider.name", format!("no ExtensionProvider named {}", crate::rules::shown(name)));
            }
        }
    }
}
