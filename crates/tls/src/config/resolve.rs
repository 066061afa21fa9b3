//! Certificate selection that reads the identity on every handshake, so a renewed
//! certificate is presented by the next handshake with no config rebuilt.

use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

use crate::identity::WorkloadIdentity;

/// Presents the workload's current certificate, inbound and outbound.
#[derive(Debug)]
pub(crate) struct CurrentCert(pub Arc<WorkloadIdentity>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.credentials().certified.clone())
    }
}

impl ResolvesClientCert for CurrentCert {
    fn resolve(&self, _root_hint_subjects: &[&[u8]], _sigschemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.credentials().certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
