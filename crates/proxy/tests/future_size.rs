//! The size of the futures every request and every connection carry, held to a bound
//! (as ztunnel asserts its own). hyper moves a request's future into its dispatcher,
//! and each wrapper (timeouts, the idle bound) moves its inner future: a larger future
//! is a larger memcpy on every request, and nothing else would notice it growing.
//!
//! A change that grows one past its bound fails here. If the growth is deliberate (and
//! measured: `scripts/callgrind_per_request.py`), raise the bound to the new size plus
//! a little (about 5 %) and say why in the commit; if not, box the new state off the
//! common path (see "Large futures are boxed off the common path" in ARCHITECTURE.md).

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpStream;
use weft_proxy::graceful::GracefulShutdown;
use weft_proxy::state::Shared;

/// `weft_proxy::phases::handle`'s future, in bytes, as `cargo test` builds it (debug;
/// a release build lays futures out tighter): 2,624 when this bound was first set,
/// 2,752 with per-try trace spans (their state boxed: 8 bytes in the plan, 8 per try).
const REQUEST_FUTURE_MAX: usize = 2_780;
/// `weft_proxy::server::connection`'s future over a TCP stream (hyper's connection
/// state is most of it), in bytes: 3,464 when this bound was set.
const CONNECTION_FUTURE_MAX: usize = 3_640;

/// The size of the future `f` returns, without calling it.
fn returned_size<A, B, F: Future>(_: impl Fn(A, B) -> F) -> usize {
    std::mem::size_of::<F>()
}

#[test]
fn the_request_future_does_not_grow() {
    let size = returned_size(weft_proxy::phases::handle);
    println!("request future: {size} bytes");
    assert!(size <= REQUEST_FUTURE_MAX, "the request future is {size} bytes, over its bound of {REQUEST_FUTURE_MAX}");
}

#[test]
fn the_connection_future_does_not_grow() {
    fn size<F: Future>(
        _: impl Fn(
            &'static Shared,
            &'static weft_proxy::server::Builder,
            &GracefulShutdown,
            TcpStream,
            SocketAddr,
            usize,
            weft_proxy::request::Side,
        ) -> F,
    ) -> usize {
        std::mem::size_of::<F>()
    }
    let size = size(weft_proxy::server::connection::<TcpStream>);
    println!("connection future: {size} bytes");
    assert!(size <= CONNECTION_FUTURE_MAX, "the connection future is {size} bytes, over its bound of {CONNECTION_FUTURE_MAX}");
}
