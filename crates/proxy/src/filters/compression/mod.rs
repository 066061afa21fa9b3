//! `kind: Compression`: which coding a client gets ([`negotiate`]), whether a response
//! is compressed at all ([`should_compress`]), the response head's edit
//! ([`edit_response_head`]) and the streaming body ([`CompressBody`]).
//!
//! A filter does, per response:
//! ```text
//! if let Some(enc) = negotiate(req.headers(), &policy.encodings) {
//!     if should_compress(policy, req.method(), req.headers(), resp.status(), resp.headers()) {
//!         edit_response_head(resp.headers_mut(), enc);
//!         body = CompressBody::new(body, enc, policy.levels.get(enc));
//!     }
//! }
//! ```

mod body;
mod decide;
mod filter;
mod negotiate;

pub use body::CompressBody;
pub use decide::{edit_response_head, should_compress};
pub use filter::Compression;
pub use negotiate::negotiate;
pub use weft_config::{CompressionPolicy, Encoding};
