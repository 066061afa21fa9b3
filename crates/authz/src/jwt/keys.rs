//! A JSON Web Key Set's usable keys, and the cache a fetched one lives in.

use std::sync::Arc;

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};

/// One verification key and the algorithms it may verify.
pub struct Key {
    pub kid: Option<String>,
    /// The algorithms its type allows (RSA: RS*/PS*; EC: the curve's one; OKP: EdDSA),
    /// narrowed to the JWK's `alg` when it names one.
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("kid", &self.kid).field("algorithms", &self.algorithms).finish()
    }
}

/// The usable keys of a JWKS (keys of other types, or unsupported curves, skipped).
#[derive(Debug, Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
    /// Tokens whose signature these keys verified.
    pub(super) verified: Verified,
}

/// Tokens whose signature one of a key set's keys verified, whole (compared exactly, so
/// no other token can pass for one), so that a client presenting the same token again
/// costs a lookup instead of an RSA or ECDSA verification (15–40 µs). It lives with the
/// keys: new keys (a JWKS refresh, a reload) start with none, so a token of a key that
/// went away is checked afresh. Only what verified is kept; `exp`, `nbf` and audiences
/// are checked on every request. Bounded (tokens over 4 KiB are not kept; cleared past
/// 4 MiB); lock-free to read.
#[derive(Default)]
pub(super) struct Verified {
    tokens: papaya::HashMap<Box<str>, (), foldhash::fast::RandomState>,
    bytes: std::sync::atomic::AtomicUsize,
}

const MAX_KEPT_TOKEN: usize = 4 * 1024;
const MAX_KEPT_BYTES: usize = 4 * 1024 * 1024;

impl Verified {
    pub(super) fn contains(&self, token: &str) -> bool {
        self.tokens.pin().contains_key(token)
    }

    pub(super) fn insert(&self, token: &str) {
        use std::sync::atomic::Ordering;
        if token.len() > MAX_KEPT_TOKEN {
            return;
        }
        let map = self.tokens.pin();
        if self.bytes.fetch_add(token.len(), Ordering::Relaxed) + token.len() > MAX_KEPT_BYTES {
            map.clear();
            self.bytes.store(token.len(), Ordering::Relaxed);
        }
        map.insert(token.into(), ());
    }
}

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Verified({} tokens)", self.tokens.len())
    }
}

const RSA_ALGS: [Algorithm; 6] =
    [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384, Algorithm::PS512];

impl KeySet {
    /// Parses a JWKS (`{"keys": [...]}`); an error when it is not one or holds no
    /// usable key.
    pub fn parse(json: &str) -> Result<KeySet, String> {
        // Key by key, so that one key of a type weft does not know leaves the others usable.
        let set: RawSet = serde_json::from_str(json).map_err(|e| format!("not a JSON Web Key Set: {e}"))?;
        let keys: Vec<Key> =
            set.keys.into_iter().filter_map(|v| serde_json::from_value::<Jwk>(v).ok()).filter_map(|jwk| usable_key(&jwk)).collect();
        if keys.is_empty() {
            return Err("no usable key (weft verifies RSA, EC P-256/P-384 and Ed25519 keys)".into());
        }
        Ok(KeySet { keys, verified: Verified::default() })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys that may verify `alg`: when the token names a `kid`, those with that
    /// `kid` or none (as Envoy's jwt_verify_lib).
    pub fn candidates<'a>(&'a self, kid: Option<&'a str>, alg: Algorithm) -> impl Iterator<Item = &'a Key> + 'a {
        self.keys.iter().filter(move |k| k.algorithms.contains(&alg) && (kid.is_none() || k.kid.is_none() || k.kid.as_deref() == kid))
    }
}

#[derive(serde::Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

fn usable_key(jwk: &Jwk) -> Option<Key> {
    let mut algorithms: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA_ALGS.to_vec(),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
        _ => return None,
    };
    if let Some(named) = jwk.common.key_algorithm.and_then(algorithm_of) {
        algorithms.retain(|a| *a == named);
    }
    if algorithms.is_empty() {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key { kid: jwk.common.key_id.clone(), algorithms, key })
}

fn algorithm_of(k: KeyAlgorithm) -> Option<Algorithm> {
    Some(match k {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// A `jwksUri`'s keys as last fetched: empty until the first fetch succeeds; a
/// refresh swaps them in one store, requests read them without a lock.
#[derive(Debug, Default)]
pub struct JwksCache {
    keys: ArcSwap<KeySet>,
}

impl JwksCache {
    pub fn load(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// Takes a fetched JWKS; one that does not parse leaves the previous keys in place
    /// (the error says why, for the log).
    pub fn update(&self, json: &str) -> Result<usize, String> {
        let set = KeySet::parse(json)?;
        let n = set.keys.len();
        self.keys.store(Arc::new(set));
        Ok(n)
    }
}
