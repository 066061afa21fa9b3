//! placeholder, written last
#![forbid(unsafe_code)]

pub mod ca;
pub mod config;
pub mod identity;
pub mod pem;
mod provider;
pub mod spiffe;
pub mod workload;
pub mod x509;

pub use provider::install_crypto_provider;
