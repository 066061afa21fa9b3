//! The server name (SNI) of a TLS ClientHello, read without a TLS library: the
//! passthrough routes ([`crate::passthrough`]) pick a destination by it and forward the
//! bytes unread. The ClientHello may come in several handshake records (a large one —
//! many cipher suites, a post-quantum key share — or a client that fragments):
//! [`HelloAssembler`] joins their fragments, up to [`MAX_CLIENT_HELLO`] bytes in at
//! most [`MAX_HELLO_RECORDS`] records (Envoy's TLS inspector also stops at 64 KiB).
//! Untrusted input: every length is bounds-checked, and anything malformed is `None`.

/// A TLS record header: content type 22 (handshake), then version and length.
pub const RECORD_HEADER: usize = 5;
/// The largest TLS plaintext record.
pub const MAX_RECORD: usize = 16 * 1024;

/// The record's length when `header` starts a handshake record, else `None`.
pub fn handshake_record_len(header: &[u8; RECORD_HEADER]) -> Option<usize> {
    let len = u16::from_be_bytes([header[3], header[4]]) as usize;
    (header[0] == 0x16 && header[1] == 3 && (1..=MAX_RECORD).contains(&len)).then_some(len)
}

/// The largest ClientHello read (its handshake message, header included).
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;
/// The most records a ClientHello may be spread over (64 KiB in full records is 4).
pub const MAX_HELLO_RECORDS: usize = 16;

/// A ClientHello handshake message gathered from the records' fragments.
#[derive(Default)]
pub struct HelloAssembler {
    message: Vec<u8>,
    records: usize,
}

/// What the record just added made of the ClientHello.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Whole: [`HelloAssembler::message`] holds it.
    Done,
    /// It goes on in the next record.
    More,
    /// Not a ClientHello, too large, or in too many records.
    Invalid,
}

impl HelloAssembler {
    /// Adds one handshake record's fragment (the bytes after its header).
    pub fn push(&mut self, fragment: &[u8]) -> Progress {
        self.records += 1;
        self.message.extend_from_slice(fragment);
        let Some(head) = self.message.get(..4) else {
            return if self.records < MAX_HELLO_RECORDS { Progress::More } else { Progress::Invalid };
        };
        let len = 4 + ((head[1] as usize) << 16 | (head[2] as usize) << 8 | head[3] as usize);
        if head[0] != 1 || len > MAX_CLIENT_HELLO {
            return Progress::Invalid;
        }
        match self.message.len() {
            n if n == len => Progress::Done,
            // A ClientHello is the client's whole first flight: nothing may follow it.
            n if n > len => Progress::Invalid,
            _ if self.records >= MAX_HELLO_RECORDS => Progress::Invalid,
            _ => Progress::More,
        }
    }

    /// The ClientHello handshake message (type, length, body), once [`Progress::Done`].
    pub fn message(&self) -> &[u8] {
        &self.message
    }
}

/// The host name in a ClientHello handshake message (type and length included).
pub fn client_hello_sni(message: &[u8]) -> Option<&str> {
    let mut r = Reader(message);
    if r.u8()? != 1 {
        return None; // not a ClientHello
    }
    let len = r.u24()?;
    let mut hello = Reader(r.take(len)?);
    hello.take(2 + 32)?; // legacy_version, random
    let n = hello.u8()? as usize;
    hello.take(n)?; // session id
    let n = hello.u16()? as usize;
    hello.take(n)?; // cipher suites
    let n = hello.u8()? as usize;
    hello.take(n)?; // compression methods
    let n = hello.u16()? as usize;
    let mut exts = Reader(hello.take(n)?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let n = exts.u16()? as usize;
        let data = exts.take(n)?;
        if kind == 0 {
            let mut list = Reader(data);
            let n = list.u16()? as usize;
            let mut names = Reader(list.take(n)?);
            while !names.0.is_empty() {
                let name_type = names.u8()?;
                let n = names.u16()? as usize;
                let name = names.take(n)?;
                if name_type == 0 {
                    let s = std::str::from_utf8(name).ok()?;
                    return s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.').then_some(s);
                }
            }
            return None;
        }
    }
    None
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Option<usize> {
        let b = self.take(3)?;
        Some((b[0] as usize) << 16 | (b[1] as usize) << 8 | b[2] as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ClientHello record with `ext` as its extensions.
    fn hello(ext: &[u8]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(ext);
        let mut hs = vec![1];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    fn sni_ext(name: &[u8]) -> Vec<u8> {
        let mut list = vec![0];
        list.extend_from_slice(&(name.len() as u16).to_be_bytes());
        list.extend_from_slice(name);
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&list);
        let mut ext = vec![0, 0];
        ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
        ext.extend_from_slice(&data);
        ext
    }

    #[test]
    fn finds_the_sni_after_other_extensions() {
        let mut ext = vec![0, 0x2b, 0, 3, 2, 3, 4]; // supported_versions first
        ext.extend(sni_ext(b"a.example"));
        let rec = hello(&ext);
        assert_eq!(handshake_record_len(rec[..5].try_into().unwrap()), Some(rec.len() - 5));
        assert_eq!(client_hello_sni(&rec[5..]), Some("a.example"));
    }

    #[test]
    fn a_client_hello_split_over_records_is_joined() {
        let rec = hello(&sni_ext(b"split.example"));
        let message = &rec[RECORD_HEADER..];
        for size in [1, 3, 7, 40] {
            let mut a = HelloAssembler::default();
            let chunks: Vec<&[u8]> = message.chunks(size).collect();
            let mut last = Progress::More;
            for (i, c) in chunks.iter().enumerate() {
                last = a.push(c);
                if i + 1 < chunks.len() && chunks.len() <= MAX_HELLO_RECORDS {
                    assert_eq!(last, Progress::More, "chunk {i} of {size}");
                }
                if last != Progress::More {
                    break;
                }
            }
            if chunks.len() <= MAX_HELLO_RECORDS {
                assert_eq!(last, Progress::Done, "in chunks of {size}");
                assert_eq!(client_hello_sni(a.message()), Some("split.example"));
            } else {
                assert_eq!(last, Progress::Invalid, "{} records are too many", chunks.len());
            }
        }
    }

    #[test]
    fn a_hostile_hello_is_refused_early() {
        // Declares 16 MiB: refused at the first record, nothing more is read.
        assert_eq!(HelloAssembler::default().push(&[1, 0xff, 0xff, 0xff, 0]), Progress::Invalid);
        // Not a ClientHello (a ServerHello).
        assert_eq!(HelloAssembler::default().push(&[2, 0, 0, 1, 0]), Progress::Invalid);
        // More than the message: something follows the ClientHello in its flight.
        assert_eq!(HelloAssembler::default().push(&[1, 0, 0, 1, 0, 9]), Progress::Invalid);
        // Empty records forever: stopped at the record limit.
        let mut a = HelloAssembler::default();
        let outcomes: Vec<Progress> = (0..MAX_HELLO_RECORDS).map(|_| a.push(&[])).collect();
        assert_eq!(outcomes.last(), Some(&Progress::Invalid));
    }

    #[test]
    fn malformed_or_absent_is_none() {
        assert_eq!(client_hello_sni(&hello(&[])[5..]), None);
        assert_eq!(client_hello_sni(&hello(&sni_ext(b"bad\nname"))[5..]), None);
        let rec = hello(&sni_ext(b"a.example"));
        for cut in RECORD_HEADER..rec.len() {
            assert_eq!(client_hello_sni(&rec[RECORD_HEADER..cut]), None, "cut at {cut}");
        }
        assert_eq!(handshake_record_len(&[0x47, 0x45, 0x54, 0x20, 0x2f]), None, "GET /");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = client_hello_sni(&bytes);
        }
    }
}
