//! The answers of the index's current revision, by (since, scope key, with the names),
//! bounded by count and by bytes.

use std::collections::HashMap;

use weft_api::MeshBody;

/// Answers of one revision kept at most (per since, scope and names), and their bytes
/// at most: past either the cache starts again (answers are encoded again as asked). An
/// answer larger than the byte bound is not kept.
const MAX_ANSWERS: usize = 2_000;
const MAX_ANSWER_BYTES: usize = 256 << 20;

/// The answers of this revision by (since, scope key, with the names).
#[derive(Default)]
pub(super) struct Answers {
    map: HashMap<(u64, String, bool), MeshBody>,
    bytes: usize,
}

impl Answers {
    pub(super) fn get(&self, key: &(u64, String, bool)) -> Option<&MeshBody> {
        self.map.get(key)
    }

    pub(super) fn insert(&mut self, key: (u64, String, bool), body: &MeshBody) {
        let size = Self::size(&key, body);
        if size > MAX_ANSWER_BYTES {
            return;
        }
        // (One replaced is counted out first.)
        let replaced = self.map.get(&key).map_or(0, |old| Self::size(&key, old));
        let full = replaced == 0 && self.map.len() >= MAX_ANSWERS;
        if full || self.bytes - replaced + size > MAX_ANSWER_BYTES {
            self.clear();
        } else {
            self.bytes -= replaced;
        }
        self.map.insert(key, body.clone());
        self.bytes += size;
    }

    fn size(key: &(u64, String, bool), body: &MeshBody) -> usize {
        key.1.len() + body.len()
    }

    pub(super) fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }

    /// Drops the answers of scope `scope_key`.
    pub(super) fn forget_scope(&mut self, scope_key: &str) {
        self.map.retain(|(_, k, _), _| k != scope_key);
        self.bytes = self.map.iter().map(|(k, b)| Self::size(k, b)).sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_api::MeshKind;

    #[test]
    fn cached_answers_are_bounded_by_their_bytes() {
        let body = |n: usize| {
            let mut e = weft_api::MeshEncoder::new(1, MeshKind::Full);
            let doc = serde_json::value::to_raw_value(&"x".repeat(n)).unwrap();
            e.put("k", &doc);
            e.finish()
        };
        let mut a = Answers::default();
        let big = body(MAX_ANSWER_BYTES / 3);
        for i in 0..10 {
            a.insert((i, format!("scope{i}"), false), &big);
            assert!(a.bytes <= MAX_ANSWER_BYTES && a.map.len() <= 3, "{} bytes in {} answers", a.bytes, a.map.len());
            assert!(a.get(&(i, format!("scope{i}"), false)).is_some(), "the newest is kept");
        }
        // The same key again: counted once.
        let held = a.bytes;
        a.insert((9, "scope9".into(), false), &big);
        assert_eq!(a.bytes, held);
        // An answer over the bound is not kept (and drops nothing).
        a.insert((11, "huge".into(), false), &body(MAX_ANSWER_BYTES + 1));
        assert!(a.get(&(11, "huge".into(), false)).is_none());
        assert_eq!(a.bytes, held);
        a.forget_scope("scope9");
        assert!(a.get(&(9, "scope9".into(), false)).is_none());
        assert_eq!(a.bytes, a.map.iter().map(|(k, b)| Answers::size(k, b)).sum::<usize>());
    }
}
