//! One crypto provider, aws-lc-rs, for every config this crate builds. Configs name it
//! explicitly (so they never depend on a process default), and `main` installs it as the
//! default too, for the libraries that build their own configs: two providers compiled in
//! with no default make `ServerConfig::builder()` panic.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

/// Installs aws-lc-rs as the process-wide rustls provider. Call at the start of `main`;
/// calling again (or after another part of the process installed it) does nothing.
pub fn install_crypto_provider() {
    if CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: a provider is installed either way.
        let _ = CryptoProvider::install_default((*provider()).clone());
    }
}

/// The aws-lc-rs provider, shared by every config.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())).clone()
}
