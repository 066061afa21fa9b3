//! An AuthorizationPolicy compiled into matchers, checked as Istio's validation checks
//! it (every problem with its field path), and a workload's policies evaluated per
//! request as Istio documents it:
//!
//! 1. a `CUSTOM` policy that matches sends the request to its external authorizer
//!    (the proxy's part: [`Check::custom`]);
//! 2. a matching `DENY` policy denies;
//! 3. with no `ALLOW` policy the request is allowed; with some, one must match;
//! 4. a matching `AUDIT` policy is reported, whatever the outcome.
//!
//! An `ALLOW` policy without rules (`spec: {}`) matches nothing, so it denies every
//! request; `rules: [{}]` matches every request.
//!
//! **Fail safe where weft cannot know.** A plaintext request has no peer principal:
//! a rule on `principals`, `namespaces` (or their `not` forms, or `source.principal` /
//! `source.namespace` conditions) cannot be evaluated. Such a field matches nothing in
//! an `ALLOW` or `AUDIT` policy and everything in a `DENY` or `CUSTOM` one — stricter
//! than Istio, where a plaintext request in PERMISSIVE mode slips past a `DENY` on
//! `principals`. A JWT's absence is known, not unknown: `requestPrincipals: ["*"]`
//! does not match a request without a token (Istio's way to require one).

use std::sync::Arc;

use http::HeaderName;

use crate::attrs::Attrs;
use crate::matchers::{parse_port, Cidr, HostMatch, PathMatch, StrMatch};
use crate::spec::{self, AuthorizationPolicy};
use condition::{condition, Condition, Key};
use index::ActionSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    Audit,
    Custom,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "ALLOW",
            Action::Deny => "DENY",
            Action::Audit => "AUDIT",
            Action::Custom => "CUSTOM",
        }
    }
}

/// One AuthorizationPolicy, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledPolicy {
    /// `namespace/name`, for logs, metrics and the answer's reason.
    pub name: Arc<str>,
    pub action: Action,
    /// For `CUSTOM`: the extension provider's name.
    pub provider: Option<String>,
    pub rules: Vec<Rule>,
    /// Istio's `istio.io/dry-run: "true"` annotation: evaluated and reported, never
    /// enforced.
    pub dry_run: bool,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rule {
    from: Vec<Source>,
    to: Vec<Operation>,
    when: Vec<Condition>,
}

/// A list of values and its `not` form for one attribute.
#[derive(Debug, Clone, PartialEq)]
struct Field<M> {
    any: Vec<M>,
    not: Vec<M>,
}

impl<M> Default for Field<M> {
    fn default() -> Self {
        Field { any: Vec::new(), not: Vec::new() }
    }
}

impl<M> Field<M> {
    fn is_empty(&self) -> bool {
        self.any.is_empty() && self.not.is_empty()
    }

    /// Whether a value (`None`: unknown) passes: one of `any` (when given) and none of
    /// `not`. An unknown value gives `unknown`.
    #[inline]
    fn check<T: Copy>(&self, v: Option<T>, unknown: bool, hit: impl Fn(&M, T) -> bool) -> bool {
        if self.is_empty() {
            return true;
        }
        let Some(v) = v else { return unknown };
        (self.any.is_empty() || self.any.iter().any(|m| hit(m, v))) && !self.not.iter().any(|m| hit(m, v))
    }

    /// The same for an attribute whose absence is known (a request without a token):
    /// nothing in `any` matches it, nothing in `not` excludes it.
    #[inline]
    fn check_known<T: Copy>(&self, v: Option<T>, hit: impl Fn(&M, T) -> bool) -> bool {
        if self.is_empty() {
            return true;
        }
        match v {
            Some(v) => (self.any.is_empty() || self.any.iter().any(|m| hit(m, v))) && !self.not.iter().any(|m| hit(m, v)),
            None => self.any.is_empty(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
struct Source {
    principals: Field<StrMatch>,
    request_principals: Field<StrMatch>,
    namespaces: Field<StrMatch>,
    /// (namespace, service account).
    service_accounts: Field<(String, String)>,
    trust_domains: Field<StrMatch>,
    ip_blocks: Field<Cidr>,
    remote_ip_blocks: Field<Cidr>,
}

#[derive(Debug, Clone, PartialEq, Default)]
struct Operation {
    hosts: Field<HostMatch>,
    ports: Field<u16>,
    methods: Field<StrMatch>,
    paths: Field<PathMatch>,
}

/// A problem found compiling: the field path under the resource and the message.
pub type PolicyError = (String, String);

/// Compiles `p` (named `namespace/name`); `Err` lists every problem.
pub fn compile(name: &str, p: &AuthorizationPolicy) -> Result<CompiledPolicy, Vec<PolicyError>> {
    let mut errs: Vec<PolicyError> = Vec::new();
    let mut err = |path: String, msg: String| errs.push((path, msg));
    let action = match p.action.as_deref().unwrap_or("ALLOW") {
        "ALLOW" => Action::Allow,
        "DENY" => Action::Deny,
        "AUDIT" => Action::Audit,
        "CUSTOM" => Action::Custom,
        other => {
            err("spec.action".into(), format!("unknown value {:?} (expected ALLOW, DENY, AUDIT or CUSTOM)", cut(other)));
            Action::Allow
        }
    };
    if p.selector.is_some() && (p.target_ref.is_some() || !p.target_refs.is_empty()) {
        err("spec.selector".into(), "only one of selector and targetRef(s) may be set".into());
    }
    if p.target_ref.is_some() && !p.target_refs.is_empty() {
        err("spec.targetRef".into(), "only one of targetRef and targetRefs may be set".into());
    }
    if let Some(s) = &p.selector {
        if s.match_labels.is_empty() {
            err("spec.selector.matchLabels".into(), "at least one label (or no selector, for the whole namespace)".into());
        }
    }
    let provider = match (action, &p.provider) {
        (Action::Custom, Some(pr)) if !pr.name.is_empty() => Some(pr.name.clone()),
        (Action::Custom, _) => {
            err("spec.provider.name".into(), "a CUSTOM policy names its extension provider".into());
            None
        }
        (_, Some(_)) => {
            err("spec.provider".into(), format!("only a CUSTOM policy has a provider (this one is {})", action.as_str()));
            None
        }
        (_, None) => None,
    };
    let mut rules = Vec::new();
    let namespace = name.split_once('/').map_or("default", |(ns, _)| ns);
    for (i, r) in p.rules.iter().flatten().enumerate() {
        rules.push(rule(&format!("spec.rules[{i}]"), r, namespace, &mut err));
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(CompiledPolicy { name: name.into(), action, provider, rules, dry_run: false })
}

/// A value as shown in a message (a hostile one is cut).
fn cut(s: &str) -> String {
    let end = s.char_indices().nth(64).map(|(i, _)| i).unwrap_or(s.len());
    s[..end].to_owned()
}

fn rule(at: &str, r: &spec::Rule, policy_ns: &str, err: &mut impl FnMut(String, String)) -> Rule {
    let mut out = Rule::default();
    for (i, f) in r.from.iter().enumerate() {
        let at = format!("{at}.from[{i}].source");
        match &f.source {
            None => err(at, "must be set".into()),
            Some(s) => out.from.push(source(&at, s, policy_ns, err)),
        }
    }
    for (i, t) in r.to.iter().enumerate() {
        let at = format!("{at}.to[{i}].operation");
        match &t.operation {
            None => err(at, "must be set".into()),
            Some(o) => out.to.push(operation(&at, o, err)),
        }
    }
    for (i, c) in r.when.iter().enumerate() {
        if let Some(c) = condition(&format!("{at}.when[{i}]"), c, err) {
            out.when.push(c);
        }
    }
    out
}

/// Parses the values of one field; errors name `at.<field>[i]`.
fn field<M>(
    at: &str,
    name: &str,
    any: &[String],
    not: &[String],
    parse: impl Fn(&str) -> Result<M, String>,
    err: &mut impl FnMut(String, String),
) -> Field<M> {
    let not_name = format!("not{}{}", name[..1].to_ascii_uppercase(), &name[1..]);
    let mut f = Field::default();
    for (list, out, n) in [(any, &mut f.any, name), (not, &mut f.not, not_name.as_str())] {
        for (i, v) in list.iter().enumerate() {
            match parse(v) {
                Ok(m) => out.push(m),
                Err(e) => err(format!("{at}.{n}[{i}]"), e),
            }
        }
    }
    f
}

/// The (namespace, service account) of a principal (`td/ns/<ns>/sa/<sa>`).
fn service_account_of(p: &str) -> Option<(&str, &str)> {
    let rest = &p[p.find("/ns/")? + 4..];
    let (ns, rest) = rest.split_once('/')?;
    let sa = &rest[rest.find("sa/")? + 3..];
    Some((ns, sa.split('/').next().unwrap_or(sa)))
}

/// A `serviceAccounts` entry: `namespace/name`, or `name` in the policy's namespace.
fn parse_service_account(v: &str, policy_ns: &str) -> Result<(String, String), String> {
    let (ns, sa) = v.split_once('/').unwrap_or((policy_ns, v));
    if v.len() > 320 || ns.is_empty() || sa.is_empty() || sa.contains('/') || v.contains('*') {
        return Err(format!("{v:?} is not namespace/serviceAccount (at most 320 bytes, no wildcard)"));
    }
    Ok((ns.to_owned(), sa.to_owned()))
}

fn source(at: &str, s: &spec::Source, policy_ns: &str, err: &mut impl FnMut(String, String)) -> Source {
    let sa = |v: &str| parse_service_account(v, policy_ns);
    let has_accounts = !s.service_accounts.is_empty() || !s.not_service_accounts.is_empty();
    let has_peers = !s.principals.is_empty() || !s.not_principals.is_empty() || !s.namespaces.is_empty() || !s.not_namespaces.is_empty();
    if has_accounts && has_peers {
        err(at.to_owned(), "cannot set serviceAccounts with namespaces or principals".into());
    }
    if s.service_accounts.len() > 16 || s.not_service_accounts.len() > 16 {
        err(format!("{at}.serviceAccounts"), "at most 16 service accounts".into());
    }
    let out = Source {
        principals: field(at, "principals", &s.principals, &s.not_principals, StrMatch::parse, err),
        request_principals: field(at, "requestPrincipals", &s.request_principals, &s.not_request_principals, StrMatch::parse, err),
        namespaces: field(at, "namespaces", &s.namespaces, &s.not_namespaces, StrMatch::parse, err),
        service_accounts: field(at, "serviceAccounts", &s.service_accounts, &s.not_service_accounts, sa, err),
        trust_domains: field(at, "trustDomains", &s.trust_domains, &s.not_trust_domains, StrMatch::parse, err),
        ip_blocks: field(at, "ipBlocks", &s.ip_blocks, &s.not_ip_blocks, Cidr::parse, err),
        remote_ip_blocks: field(at, "remoteIpBlocks", &s.remote_ip_blocks, &s.not_remote_ip_blocks, Cidr::parse, err),
    };
    if *s == spec::Source::default() {
        err(at.to_owned(), "must not be empty".into());
    }
    out
}

fn operation(at: &str, o: &spec::Operation, err: &mut impl FnMut(String, String)) -> Operation {
    let out = Operation {
        hosts: field(at, "hosts", &o.hosts, &o.not_hosts, HostMatch::parse, err),
        ports: field(at, "ports", &o.ports, &o.not_ports, parse_port, err),
        methods: field(at, "methods", &o.methods, &o.not_methods, StrMatch::parse, err),
        paths: field(at, "paths", &o.paths, &o.not_paths, PathMatch::parse, err),
    };
    if *o == spec::Operation::default() {
        err(at.to_owned(), "must not be empty".into());
    }
    out
}

/// One check's view of the request: its attributes, and the headers that conditions
/// looked up so far (a workload's policies usually test a few headers in many rules:
/// each is looked up once per check, not once per rule).
pub struct Eval<'e, 'a> {
    a: &'e Attrs<'a>,
    headers: [std::cell::OnceCell<(&'e str, http::header::GetAll<'a, http::HeaderValue>)>; 4],
}

impl<'e, 'a> Eval<'e, 'a> {
    pub fn new(a: &'e Attrs<'a>) -> Self {
        Eval { a, headers: Default::default() }
    }

    /// The values of header `h`, looked up once per check (for the first four names).
    fn header<'s>(&'s self, h: &'e HeaderName) -> http::header::ValueIter<'a, http::HeaderValue> {
        for slot in &self.headers {
            let (name, all) = slot.get_or_init(|| (h.as_str(), self.a.headers.get_all(h)));
            if *name == h.as_str() {
                return all.iter();
            }
        }
        self.a.headers.get_all(h).iter()
    }
}

impl Rule {
    /// Whether the rule matches; `unknown` is what an attribute weft cannot know makes
    /// of a field that needs it.
    #[inline]
    fn matches<'e>(&'e self, e: &Eval<'e, '_>, unknown: bool) -> bool {
        let a = e.a;
        (self.from.is_empty() || self.from.iter().any(|s| s.matches(a, unknown)))
            && (self.to.is_empty() || self.to.iter().any(|o| o.matches(a)))
            && self.when.iter().all(|c| c.matches(e, unknown))
    }
}

impl Source {
    fn matches(&self, a: &Attrs<'_>, unknown: bool) -> bool {
        self.principals.check(a.principal, unknown, |m, v| m.matches(v))
            && self.namespaces.check(a.principal.map(|_| a.source_namespace().unwrap_or("")), unknown, |m, v| m.matches(v))
            && self.service_accounts.check(a.principal, unknown, |(ns, sa), p| service_account_of(p) == Some((ns, sa)))
            && self.trust_domains.check(a.principal.map(|p| p.split('/').next().unwrap_or("")), unknown, |m, v| m.matches(v))
            && self.request_principals.check_known(a.request_principal, |m, v| m.matches(v))
            && self.ip_blocks.check(a.source_ip, unknown, |c, ip| c.contains(ip))
            && self.remote_ip_blocks.check(a.remote_ip.or(a.source_ip), unknown, |c, ip| c.contains(ip))
    }
}

impl Operation {
    fn matches(&self, a: &Attrs<'_>) -> bool {
        self.hosts.check_known(Some(a.host), |m, v| m.matches(v, a.port))
            && self.ports.check_known(Some(a.destination_port), |p, v| *p == v)
            && self.methods.check_known(Some(a.method), |m, v| m.matches(v))
            && self.paths.check_known(Some(a.path), |m, v| m.matches(v))
    }
}

impl CompiledPolicy {
    /// Whether any rule matches (no rules: none does).
    #[inline]
    pub fn matches<'e>(&'e self, e: &Eval<'e, '_>) -> bool {
        let unknown = matches!(self.action, Action::Deny | Action::Custom);
        self.rules.iter().any(|r| r.matches(e, unknown))
    }

    /// Whether a rule depends on the peer's identity (principals, namespaces), which a
    /// plaintext request under PERMISSIVE cannot prove (`weft validate` warns).
    pub fn needs_peer_identity(&self) -> bool {
        self.rules.iter().any(|r| {
            r.from.iter().any(|s| {
                !s.principals.is_empty() || !s.namespaces.is_empty() || !s.service_accounts.is_empty() || !s.trust_domains.is_empty()
            }) || r.when.iter().any(|c| matches!(c.key, Key::SourcePrincipal | Key::SourceNamespace))
        })
    }

    /// Whether a rule reads the request's JWT (`requestPrincipals`, `request.auth.*`).
    pub fn needs_request_auth(&self) -> bool {
        self.rules.iter().any(|r| {
            r.from.iter().any(|s| !s.request_principals.is_empty())
                || r.when.iter().any(|c| matches!(c.key, Key::RequestPrincipal | Key::Audiences | Key::Presenter | Key::Claim(_)))
        })
    }
}

/// A workload's policies, by action (each in the order given), indexed by principal
/// ([`index::ActionSet`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policies {
    custom: ActionSet,
    deny: ActionSet,
    allow: ActionSet,
    audit: ActionSet,
    /// The dry-run ALLOW and DENY policies, evaluated apart (Envoy's shadow rules).
    dry_run: Option<Box<Policies>>,
}

/// What the policies make of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'p> {
    Allow,
    /// Denied by this DENY policy.
    DeniedBy(&'p str),
    /// ALLOW policies apply and none matched.
    NotAllowed,
}

/// The outcome of [`Policies::check`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Check<'p> {
    /// The first matching CUSTOM policy: the request goes to its provider first, and
    /// is denied if the provider denies, whatever `decision` says.
    pub custom: Option<&'p CompiledPolicy>,
    pub decision: Decision<'p>,
    /// The first matching AUDIT policy.
    pub audit: Option<&'p str>,
    /// What the dry-run policies alone would have decided, when there are any.
    pub dry_run: Option<Decision<'p>>,
}

impl Policies {
    pub fn from_compiled(all: impl IntoIterator<Item = Arc<CompiledPolicy>>) -> Policies {
        let (mut custom, mut deny, mut allow, mut audit, mut dry) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for c in all {
            if c.dry_run && matches!(c.action, Action::Allow | Action::Deny) {
                dry.push(Arc::new(CompiledPolicy { dry_run: false, ..(*c).clone() }));
                continue;
            }
            match c.action {
                Action::Custom => custom.push(c),
                Action::Deny => deny.push(c),
                Action::Allow => allow.push(c),
                Action::Audit => audit.push(c),
            }
        }
        Policies {
            custom: ActionSet::new(custom),
            deny: ActionSet::new(deny),
            allow: ActionSet::new(allow),
            audit: ActionSet::new(audit),
            dry_run: (!dry.is_empty()).then(|| Box::new(Policies::from_compiled(dry))),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.custom.is_empty() && self.deny.is_empty() && self.allow.is_empty() && self.audit.is_empty() && self.dry_run.is_none()
    }

    /// Every policy, CUSTOM, DENY, ALLOW, AUDIT, then the dry-run ones.
    pub fn all(&self) -> Box<dyn Iterator<Item = &Arc<CompiledPolicy>> + '_> {
        let enforced = [&self.custom, &self.deny, &self.allow, &self.audit].into_iter().flat_map(|s| s.all());
        Box::new(enforced.chain(self.dry_run.iter().flat_map(|d| d.all())))
    }

    /// Evaluates the request (allocates nothing).
    pub fn check<'p>(&'p self, a: &Attrs<'_>) -> Check<'p> {
        let e = Eval::new(a);
        let m = |p: &'p CompiledPolicy| p.matches(&e);
        let custom = self.custom.first(a.principal, true, m);
        let decision = if let Some(d) = self.deny.first(a.principal, true, m) {
            Decision::DeniedBy(&d.name)
        } else if self.allow.is_empty() || self.allow.first(a.principal, false, m).is_some() {
            Decision::Allow
        } else {
            Decision::NotAllowed
        };
        let audit = self.audit.first(a.principal, false, m).map(|p| &*p.name);
        let dry_run = self.dry_run.as_ref().map(|d| d.check(a).decision);
        Check { custom, decision, audit, dry_run }
    }
}

mod condition;
mod index;

#[cfg(test)]
mod tests;
