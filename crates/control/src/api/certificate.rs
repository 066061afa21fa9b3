//! `POST /v1/certificate`: a workload's CSR signed by the mesh CA for the SPIFFE ID its
//! token names, nothing else; a counted (bootstrap) token pays one use per certificate.

use http::{Method, StatusCode};
use weft_api::{CertificateAnswer, CertificateRequest};

use super::{bad, error, json_reply, Resp, Server};
use crate::auth::{Principal, Refused};
use crate::token_uses::SpendError;

impl Server {
    /// The SPIFFE ID of a workload caller (with a CA to name its trust domain).
    pub(super) fn identity_of(&self, who: &Principal) -> Option<String> {
        let (Some(ca), Principal::Workload { namespace, service_account, .. }) = (&self.ca, who) else { return None };
        weft_tls::SpiffeId::new(ca.trust_domain(), namespace, service_account).ok().map(|id| id.to_string())
    }

    /// Signs a workload's CSR for the SPIFFE ID its token names, nothing else.
    pub(super) async fn certificate(&self, who: &Principal, req: &CertificateRequest) -> Resp {
        let (Some(ca), Principal::Workload { namespace, service_account, id, uses, exp }) = (&self.ca, who) else {
            return bad("this control plane issues no certificates (it runs --insecure, or the caller is no workload)");
        };
        let expected = match weft_tls::SpiffeId::new(ca.trust_domain(), namespace, service_account) {
            Ok(e) => e,
            Err(e) => return bad(format!("the token's workload is no SPIFFE identity: {e}")),
        };
        // (A spent token is refused before the CA does any work for it.)
        if let Some(uses) = uses {
            if self.plane.lock().await.token_spent(id, *uses) {
                self.refused_csrs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let m = format!("token {id} has had its {uses} certificate(s): a bootstrap token is not replayed");
                return self.refuse(Refused::Forbidden(m), &Method::POST, "/v1/certificate");
            }
        }
        let ttl = req.ttl_ms.map(std::time::Duration::from_millis).unwrap_or(weft_tls::ca::DEFAULT_CERT_TTL);
        let signed = ca.sign_csr(&req.csr, &expected, ttl);
        // A counted (bootstrap) token pays for a certificate only once the CSR was good,
        // in the store, so that control planes sharing it count the same uses.
        if let (Ok(_), Some(uses)) = (&signed, uses) {
            let mut p = self.plane.lock().await;
            let spent = retrying!(p.spend_token(&who.name(), id, *uses, *exp, crate::auth::now_s()).await);
            let current = p.revision();
            drop(p);
            self.revision.send_if_modified(|r| std::mem::replace(r, current) != current);
            match spent {
                Ok(rev) => self.published(&Some(rev)),
                Err(SpendError::Refused(m)) => {
                    self.refused_csrs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return self.refuse(Refused::Forbidden(m), &Method::POST, "/v1/certificate");
                }
                Err(SpendError::Plane(e)) => return error(e),
            }
        }
        match signed {
            Ok(c) => {
                let not_after = c.not_after.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                tracing::info!("issued {expected} (serial {}, token {id}) until unix {not_after}", c.serial);
                self.issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let answer = CertificateAnswer {
                    identity: expected.to_string(),
                    cert_pem: c.leaf_pem,
                    chain_pem: c.chain_pem,
                    roots_pem: c.roots_pem,
                    not_after,
                };
                json_reply(StatusCode::OK, &answer)
            }
            Err(e) => {
                tracing::warn!("refused a CSR from workload {namespace}/{service_account} (token {id}): {e}");
                self.refused_csrs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                bad(format!("certificate refused: {e}"))
            }
        }
    }
}
