//! Filling the cache from a response as it streams to the client.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http_body::{Body, Frame, SizeHint};

use super::coalesce::LeaderGuard;
use super::key::PrimaryKey;
use super::store::{CacheStore, Entry};

/// What the entry needs besides its body: where it goes and its head (an [`Entry`]
/// with an empty body, made with [`Entry::new`] when the response head arrived).
#[derive(Debug)]
pub struct Pending {
    pub store: Arc<CacheStore>,
    pub key: PrimaryKey,
    pub head: Entry,
    /// The coalescing leader's guard, dropped once the entry is in (or abandoned), so
    /// that waiters find it.
    pub leader: Option<LeaderGuard>,
}

pin_project_lite::pin_project! {
    /// `inner` passed through frame by frame, unchanged, while a copy is kept up to the
    /// store's `maxEntryBytes`. Only a body that ends whole — end of stream or trailers,
    /// no error — is inserted. A larger one stops being copied the moment it passes the
    /// limit (and releases coalesced waiters) and streams on uncached; a body dropped
    /// before its end (the client went away) inserts nothing.
    pub struct FillBody<B> {
        #[pin]
        inner: B,
        fill: Option<(Pending, Vec<Bytes>, u64)>,
    }
}

impl<B> FillBody<B> {
    pub fn new(inner: B, pending: Pending) -> FillBody<B> {
        let max = pending.store.max_entry_bytes();
        let declared = pending.head.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|s| s.trim().parse::<u64>().ok());
        let fill = if declared.is_some_and(|n| n > max) { None } else { Some((pending, Vec::new(), 0)) };
        FillBody { inner, fill }
    }
}

fn complete(fill: &mut Option<(Pending, Vec<Bytes>, u64)>, trailers: Option<http::HeaderMap>) {
    let Some((pending, chunks, len)) = fill.take() else { return };
    // A response with trailers is not stored (a cached answer could not send them).
    if trailers.is_some() {
        return;
    }
    // Copied whole, even one chunk: a chunk is a slice of the upstream read buffer, and
    // kept it would pin that buffer (8 KiB or more) for a few bytes the store counted.
    let mut b = BytesMut::with_capacity(len as usize);
    for c in &chunks {
        b.extend_from_slice(c);
    }
    let Pending { store, key, mut head, leader } = pending;
    head.body = b.freeze();
    store.insert(key, head);
    drop(leader); // after the insert: waiters must find the entry
}

impl<B: Body<Data = Bytes>> Body for FillBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Pending => {}
            Poll::Ready(None) => complete(this.fill, None),
            Poll::Ready(Some(Err(_))) => *this.fill = None,
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(chunk) = frame.data_ref() {
                    if let Some((pending, chunks, len)) = this.fill.as_mut() {
                        *len += chunk.len() as u64;
                        if *len > pending.store.max_entry_bytes() {
                            *this.fill = None;
                        } else if !chunk.is_empty() {
                            chunks.push(chunk.clone());
                        }
                    }
                    // A body that knows it has ended is not polled again (hyper stops at
                    // `is_end_stream`): its last data frame completes it.
                    if this.inner.as_ref().get_ref().is_end_stream() {
                        complete(this.fill, None);
                    }
                } else if let Some(t) = frame.trailers_ref() {
                    complete(this.fill, Some(t.clone()));
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[path = "fill_tests.rs"]
mod tests;
