//! weft's data plane: `weft proxy`.
//!
//! Layout: [`server`] accepts and speaks HTTP/1.1 and h2c; [`phases`] drive each
//! request — route through the live [`state`] snapshot, the route's [`filters`], then
//! forward to a [`cluster`] endpoint over a [`pool`]ed connection (opened by the
//! [`transport`]); the inbound listener terminates mTLS ([`inbound_tls`]) and passes the
//! [`peer`]'s identity to the app; an ingress gateway (`weft gateway`) adds a TLS
//! listener whose SNI picks the Gateway server ([`gateway_tls`]); [`dns`] answers the
//! mesh's names (`--dns`); [`admin`] serves metrics and state ([`influx`] pushes them); [`run`] wires workers, the admin
//! runtime, the config source, live reload and draining together. Tests run the proxy
//! in-process on a simulated clock (`testing`, in test builds only).

pub mod access_log;
pub mod admin;
pub mod body;
pub mod breaker;
pub mod cluster;
mod cp_pool;
pub mod discovery;
pub mod dns;
pub mod docs;
pub mod error;
pub mod ext_authz;
pub mod filters;
pub mod finish;
pub mod follow;
pub mod gateway_tls;
pub mod graceful;
pub mod h1client;
pub mod hashkey;
pub mod headers;
pub mod health;
pub mod identity;
pub mod idle;
pub mod inbound_tls;
pub mod incremental;
pub mod influx;
pub mod intercept;
pub mod jwks;
pub mod live;
pub mod local;
pub mod mesh_tls;
pub mod mirror;
pub mod netns;
pub mod normalize;
pub mod outlier;
pub mod passthrough;
pub mod peer;
pub mod phases;
pub mod pool;
pub mod replay;
pub mod report;
pub mod request;
pub mod rewind;
mod run;
pub mod server;
pub mod sni;
pub mod state;
pub mod tcp;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
mod tls_origin;
pub mod trace;
pub mod transport;
pub mod tunnel;
pub mod watchdog;

pub use dns::DnsSockets;
pub use run::{build_shared, run, ProxyOptions, DEFAULT_MAX_CONNECTIONS};
