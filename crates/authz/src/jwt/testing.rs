//! Keys and tokens for tests and benches (feature `test-util`): keys generated with
//! aws-lc-rs, tokens signed here without going through the verifier's code.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

enum Private {
    Rsa(RsaKeyPair),
    Ec { key: EcdsaKeyPair, crv: &'static str, alg: &'static str },
    Ed(Ed25519KeyPair),
}

/// A freshly generated signing key and its `kid`.
pub struct TestKey {
    key: Private,
    pub kid: String,
}

impl TestKey {
    pub fn rsa(kid: &str) -> TestKey {
        let key = RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key");
        TestKey { key: Private::Rsa(key), kid: kid.into() }
    }

    pub fn es256(kid: &str) -> TestKey {
        let key = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).expect("EC key");
        TestKey { key: Private::Ec { key, crv: "P-256", alg: "ES256" }, kid: kid.into() }
    }

    pub fn es384(kid: &str) -> TestKey {
        let key = EcdsaKeyPair::generate(&signature::ECDSA_P384_SHA384_FIXED_SIGNING).expect("EC key");
        TestKey { key: Private::Ec { key, crv: "P-384", alg: "ES384" }, kid: kid.into() }
    }

    pub fn ed25519(kid: &str) -> TestKey {
        TestKey { key: Private::Ed(Ed25519KeyPair::generate().expect("Ed25519 key")), kid: kid.into() }
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        match &self.key {
            Private::Rsa(k) => {
                let p = k.public_key();
                json!({"kty": "RSA", "kid": self.kid, "use": "sig",
                       "n": b64(p.modulus().big_endian_without_leading_zero()),
                       "e": b64(p.exponent().big_endian_without_leading_zero())})
            }
            Private::Ec { key, crv, .. } => {
                let point = key.public_key().as_ref();
                let half = (point.len() - 1) / 2;
                json!({"kty": "EC", "kid": self.kid, "crv": crv,
                       "x": b64(&point[1..1 + half]), "y": b64(&point[1 + half..])})
            }
            Private::Ed(k) => json!({"kty": "OKP", "kid": self.kid, "crv": "Ed25519", "x": b64(k.public_key().as_ref())}),
        }
    }

    /// The algorithm this key signs with by default.
    pub fn default_alg(&self) -> &'static str {
        match &self.key {
            Private::Rsa(_) => "RS256",
            Private::Ec { alg, .. } => alg,
            Private::Ed(_) => "EdDSA",
        }
    }

    /// A token with `claims`, signed with the key's default algorithm and its `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with(&json!({"alg": self.default_alg(), "kid": self.kid, "typ": "JWT"}), claims)
    }

    /// A token with this exact header (its `alg` chooses the RSA padding and hash).
    pub fn sign_with(&self, header: &Value, claims: &Value) -> String {
        let signed = format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let rng = SystemRandom::new();
        let sig = match &self.key {
            Private::Rsa(k) => {
                let padding: &'static dyn signature::RsaEncoding = match header["alg"].as_str() {
                    Some("RS384") => &signature::RSA_PKCS1_SHA384,
                    Some("RS512") => &signature::RSA_PKCS1_SHA512,
                    Some("PS256") => &signature::RSA_PSS_SHA256,
                    Some("PS384") => &signature::RSA_PSS_SHA384,
                    Some("PS512") => &signature::RSA_PSS_SHA512,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(padding, &rng, signed.as_bytes(), &mut sig).expect("RSA signature");
                sig
            }
            Private::Ec { key, .. } => key.sign(&rng, signed.as_bytes()).expect("EC signature").as_ref().to_vec(),
            Private::Ed(k) => k.sign(signed.as_bytes()).as_ref().to_vec(),
        };
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

/// A JWKS (as the JSON string `jwks` takes) of these keys' public halves.
pub fn jwks(keys: &[&TestKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
}
