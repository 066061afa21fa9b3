//! A response body compressed as it streams.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use weft_config::Encoding;

use crate::filters::BoxError;

/// brotli's window: 2^18 = 256 KiB (Envoy's default). The library's default (2^22)
/// would hold 4 MiB per response in flight.
const BROTLI_LGWIN: u32 = 18;
/// zstd's window: 2^20 = 1 MiB, well under the 8 MiB every decoder must accept
/// (RFC 8878 §3.1.1.1.2) and half of what level 3 picks for large inputs.
const ZSTD_WINDOW_LOG: u32 = 20;

/// One codec writing into a `Vec` that the body drains after every write.
enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    fn new(enc: Encoding, level: i32) -> std::io::Result<Encoder> {
        Ok(match enc {
            Encoding::Gzip => {
                let level = flate2::Compression::new(level.clamp(1, 9) as u32);
                Encoder::Gzip(flate2::write::GzEncoder::new(Vec::new(), level))
            }
            Encoding::Brotli => {
                Encoder::Brotli(Box::new(brotli::CompressorWriter::new(Vec::new(), 4096, level.clamp(0, 11) as u32, BROTLI_LGWIN)))
            }
            Encoding::Zstd => {
                let mut z = zstd::stream::write::Encoder::new(Vec::new(), level.clamp(1, 22))?;
                z.window_log(ZSTD_WINDOW_LOG)?;
                Encoder::Zstd(z)
            }
        })
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(data),
            Encoder::Brotli(e) => e.write_all(data),
            Encoder::Zstd(e) => e.write_all(data),
        }
    }

    /// A sync flush: everything written so far becomes decodable by the client.
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Brotli(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }

    /// The compressed bytes produced so far, taken out of the encoder's buffer.
    fn take(&mut self) -> Vec<u8> {
        std::mem::take(match self {
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Brotli(e) => e.get_mut(),
            Encoder::Zstd(e) => e.get_mut(),
        })
    }

    /// The final block (and the gzip trailer).
    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Brotli(e) => Ok(e.into_inner()),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

pin_project_lite::pin_project! {
    /// `inner` compressed with one coding, frame by frame: each data frame is fed to the
    /// encoder and whatever output exists leaves at once, so memory stays at the
    /// codec's window plus one frame. When `inner` has nothing ready (`Pending`) the
    /// encoder is flushed, so a slow stream (server-sent events, long polls) reaches the
    /// client event by event; a fast one, whose frames are ready back to back, is
    /// compressed in big blocks (no flush per frame, which costs ratio). Trailers
    /// follow the final block.
    pub struct CompressBody<B> {
        #[pin]
        inner: B,
        encoder: Option<Encoder>,
        // Written since the last flush.
        dirty: bool,
        trailers: Option<HeaderMap>,
        done: bool,
    }
}

impl<B> CompressBody<B> {
    /// Falls back to level defaults it cannot build (never, for levels config validated).
    pub fn new(inner: B, enc: Encoding, level: i32) -> CompressBody<B> {
        let encoder = Encoder::new(enc, level).or_else(|_| Encoder::new(enc, enc.default_level())).ok();
        CompressBody { inner, encoder, dirty: false, trailers: None, done: false }
    }
}

fn data(v: Vec<u8>) -> Frame<Bytes> {
    Frame::data(Bytes::from(v))
}

impl<B> Body for CompressBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            if *this.done {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            let Some(encoder) = this.encoder.as_mut() else {
                *this.done = true;
                return Poll::Ready(Some(Err("the compressor could not start".into())));
            };
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Pending => {
                    if !*this.dirty {
                        return Poll::Pending;
                    }
                    *this.dirty = false;
                    if let Err(e) = encoder.flush() {
                        return fail(this.encoder, this.done, e.into());
                    }
                    let out = encoder.take();
                    // The inner body's waker is registered: handing out a frame now is safe.
                    return if out.is_empty() { Poll::Pending } else { Poll::Ready(Some(Ok(data(out)))) };
                }
                Poll::Ready(Some(Err(e))) => return fail(this.encoder, this.done, e.into()),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(chunk) => {
                        if chunk.is_empty() {
                            continue;
                        }
                        if let Err(e) = encoder.write(&chunk) {
                            return fail(this.encoder, this.done, e.into());
                        }
                        *this.dirty = true;
                        let out = encoder.take();
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(data(out))));
                        }
                        continue;
                    }
                    Err(frame) => {
                        // Trailers end the body: the final block goes first.
                        *this.trailers = frame.into_trailers().ok();
                    }
                },
                Poll::Ready(None) => {}
            }
            // The end (or trailers): the final block, then the trailers if any.
            *this.done = true;
            match this.encoder.take().map(Encoder::finish) {
                Some(Ok(last)) if !last.is_empty() => return Poll::Ready(Some(Ok(data(last)))),
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                _ => {}
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// An error ends the body: the encoder is dropped, nothing more is sent.
fn fail(encoder: &mut Option<Encoder>, done: &mut bool, e: BoxError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    *done = true;
    encoder.take();
    Poll::Ready(Some(Err(e)))
}

#[cfg(test)]
#[path = "body_tests.rs"]
mod tests;
