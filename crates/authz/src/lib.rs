//! Who may call what, as Istio says it: `AuthorizationPolicy` and
//! `RequestAuthentication` (security.istio.io/v1, v1beta1), and the external
//! authorizers (`ExtensionProvider`, weft's resource for Istio's MeshConfig
//! `extensionProviders`) that `CUSTOM` policies name.
//!
//! - [`spec`]: the resources as serde types, field for field as Istio's YAML;
//! - [`policy`]: a policy compiled into matchers (checked as Istio's validation does,
//!   with field paths), and [`policy::Policies`], a workload's policies evaluated per
//!   request in Istio's order (CUSTOM, DENY, ALLOW; AUDIT aside) against
//!   [`attrs::Attrs`], a borrowed view of the request;
//! - [`jwt`]: a RequestAuthentication's `jwtRules` compiled and a request's JWT
//!   verified into the [`VerifiedJwt`] the policies read;
//!
//! Nothing here does I/O: fetching a `jwksUri` and calling an external authorizer are
//! the proxy's.

pub mod attrs;
pub mod jwt;
pub mod matchers;
pub mod policy;
pub mod scope;
pub mod spec;

pub use attrs::{Attrs, VerifiedJwt};
pub use policy::{Action, CompiledPolicy, Decision, Policies};
pub use scope::Scope;
