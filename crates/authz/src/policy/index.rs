//! The policies of one action, indexed by the caller's principal so that a check
//! looks only at the policies that could match. Most policies name their callers
//! exactly (`principals: ["cluster.local/ns/default/sa/sleep"]`): such a policy can
//! match only a request from one of those principals, so a request finds its
//! candidates with one hash lookup. A policy that also takes other callers (a rule
//! without `from`, or with a `principals` pattern, or a `from` on other fields) is
//! looked at for every request. A request without a principal (plaintext) cannot be
//! ruled out this way where an unknown principal matches (DENY, CUSTOM): every
//! policy is looked at then.

use std::collections::HashMap;
use std::sync::Arc;

use crate::matchers::StrMatch;

use super::{CompiledPolicy, Rule};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActionSet {
    pub(super) policies: Vec<Arc<CompiledPolicy>>,
    /// Exact principal → the indexable policies that name it (ascending indices).
    by_principal: HashMap<Box<str>, Vec<u32>, foldhash::fast::RandomState>,
    /// The policies that any caller may match (ascending indices).
    always: Vec<u32>,
}

/// The exact principals a policy's every rule requires, or `None` when some rule may
/// match other callers.
fn exact_principals(p: &CompiledPolicy) -> Option<Vec<&str>> {
    if p.rules.is_empty() {
        return Some(Vec::new()); // matches nothing at all
    }
    let mut all = Vec::new();
    for r in &p.rules {
        all.extend(rule_principals(r)?);
    }
    Some(all)
}

fn rule_principals(r: &Rule) -> Option<Vec<&str>> {
    if r.from.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for s in &r.from {
        if s.principals.any.is_empty() {
            return None;
        }
        for m in &s.principals.any {
            match m {
                StrMatch::Exact(v) => out.push(v.as_str()),
                _ => return None,
            }
        }
    }
    Some(out)
}

impl ActionSet {
    pub fn new(policies: Vec<Arc<CompiledPolicy>>) -> ActionSet {
        let mut set = ActionSet { policies, ..ActionSet::default() };
        for (i, p) in set.policies.iter().enumerate() {
            match exact_principals(p) {
                Some(names) => {
                    for n in names {
                        let list = set.by_principal.entry(n.into()).or_default();
                        if list.last() != Some(&(i as u32)) {
                            list.push(i as u32);
                        }
                    }
                }
                None => set.always.push(i as u32),
            }
        }
        set
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    pub fn all(&self) -> &[Arc<CompiledPolicy>] {
        &self.policies
    }

    /// The first policy (in the order given) that `matches`, looking only at those
    /// that could: the indexed ones for `principal`, and the rest.
    #[inline]
    pub fn first<'p>(
        &'p self,
        principal: Option<&str>,
        unknown_matches: bool,
        matches: impl Fn(&'p CompiledPolicy) -> bool,
    ) -> Option<&'p CompiledPolicy> {
        if principal.is_none() && unknown_matches {
            return self.policies.iter().find(|p| matches(p)).map(|p| &**p);
        }
        let named: &[u32] = principal.and_then(|p| self.by_principal.get(p)).map(Vec::as_slice).unwrap_or(&[]);
        // Both lists ascend: walk them merged, so "first" keeps the order given.
        let (mut a, mut b) = (self.always.iter().peekable(), named.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(&&x), Some(&&y)) if x <= y => {
                    a.next();
                    x
                }
                (_, Some(&&y)) => {
                    b.next();
                    y
                }
                (Some(&&x), None) => {
                    a.next();
                    x
                }
                (None, None) => return None,
            };
            let p = &self.policies[next as usize];
            if matches(p) {
                return Some(p);
            }
        }
    }
}
