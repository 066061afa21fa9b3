//! This proxy's mesh identity, from the control plane's CA: a key made here (it never
//! leaves the process), a CSR for `spiffe://<trust domain>/ns/<namespace>/sa/<service
//! account>`, the signed certificate installed into a [`WorkloadIdentity`] — then renewed
//! at half-life with a fresh key, in place (open connections keep theirs; the next
//! handshake uses the new one). The control plane signs only the identity the proxy's
//! workload token names.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use weft_api::{CertificateAnswer, CertificateRequest, Message};
use weft_tls::{SpiffeId, WorkloadIdentity, WorkloadKey};

use crate::follow::ControlPlane;

/// Retries while renewing: from this, doubling, to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// A key, and the control plane's certificate for it.
async fn request(cp: &ControlPlane, id: &SpiffeId) -> Result<(WorkloadKey, CertificateAnswer), String> {
    let key = WorkloadKey::generate().map_err(|e| e.to_string())?;
    let csr = key.csr(id).map_err(|e| e.to_string())?;
    let body = CertificateRequest { csr, ttl_ms: None }.encode();
    let (status, answer) = crate::follow::call(cp, "/v1/certificate", body, Duration::from_secs(10)).await?;
    if status != 200 {
        return Err(format!("the control plane refused a certificate for {id} ({status}): {}", String::from_utf8_lossy(&answer).trim()));
    }
    let cert = CertificateAnswer::decode(&answer).map_err(|e| e.to_string())?;
    if cert.identity != id.to_string() {
        return Err(format!("the control plane issued {} instead of {id}", cert.identity));
    }
    Ok((key, cert))
}

/// The first certificate: tried until `within` has passed (the control plane may be
/// starting too), then the last reason.
pub async fn obtain(cp: &ControlPlane, id: &SpiffeId, within: Duration) -> Result<Arc<WorkloadIdentity>, String> {
    let deadline = tokio::time::Instant::now() + within;
    let mut wait = Duration::from_millis(100);
    loop {
        let outcome = match request(cp, id).await {
            Ok((key, c)) => WorkloadIdentity::new(id.clone(), &key, &c.cert_pem, &c.chain_pem, &c.roots_pem).map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(identity) => return Ok(Arc::new(identity)),
            // A refusal is final (wrong token, another identity); an unreachable plane is not.
            Err(e) if e.contains("refused a certificate") || tokio::time::Instant::now() + wait >= deadline => return Err(e),
            Err(_) => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Renews `identity` at each half-life, for ever; failures are retried with back-off
/// (the current certificate serves until it expires).
pub async fn renew(cp: ControlPlane, identity: Arc<WorkloadIdentity>, metrics: &'static weft_telemetry::Metrics) {
    let c = &metrics.counters;
    c.identity_expiry.store(unix(identity.expires_at()), std::sync::atomic::Ordering::Relaxed);
    let mut retry = RETRY_MIN;
    loop {
        let due = identity.renew_at().duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
        tokio::time::sleep(due).await;
        let outcome = match request(&cp, identity.id()).await {
            Ok((key, c)) => identity.install(&key, &c.cert_pem, &c.chain_pem, &c.roots_pem).map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                retry = RETRY_MIN;
                c.identity_renewals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                c.identity_expiry.store(unix(identity.expires_at()), std::sync::atomic::Ordering::Relaxed);
                let s = identity.summary();
                tracing::info!("renewed {} (serial {}), valid until {:?}", identity.id(), s.serial, s.not_after);
            }
            Err(e) => {
                tracing::warn!("renewing {}: {e}; retrying in {retry:?}", identity.id());
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
