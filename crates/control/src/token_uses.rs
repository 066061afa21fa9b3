//! How many certificates each counted (`--uses N`) bootstrap token has had, kept in the
//! store under `tokens/<id>` so that every control plane sharing it (through etcd) counts
//! the same uses: a spend is a store commit guarded like any other, so two control planes
//! racing to spend a single-use token's one certificate cannot both win — the loser's
//! commit conflicts, it catches up, and finds the token spent. The store keeps the count
//! across restarts; the history shows each spend (which token, by whom). Rollback only
//! touches `config/`, so it cannot give a spent token back.

use serde_json::{json, Value};

use crate::plane::{Plane, PlaneError};
use crate::store::Revision;

/// The store's prefix for token counts.
pub const TOKENS: &str = "tokens/";

/// Counted tokens remembered at most; when full, expired ones are forgotten first.
pub const MAX_COUNTED: usize = 100_000;

/// Expired counts removed at most per spend (so a spend's commit stays small).
const PRUNE_PER_SPEND: usize = 64;

/// Why a spend was refused.
#[derive(Debug, thiserror::Error)]
pub enum SpendError {
    /// Every use is spent (a replay), or too many counted tokens are outstanding.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Plane(#[from] PlaneError),
}

impl SpendError {
    pub fn is_conflict(&self) -> bool {
        matches!(self, SpendError::Plane(e) if e.is_conflict())
    }
}

fn key(id: &str) -> String {
    format!("{TOKENS}{id}")
}

/// The count a stored value holds: none for no value, and all of them for a malformed
/// one (a count that cannot be read never grants a use).
fn used_in(v: Option<&Value>) -> u32 {
    match v {
        None => 0,
        Some(v) => v.get("used").and_then(Value::as_u64).map(|n| n.min(u64::from(u32::MAX)) as u32).unwrap_or(u32::MAX),
    }
}

impl Plane {
    /// Whether counted token `id` (good for `uses` certificates) has had them all: from
    /// then on it authenticates nothing (its workload calls with its certificate).
    pub fn token_spent(&self, id: &str, uses: u32) -> bool {
        used_in(self.store().get(&key(id))) >= uses
    }

    /// Counts one certificate against token `id` (good for `uses`, expiring at unix
    /// second `exp`): refused once it has had them all. `client` names the caller in the
    /// history. Expired counts are pruned a few at a time.
    pub async fn spend_token(&mut self, client: &str, id: &str, uses: u32, exp: Option<u64>, now: u64) -> Result<Revision, SpendError> {
        let k = key(id);
        let used = used_in(self.store().get(&k));
        if used >= uses {
            return Err(SpendError::Refused(format!("token {id} has had its {uses} certificate(s): a bootstrap token is not replayed")));
        }
        let counted = self.counted();
        let expired: Vec<String> = counted
            .iter()
            .filter(|(_, v)| v.get("exp").and_then(Value::as_u64).is_some_and(|e| e <= now))
            .map(|(k, _)| (*k).clone())
            .take(PRUNE_PER_SPEND)
            .collect();
        if used == 0 && counted.len() - expired.len() >= MAX_COUNTED {
            return Err(SpendError::Refused("too many counted tokens outstanding: try again once some expire".into()));
        }
        let mut puts: Vec<(String, Option<Value>)> = expired.into_iter().map(|k| (k, None)).collect();
        puts.push((k, Some(json!({ "used": used + 1, "uses": uses, "exp": exp }))));
        let action = format!("certificate for token {id} ({} of {uses})", used + 1);
        let rev = self.store_mut().commit(client, &action, puts).await.map_err(PlaneError::from)?;
        rev.ok_or_else(|| SpendError::Refused("the token's use was not recorded".into()))
    }

    /// The counted tokens in the store.
    fn counted(&self) -> Vec<(&String, &Value)> {
        self.store().objects().range(TOKENS.to_owned()..).take_while(|(k, _)| k.starts_with(TOKENS)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn plane(name: &str) -> (Plane, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("weft-token-uses-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (Plane::new(Store::open(&dir).unwrap()), dir)
    }

    #[tokio::test]
    async fn a_single_use_token_is_spent_once_and_stays_spent_after_a_restart() {
        let (mut p, dir) = plane("once");
        let rev = p.spend_token("workload default/reviews", "abc", 1, None, 100).await.unwrap();
        assert_eq!(rev.action, "certificate for token abc (1 of 1)");
        let e = p.spend_token("workload default/reviews", "abc", 1, None, 100).await.unwrap_err();
        assert!(e.to_string().contains("is not replayed"), "{e}");
        drop(p);
        let mut p = Plane::new(Store::open(&dir).unwrap());
        assert!(p.spend_token("x", "abc", 1, None, 100).await.is_err(), "replayed after a restart");
        assert!(p.token_spent("abc", 1), "spent, after a restart too");
        for _ in 0..3 {
            assert!(!p.token_spent("three", 3), "a token with uses left authenticates");
            p.spend_token("x", "three", 3, None, 100).await.unwrap();
        }
        assert!(p.token_spent("three", 3));
        assert!(p.spend_token("x", "three", 3, None, 100).await.is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn expired_counts_are_pruned_and_config_is_untouched() {
        let (mut p, dir) = plane("prune");
        for i in 0..100 {
            p.spend_token("x", &format!("old{i}"), 1, Some(50), 10).await.unwrap();
        }
        p.spend_token("x", "live", 2, Some(500), 100).await.unwrap();
        // 64 of the 100 expired counts went with that spend, the rest with the next.
        assert_eq!(p.counted().len(), 100 - 64 + 1);
        p.spend_token("x", "live", 2, Some(500), 100).await.unwrap();
        assert_eq!(p.counted().len(), 1);
        assert!(p.spend_token("x", "live", 2, Some(500), 100).await.is_err(), "pruning never forgets a live count");
        assert_eq!(p.config().count(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_malformed_count_reads_as_all_spent() {
        assert_eq!(used_in(Some(&json!({"used": "x"}))), u32::MAX);
        assert_eq!(used_in(Some(&json!({"used": -1}))), u32::MAX);
        assert_eq!(used_in(Some(&json!({"used": u64::MAX}))), u32::MAX);
        assert_eq!(used_in(None), 0);
    }
}
