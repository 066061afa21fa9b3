use super::*;
use crate::filters::cache::coalesce::{Coalescer, Role, WaitOutcome};
use crate::filters::cache::store::tests::policy;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

enum Step {
    Data(&'static str),
    Trailers,
    Fail,
}

struct Script(VecDeque<Step>);

impl Body for Script {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(self.0.pop_front().map(|s| match s {
            Step::Data(d) => Ok(Frame::data(Bytes::from_static(d.as_bytes()))),
            Step::Trailers => {
                let mut t = HeaderMap::new();
                t.insert("x-checksum", HeaderValue::from_static("abc"));
                Ok(Frame::trailers(t))
            }
            Step::Fail => Err(std::io::Error::other("reset")),
        }))
    }
}

fn key() -> PrimaryKey {
    PrimaryKey::new("web", &"/a".parse().unwrap())
}

fn pending(store: &Arc<CacheStore>, leader: Option<LeaderGuard>, resp: &[(&'static str, &'static str)]) -> Pending {
    let mut h = HeaderMap::new();
    h.insert("cache-control", HeaderValue::from_static("max-age=60"));
    for (k, v) in resp {
        h.insert(*k, HeaderValue::from_static(v));
    }
    let now = SystemTime::now();
    let head = Entry::new(StatusCode::OK, h, Bytes::new(), None, now, now, &HeaderMap::new()).unwrap();
    Pending { store: store.clone(), key: key(), head, leader }
}

async fn drain(mut b: FillBody<Script>) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    while let Some(f) = b.frame().await {
        match f {
            Ok(f) => out.extend_from_slice(f.data_ref().map_or(&b""[..], |d| &d[..])),
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

fn store(max_entry: u64) -> Arc<CacheStore> {
    Arc::new(CacheStore::new(&policy(1 << 20, max_entry)))
}

#[tokio::test]
async fn a_whole_body_is_inserted() {
    let s = store(100);
    let body = Script(VecDeque::from([Step::Data("hel"), Step::Data(""), Step::Data("lo")]));
    let (out, failed) = drain(FillBody::new(body, pending(&s, None, &[]))).await;
    assert_eq!((out.as_slice(), failed), (&b"hello"[..], false));
    assert_eq!(s.lookup(&key(), &HeaderMap::new()).unwrap().body, "hello");
}

#[tokio::test]
async fn a_response_with_trailers_streams_through_unstored() {
    // A cached answer could not send the trailers, so such a response is not kept.
    let s = store(100);
    let body = Script(VecDeque::from([Step::Data("x"), Step::Trailers]));
    let (out, failed) = drain(FillBody::new(body, pending(&s, None, &[]))).await;
    assert_eq!((out.as_slice(), failed), (&b"x"[..], false));
    assert!(s.lookup(&key(), &HeaderMap::new()).is_none());
}

#[tokio::test]
async fn an_error_or_an_abort_inserts_nothing() {
    let s = store(100);
    let body = Script(VecDeque::from([Step::Data("part"), Step::Fail]));
    let (out, failed) = drain(FillBody::new(body, pending(&s, None, &[]))).await;
    assert_eq!((out.as_slice(), failed), (&b"part"[..], true));
    assert!(s.lookup(&key(), &HeaderMap::new()).is_none());

    // The client goes away after the first frame: the body is dropped mid-way.
    let body = Script(VecDeque::from([Step::Data("part"), Step::Data("rest")]));
    let mut b = FillBody::new(body, pending(&s, None, &[]));
    assert!(b.frame().await.is_some());
    drop(b);
    assert!(s.lookup(&key(), &HeaderMap::new()).is_none());
}

#[tokio::test]
async fn a_larger_body_streams_through_uncached_and_releases_waiters_early() {
    let s = store(4);
    let c = Coalescer::new();
    let Role::Leader(guard) = c.join(&key()) else { panic!() };
    let Role::Waiter(flight) = c.join(&key()) else { panic!() };
    let body = Script(VecDeque::from([Step::Data("abc"), Step::Data("def"), Step::Data("ghi")]));
    let mut b = FillBody::new(body, pending(&s, Some(guard), &[]));
    b.frame().await;
    b.frame().await; // past the limit: the guard goes
    assert_eq!(flight.wait(Duration::from_millis(1)).await, WaitOutcome::Done);
    let (rest, _) = drain(b).await;
    assert_eq!(rest, b"ghi");
    assert!(s.lookup(&key(), &HeaderMap::new()).is_none());

    // A declared Content-Length over the limit is not copied at all.
    let body = Script(VecDeque::from([Step::Data("abcdef")]));
    let (out, _) = drain(FillBody::new(body, pending(&s, None, &[("content-length", "6")]))).await;
    assert_eq!(out, b"abcdef");
    assert!(s.lookup(&key(), &HeaderMap::new()).is_none());
}

/// The leader's waiters find the entry: the guard goes only after the insert.
#[tokio::test]
async fn waiters_find_the_leaders_entry() {
    let s = store(100);
    let c = Coalescer::new();
    let Role::Leader(guard) = c.join(&key()) else { panic!() };
    let Role::Waiter(flight) = c.join(&key()) else { panic!() };
    let body = Script(VecDeque::from([Step::Data("hello")]));
    let waiter = tokio::spawn({
        let s = s.clone();
        async move {
            assert_eq!(flight.wait(Duration::from_secs(5)).await, WaitOutcome::Done);
            s.lookup(&key(), &HeaderMap::new()).map(|e| e.body.clone())
        }
    });
    drain(FillBody::new(body, pending(&s, Some(guard), &[]))).await;
    assert_eq!(waiter.await.unwrap().unwrap(), "hello");
}
