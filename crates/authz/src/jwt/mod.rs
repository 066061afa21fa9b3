//! RequestAuthentication: a JWT found in a request, checked against the issuers a
//! workload trusts, as Istio (Envoy's `jwt_authn`) does it.
//!
//! - [`compile()`]: a RequestAuthentication's `jwtRules` checked as Istio's validation
//!   does (every problem with its field path) and compiled into an [`Authenticator`];
//!   the authenticators that apply to one workload merge ([`Authenticator::merged`]).
//! - [`Authenticator::authenticate`]: the token located per its rule (by default
//!   `Authorization: Bearer <token>` or the query parameter `access_token`), its
//!   `iss` picking the rule, its signature checked with a key of the rule's JWKS
//!   (`kid` picks the key, keys without a `kid` tried too; a token without one tries
//!   every key of the algorithm's type),
//!   then `exp`/`nbf` (60 s of clock skew, against a time passed in) and `aud`.
//! - [`KeySet`]: a JWKS's usable keys (RSA, EC P-256/P-384, OKP Ed25519); a
//!   [`JwksCache`] holds a fetched one so that a refresh swaps it without a lock.
//!
//! No token is not a failure (a policy decides whether one is required); a token that
//! fails any check is ([`JwtError`]).

mod compile;
mod keys;
mod locate;
mod verify;

#[cfg(any(test, feature = "test-util"))]
pub mod testing;
#[cfg(test)]
mod tests;

pub use compile::{compile, Authenticator, ClaimHeader, CompiledRule, KeySource, OPENID_CONFIGURATION};
pub use keys::{JwksCache, Key, KeySet};
pub use locate::{Location, TokenSources};
pub use verify::{Outcome, RemoteKeys, MAX_TOKEN_BYTES};

/// Why a token was refused. The client only ever sees `401 Jwt verification fails`;
/// these are for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the token is over {} bytes", MAX_TOKEN_BYTES)]
    TooLarge,
    #[error("the token is not a JWS in compact form (header.payload.signature)")]
    Malformed,
    #[error("the token's header is not valid or names an unsupported algorithm (alg none and HMAC are refused)")]
    BadHeader,
    #[error("the token's payload is not a JSON object")]
    BadPayload,
    #[error("the token's issuer is not one a RequestAuthentication trusts")]
    UnknownIssuer,
    #[error("the issuer's keys (jwksUri) have not been fetched yet")]
    KeysNotFetched,
    #[error("no key of the issuer's JWKS matches the token's kid and algorithm")]
    NoMatchingKey,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("a token is required (presence: REQUIRED)")]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token's exp, nbf or aud claim has the wrong type")]
    BadClaim,
    #[error("the token's audience is not one the rule accepts")]
    Audience,
}
