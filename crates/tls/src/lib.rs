//! placeholder, written last
#![forbid(unsafe_code)]

pub mod ca;
pub mod pem;
pub mod spiffe;
pub mod x509;
