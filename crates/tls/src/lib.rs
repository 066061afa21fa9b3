//! weft's mesh identity: who a workload is, who vouches for it, and the TLS that proves it.
//!
//! # Trust model
//! - **Identity** is a SPIFFE ID, `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`
//!   ([`spiffe::SpiffeId`]), carried as the one URI SAN of a short-lived X.509 certificate
//!   (24 h by default, 10 min to 30 days).
//! - **The mesh CA** ([`ca::Ca`]) runs in the control plane. It signs proxies' CSRs; the
//!   caller (the control plane) decides which identity a proxy may have from how it
//!   authenticated (a bootstrap token bound to a namespace and service account, later its
//!   current certificate), and the CA refuses a CSR that asks for anything else. Its files
//!   use Istio's plugged-in CA layout (`root-cert.pem`, `ca-cert.pem`, `ca-key.pem`,
//!   `cert-chain.pem`): generated on first start (a self-signed ECDSA P-256 root, ten
//!   years), or an operator's root and intermediate, used as they are.
//! - **The private key never leaves the proxy**: a proxy makes a key
//!   ([`workload::WorkloadKey`]), sends a CSR, and installs the answer into its
//!   [`identity::WorkloadIdentity`], which checks it (right identity, right key, valid now,
//!   chains to the bundle) before swapping it in. Renew at [`identity::WorkloadIdentity::renew_at`]
//!   (half-life) with a new key; open connections are not touched.
//! - **What is trusted** is the root bundle, which may hold several roots. To rotate the
//!   root: add the new root to `root-cert.pem` and restart the CA so every proxy's bundle
//!   holds both; then switch `ca-cert.pem`/`ca-key.pem` to the new root (or an
//!   intermediate under it); once every certificate from the old root has expired, remove
//!   the old root from the bundle.
//!
//! # TLS
//! [`config::server_config`] (inbound) and [`config::client_config`] (outbound,
//! `ISTIO_MUTUAL`) build rustls configs once; certificate and bundle are read from the
//! identity on every handshake, so rotation needs no rebuild. Mesh TLS is 1.3 only, with
//! ALPN `h2` then `http/1.1`, session tickets and a bounded client session cache.
//! [`config::peer_identity`] reads the peer's SPIFFE ID after a handshake. The control
//! plane's own HTTPS certificate comes from [`ca::Ca::issue_server_cert`], and its API's
//! configs from [`config::control_plane_server_config`] (proxies known by their
//! certificate, CLI users with none) and [`config::control_plane_client_config`] (server
//! verified by name against the mesh root).
//!
//! aws-lc-rs is the one crypto provider: call [`install_crypto_provider`] at the start of
//! `main`.

#![forbid(unsafe_code)]

pub mod ca;
pub mod config;
pub mod identity;
pub mod pem;
mod provider;
pub mod spiffe;
pub mod workload;
pub mod x509;

pub use ca::{Ca, CaError, IssuedCert};
pub use config::{client_config, peer_identity, server_config, ClientAuth};
pub use identity::{IdentityError, WorkloadIdentity};
pub use provider::install_crypto_provider;
pub use spiffe::SpiffeId;
pub use workload::WorkloadKey;
pub use x509::CertSummary;
