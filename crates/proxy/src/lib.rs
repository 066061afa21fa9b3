//! weft's data plane: `weft proxy`.
//!
//! Layout: [`server`] accepts and speaks HTTP/1.1 and h2c; [`handler`] routes each
//! request through the live [`state`] snapshot to a [`cluster`] endpoint over a
//! [`pool`]ed connection; [`admin`] serves metrics and state; [`run`] wires workers,
//! the admin runtime, live reload and draining together.

pub mod access_log;
pub mod admin;
pub mod body;
pub mod breaker;
pub mod cluster;
pub mod docs;
pub mod error;
pub mod filters;
pub mod finish;
pub mod follow;
pub mod h1client;
pub mod handler;
pub mod hashkey;
pub mod headers;
pub mod health;
pub mod idle;
pub mod local;
pub mod mirror;
pub mod outlier;
pub mod pool;
pub mod replay;
pub mod retry;
mod run;
pub mod server;
pub mod state;
pub mod tunnel;

pub use run::{run, ProxyOptions};
