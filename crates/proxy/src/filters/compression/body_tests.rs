use super::*;
use http_body_util::BodyExt;
use std::collections::VecDeque;
use std::io::Read;

/// What the test body yields, step by step.
enum Step {
    Data(Vec<u8>),
    Pending,
    Trailers,
    Fail,
}

struct Script(VecDeque<Step>);

impl Body for Script {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.0.pop_front() {
            None => Poll::Ready(None),
            Some(Step::Data(d)) => Poll::Ready(Some(Ok(Frame::data(Bytes::from(d))))),
            Some(Step::Pending) => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Some(Step::Trailers) => {
                let mut t = HeaderMap::new();
                t.insert("grpc-status", http::HeaderValue::from_static("0"));
                Poll::Ready(Some(Ok(Frame::trailers(t))))
            }
            Some(Step::Fail) => Poll::Ready(Some(Err(std::io::Error::other("upstream reset")))),
        }
    }
}

fn decode(enc: Encoding, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match enc {
        Encoding::Gzip => flate2::read::GzDecoder::new(data).read_to_end(&mut out).map(|_| ()).unwrap(),
        Encoding::Brotli => brotli::Decompressor::new(data, 4096).read_to_end(&mut out).map(|_| ()).unwrap(),
        Encoding::Zstd => out = zstd::stream::decode_all(data).unwrap(),
    }
    out
}

/// Frames as they come out: data chunks and trailers, or the error.
async fn collect(mut b: CompressBody<Script>) -> (Vec<Bytes>, Option<HeaderMap>, Option<BoxError>) {
    let (mut chunks, mut trailers) = (Vec::new(), None);
    while let Some(f) = b.frame().await {
        match f {
            Ok(f) => match f.into_data() {
                Ok(d) => chunks.push(d),
                Err(f) => trailers = f.into_trailers().ok(),
            },
            Err(e) => return (chunks, trailers, Some(e)),
        }
    }
    assert!(b.is_end_stream());
    (chunks, trailers, None)
}

fn text(n: usize) -> Vec<u8> {
    (0..n).map(|i| format!("{{\"id\":{i},\"name\":\"item {i}\"}},")).collect::<String>().into_bytes()
}

#[tokio::test]
async fn each_codec_round_trips_a_multi_frame_body() {
    for enc in Encoding::ALL {
        let plain = text(2000);
        let steps = plain.chunks(1000).map(|c| Step::Data(c.to_vec())).collect();
        let (chunks, trailers, err) = collect(CompressBody::new(Script(steps), enc, enc.default_level())).await;
        assert!(err.is_none() && trailers.is_none());
        let joined: Vec<u8> = chunks.concat();
        assert!(joined.len() < plain.len() / 3, "{enc:?}: {} of {}", joined.len(), plain.len());
        assert_eq!(decode(enc, &joined), plain, "{enc:?}");
    }
}

#[tokio::test]
async fn an_empty_body_is_a_valid_empty_stream() {
    for enc in Encoding::ALL {
        let (chunks, _, err) = collect(CompressBody::new(Script(VecDeque::new()), enc, enc.default_level())).await;
        assert!(err.is_none());
        assert_eq!(decode(enc, &chunks.concat()), b"", "{enc:?}");
    }
}

#[tokio::test]
async fn trailers_follow_the_final_block() {
    for enc in Encoding::ALL {
        let steps = VecDeque::from([Step::Data(text(50)), Step::Trailers]);
        let (chunks, trailers, err) = collect(CompressBody::new(Script(steps), enc, 1.max(enc.default_level()))).await;
        assert!(err.is_none());
        assert_eq!(trailers.unwrap().get("grpc-status").unwrap(), "0");
        assert_eq!(decode(enc, &chunks.concat()), text(50));
    }
}

#[tokio::test]
async fn an_inner_error_propagates_and_ends_the_body() {
    let steps = VecDeque::from([Step::Data(text(10)), Step::Fail, Step::Data(text(10))]);
    let mut b = CompressBody::new(Script(steps), Encoding::Gzip, 6);
    let (_, _, err) = collect_until_error(&mut b).await;
    assert_eq!(err.unwrap().to_string(), "upstream reset");
    assert!(b.frame().await.is_none(), "nothing after the error");
}

async fn collect_until_error(b: &mut CompressBody<Script>) -> (Vec<Bytes>, (), Option<BoxError>) {
    let mut chunks = Vec::new();
    while let Some(f) = b.frame().await {
        match f {
            Ok(f) => chunks.extend(f.into_data().ok()),
            Err(e) => return (chunks, (), Some(e)),
        }
    }
    (chunks, (), None)
}

/// A stream whose source pauses between events gets each event out, decodable, before
/// the next arrives: the flush on `Pending`.
#[tokio::test]
async fn a_slow_stream_is_flushed_event_by_event() {
    for enc in Encoding::ALL {
        let steps =
            VecDeque::from([Step::Data(b"data: one\n\n".to_vec()), Step::Pending, Step::Data(b"data: two\n\n".to_vec()), Step::Pending]);
        let mut b = CompressBody::new(Script(steps), enc, enc.default_level());
        let mut seen = Vec::new();
        let mut prefixes = Vec::new();
        while let Some(f) = b.frame().await {
            seen.extend_from_slice(&f.unwrap().into_data().unwrap());
            prefixes.push(partial_decode(enc, &seen));
        }
        assert!(prefixes.iter().any(|p| p == b"data: one\n\n"), "{enc:?}: the first event was held back: {prefixes:?}");
        assert_eq!(decode(enc, &seen), b"data: one\n\ndata: two\n\n");
    }
}

/// What a streaming decoder can give from an unfinished stream.
fn partial_decode(enc: Encoding, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 64];
    let n = match enc {
        Encoding::Gzip => flate2::read::GzDecoder::new(data).read(&mut out),
        Encoding::Brotli => brotli::Decompressor::new(data, 4096).read(&mut out),
        Encoding::Zstd => zstd::stream::read::Decoder::new(data).and_then(|mut d| d.read(&mut out)),
    }
    .unwrap_or(0);
    out.truncate(n);
    out
}
