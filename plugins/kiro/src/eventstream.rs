//! The AWS event-stream binary framing (`application/vnd.amazon.eventstream`) that Kiro answers
//! in: an incremental, hardened [`Decoder`] and an [`encode`] function (used by tests).
//!
//! Frame layout (all integers big-endian): total length (u32), headers length (u32), prelude
//! CRC-32 of the first 8 bytes (u32), headers, payload, message CRC-32 of everything before it
//! (u32). The CRC is plain CRC-32 (IEEE 802.3 / zlib, reflected polynomial `0xEDB88320`).
//!
//! The decoder never panics on any input, checks both CRCs, and bounds memory: a frame whose
//! prelude announces more than [`Decoder::max_frame`] bytes is refused as soon as its 12-byte
//! prelude has arrived, so the buffer never holds more than one frame plus the last chunk.
//! After the first error it stays failed (there is no way to resynchronise a corrupt stream).

use std::fmt;

/// Bytes before the headers: total length, headers length, prelude CRC.
pub const PRELUDE_LEN: usize = 12;
/// The smallest possible frame: prelude plus message CRC, no headers, no payload.
pub const MIN_FRAME_LEN: usize = PRELUDE_LEN + 4;
/// The default frame-size limit: 16 MiB, far above any real Kiro event.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

const CRC_TABLE: [u32; 256] = crc_table();

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

/// CRC-32 (IEEE) of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// A header value, by its wire type code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderValue {
    /// Types 0 (true) and 1 (false).
    Bool(bool),
    /// Type 2.
    Byte(i8),
    /// Type 3.
    Short(i16),
    /// Type 4.
    Int(i32),
    /// Type 5.
    Long(i64),
    /// Type 6: u16 length + bytes.
    Bytes(Vec<u8>),
    /// Type 7: u16 length + UTF-8.
    String(String),
    /// Type 8: ms since the epoch.
    Timestamp(i64),
    /// Type 9: 16 bytes.
    Uuid([u8; 16]),
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub headers: Vec<(String, HeaderValue)>,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The value of a string header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| match v {
                HeaderValue::String(s) => Some(s.as_str()),
                _ => None,
            })
    }
}

/// Why a stream could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The prelude announces fewer bytes than a frame can have.
    FrameTooShort {
        total: u32,
    },
    /// The prelude announces more bytes than the limit.
    FrameTooLarge {
        total: u32,
        limit: usize,
    },
    /// The headers would not fit in the frame.
    HeadersTooLong {
        headers: u32,
        total: u32,
    },
    PreludeCrc {
        expected: u32,
        actual: u32,
    },
    MessageCrc {
        expected: u32,
        actual: u32,
    },
    /// A header is cut short, has an unknown type or a non-UTF-8 name or string.
    BadHeader(String),
    /// The stream ended inside a frame.
    Truncated {
        buffered: usize,
    },
    /// An earlier error: the stream cannot be resynchronised.
    Failed,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FrameTooShort { total } => write!(
                f,
                "frame length {total} is below the minimum of {MIN_FRAME_LEN}"
            ),
            Self::FrameTooLarge { total, limit } => {
                write!(f, "frame length {total} exceeds the limit of {limit} bytes")
            }
            Self::HeadersTooLong { headers, total } => {
                write!(
                    f,
                    "headers length {headers} does not fit in a frame of {total} bytes"
                )
            }
            Self::PreludeCrc { expected, actual } => {
                write!(
                    f,
                    "prelude CRC mismatch (frame says {expected:08x}, computed {actual:08x})"
                )
            }
            Self::MessageCrc { expected, actual } => {
                write!(
                    f,
                    "message CRC mismatch (frame says {expected:08x}, computed {actual:08x})"
                )
            }
            Self::BadHeader(m) => write!(f, "malformed header: {m}"),
            Self::Truncated { buffered } => write!(
                f,
                "stream ended inside a frame ({buffered} bytes left over)"
            ),
            Self::Failed => f.write_str("the stream already failed to decode"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Incremental decoder: [`push`](Decoder::push) bytes as they arrive, then take frames with
/// [`next_frame`](Decoder::next_frame) until it returns `Ok(None)`; call
/// [`finish`](Decoder::finish) at the end of the stream.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
    max: usize,
    failed: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_be_bytes(w)
}

impl Decoder {
    pub fn new(max_frame: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            max: max_frame.max(MIN_FRAME_LEN),
            failed: false,
        }
    }

    pub fn max_frame(&self) -> usize {
        self.max
    }

    /// Bytes received and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed {
            return;
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    fn fail(&mut self, e: DecodeError) -> DecodeError {
        self.failed = true;
        self.buf = Vec::new();
        self.start = 0;
        e
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        if self.failed {
            return Err(DecodeError::Failed);
        }
        let avail = &self.buf[self.start..];
        if avail.len() < PRELUDE_LEN {
            return Ok(None);
        }
        let total = be32(avail, 0);
        let headers_len = be32(avail, 4);
        let prelude_crc = be32(avail, 8);
        let actual = crc32(&avail[..8]);
        if actual != prelude_crc {
            return Err(self.fail(DecodeError::PreludeCrc {
                expected: prelude_crc,
                actual,
            }));
        }
        if (total as usize) < MIN_FRAME_LEN {
            return Err(self.fail(DecodeError::FrameTooShort { total }));
        }
        if total as usize > self.max {
            return Err(self.fail(DecodeError::FrameTooLarge {
                total,
                limit: self.max,
            }));
        }
        if u64::from(headers_len) > u64::from(total) - MIN_FRAME_LEN as u64 {
            return Err(self.fail(DecodeError::HeadersTooLong {
                headers: headers_len,
                total,
            }));
        }
        let total = total as usize;
        if avail.len() < total {
            return Ok(None);
        }
        let frame = &avail[..total];
        let msg_crc = be32(frame, total - 4);
        let actual = crc32(&frame[..total - 4]);
        if actual != msg_crc {
            return Err(self.fail(DecodeError::MessageCrc {
                expected: msg_crc,
                actual,
            }));
        }
        let headers_end = PRELUDE_LEN + headers_len as usize;
        let headers = match parse_headers(&frame[PRELUDE_LEN..headers_end]) {
            Ok(h) => h,
            Err(e) => return Err(self.fail(e)),
        };
        let payload = frame[headers_end..total - 4].to_vec();
        self.start += total;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(Frame { headers, payload }))
    }

    /// At the end of the stream: an error if a partial frame is left over.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.failed {
            return Err(DecodeError::Failed);
        }
        match self.buffered() {
            0 => Ok(()),
            n => Err(DecodeError::Truncated { buffered: n }),
        }
    }
}

fn take<'a>(b: &'a [u8], pos: &mut usize, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
    let end = pos
        .checked_add(n)
        .ok_or_else(|| DecodeError::BadHeader(format!("{what} overflows")))?;
    let s = b
        .get(*pos..end)
        .ok_or_else(|| DecodeError::BadHeader(format!("{what} is cut short")))?;
    *pos = end;
    Ok(s)
}

fn parse_headers(b: &[u8]) -> Result<Vec<(String, HeaderValue)>, DecodeError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let name_len = take(b, &mut pos, 1, "header name length")?[0] as usize;
        if name_len == 0 {
            return Err(DecodeError::BadHeader("empty header name".into()));
        }
        let name = std::str::from_utf8(take(b, &mut pos, name_len, "header name")?)
            .map_err(|_| DecodeError::BadHeader("header name is not UTF-8".into()))?
            .to_string();
        let ty = take(b, &mut pos, 1, "header type")?[0];
        let fixed = |pos: &mut usize, n: usize| take(b, pos, n, "header value");
        let value = match ty {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => HeaderValue::Byte(fixed(&mut pos, 1)?[0] as i8),
            3 => {
                let v = fixed(&mut pos, 2)?;
                HeaderValue::Short(i16::from_be_bytes([v[0], v[1]]))
            }
            4 => {
                let v = fixed(&mut pos, 4)?;
                HeaderValue::Int(i32::from_be_bytes([v[0], v[1], v[2], v[3]]))
            }
            5 | 8 => {
                let v = fixed(&mut pos, 8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(v);
                let n = i64::from_be_bytes(a);
                if ty == 5 {
                    HeaderValue::Long(n)
                } else {
                    HeaderValue::Timestamp(n)
                }
            }
            6 | 7 => {
                let l = fixed(&mut pos, 2)?;
                let len = u16::from_be_bytes([l[0], l[1]]) as usize;
                let v = fixed(&mut pos, len)?;
                if ty == 6 {
                    HeaderValue::Bytes(v.to_vec())
                } else {
                    let s = std::str::from_utf8(v).map_err(|_| {
                        DecodeError::BadHeader(format!("header {name} is not UTF-8"))
                    })?;
                    HeaderValue::String(s.to_string())
                }
            }
            9 => {
                let v = fixed(&mut pos, 16)?;
                let mut a = [0u8; 16];
                a.copy_from_slice(v);
                HeaderValue::Uuid(a)
            }
            other => {
                return Err(DecodeError::BadHeader(format!(
                    "header {name} has unknown type {other}"
                )));
            }
        };
        out.push((name, value));
    }
    Ok(out)
}

/// Encodes one frame. Header names longer than 255 bytes and string/byte values longer than
/// 65535 bytes are cut to fit.
pub fn encode(headers: &[(&str, HeaderValue)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        let name = &name.as_bytes()[..name.len().min(255)];
        h.push(name.len() as u8);
        h.extend_from_slice(name);
        match value {
            HeaderValue::Bool(true) => h.push(0),
            HeaderValue::Bool(false) => h.push(1),
            HeaderValue::Byte(v) => {
                h.push(2);
                h.push(*v as u8);
            }
            HeaderValue::Short(v) => {
                h.push(3);
                h.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Int(v) => {
                h.push(4);
                h.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Long(v) => {
                h.push(5);
                h.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Bytes(v) => {
                let v = &v[..v.len().min(u16::MAX as usize)];
                h.push(6);
                h.extend_from_slice(&(v.len() as u16).to_be_bytes());
                h.extend_from_slice(v);
            }
            HeaderValue::String(v) => {
                let v = &v.as_bytes()[..v.len().min(u16::MAX as usize)];
                h.push(7);
                h.extend_from_slice(&(v.len() as u16).to_be_bytes());
                h.extend_from_slice(v);
            }
            HeaderValue::Timestamp(v) => {
                h.push(8);
                h.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Uuid(v) => {
                h.push(9);
                h.extend_from_slice(v);
            }
        }
    }
    let total = (MIN_FRAME_LEN + h.len() + payload.len()) as u32;
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude_crc = crc32(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let msg_crc = crc32(&out);
    out.extend_from_slice(&msg_crc.to_be_bytes());
    out
}

/// A Kiro event frame: headers `:event-type`, `:content-type`, `:message-type` in that order.
pub fn encode_event(event_type: &str, payload: &[u8]) -> Vec<u8> {
    encode(
        &[
            (":event-type", HeaderValue::String(event_type.into())),
            (
                ":content-type",
                HeaderValue::String("application/json".into()),
            ),
            (":message-type", HeaderValue::String("event".into())),
        ],
        payload,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny deterministic PRNG (xorshift64*), so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn decode_all(bytes: &[u8], chunks: &[usize]) -> Result<Vec<Frame>, DecodeError> {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        let mut rest = bytes;
        let mut i = 0;
        while !rest.is_empty() {
            let n = chunks
                .get(i)
                .copied()
                .unwrap_or(rest.len())
                .clamp(1, rest.len());
            i += 1;
            d.push(&rest[..n]);
            rest = &rest[n..];
            while let Some(f) = d.next_frame()? {
                out.push(f);
            }
        }
        d.finish()?;
        Ok(out)
    }

    #[test]
    fn crc32_is_the_zlib_one() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn reference_vectors() {
        let f = encode_event("assistantResponseEvent", br#"{"content":"Hi"}"#);
        assert_eq!(f.len(), 124);
        assert_eq!(be32(&f, 4), 92);
        assert_eq!(be32(&f, 8), 0x3bdd_cf78);
        assert_eq!(be32(&f, f.len() - 4), 0xb02b_abdc);
        let g = encode(&[], br#"{"foo": "bar"}"#);
        assert_eq!(g.len(), 30);
        assert_eq!(be32(&g, 8), 0xbaf2_f68a);
        assert_eq!(be32(&g, g.len() - 4), 0xae72_58e4);
        let frames = decode_all(&f, &[]).expect("decodes");
        assert_eq!(
            frames[0].header(":event-type"),
            Some("assistantResponseEvent")
        );
        assert_eq!(frames[0].header(":message-type"), Some("event"));
        assert_eq!(frames[0].payload, br#"{"content":"Hi"}"#);
    }

    #[test]
    fn every_header_type_round_trips() {
        let headers = vec![
            ("t", HeaderValue::Bool(true)),
            ("f", HeaderValue::Bool(false)),
            ("b", HeaderValue::Byte(-3)),
            ("s", HeaderValue::Short(-300)),
            ("i", HeaderValue::Int(1 << 20)),
            ("l", HeaderValue::Long(-(1 << 40))),
            ("y", HeaderValue::Bytes(vec![0, 255, 7])),
            ("u8", HeaderValue::String("héllo".into())),
            ("ts", HeaderValue::Timestamp(1_700_000_000_000)),
            ("id", HeaderValue::Uuid([9; 16])),
        ];
        let bytes = encode(&headers, b"payload");
        let frames = decode_all(&bytes, &[]).expect("decodes");
        let want: Vec<(String, HeaderValue)> = headers
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect();
        assert_eq!(frames[0].headers, want);
        assert_eq!(frames[0].payload, b"payload");
    }

    #[test]
    fn any_split_of_a_valid_stream_decodes_the_same() {
        let mut stream = Vec::new();
        for i in 0..20 {
            stream.extend(encode_event(
                "assistantResponseEvent",
                format!("{{\"content\":\"ünï {i}\"}}").as_bytes(),
            ));
        }
        let whole = decode_all(&stream, &[]).expect("decodes");
        assert_eq!(whole.len(), 20);
        // Every single cut position, then random multi-cuts.
        for cut in 1..stream.len() {
            assert_eq!(
                decode_all(&stream, &[cut]).expect("decodes"),
                whole,
                "cut at {cut}"
            );
        }
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..200 {
            let chunks: Vec<usize> = (0..64).map(|_| 1 + rng.below(40)).collect();
            assert_eq!(decode_all(&stream, &chunks).expect("decodes"), whole);
        }
    }

    #[test]
    fn truncation_and_corruption_are_clean_errors() {
        let stream: Vec<u8> = [
            encode_event("assistantResponseEvent", br#"{"content":"a"}"#),
            encode_event(
                "toolUseEvent",
                br#"{"name":"x","toolUseId":"t","input":"{}","stop":true}"#,
            ),
        ]
        .concat();
        for len in 0..stream.len() {
            let r = decode_all(&stream[..len], &[]);
            let first_len = be32(&stream, 0) as usize;
            if len == 0 || len == first_len {
                assert!(
                    r.is_ok(),
                    "a cut on a frame boundary is a valid (shorter) stream"
                );
            } else {
                assert!(
                    matches!(r, Err(DecodeError::Truncated { .. })),
                    "len {len}: {r:?}"
                );
            }
        }
        // Flipping any single bit anywhere is detected (CRC-32 catches all 1-bit errors).
        for byte in 0..stream.len() {
            for bit in 0..8 {
                let mut bad = stream.clone();
                bad[byte] ^= 1 << bit;
                let r = decode_all(&bad, &[]);
                assert!(
                    r.is_err(),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn oversized_frames_are_refused_from_the_prelude() {
        let mut d = Decoder::new(1024);
        let mut prelude = Vec::new();
        prelude.extend_from_slice(&(u32::MAX).to_be_bytes());
        prelude.extend_from_slice(&0u32.to_be_bytes());
        let crc = crc32(&prelude);
        prelude.extend_from_slice(&crc.to_be_bytes());
        d.push(&prelude);
        assert!(matches!(
            d.next_frame(),
            Err(DecodeError::FrameTooLarge { .. })
        ));
        assert_eq!(d.buffered(), 0, "nothing is kept after a failure");
        d.push(&[0; 100]);
        assert_eq!(d.next_frame(), Err(DecodeError::Failed));
        assert_eq!(d.buffered(), 0);
    }

    /// Fuzz: random bytes, random mutations of valid streams, random chunking. The decoder
    /// must never panic, must end with a frame list or a clean error, and its buffer must
    /// stay within one frame limit plus the last chunk.
    #[test]
    fn fuzz_random_input_never_panics_and_stays_bounded() {
        let limit = 4096;
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        let valid: Vec<u8> = (0..8)
            .flat_map(|i| {
                encode_event(
                    "assistantResponseEvent",
                    format!("{{\"content\":\"{i}\"}}").as_bytes(),
                )
            })
            .collect();
        for round in 0..3000 {
            let mut input: Vec<u8> = match round % 3 {
                0 => (0..rng.below(600)).map(|_| rng.next() as u8).collect(),
                1 => {
                    let mut v = valid.clone();
                    for _ in 0..1 + rng.below(4) {
                        let at = rng.below(v.len());
                        v[at] = rng.next() as u8;
                    }
                    v
                }
                _ => {
                    // A valid prefix with a random (possibly CRC-correct) tail.
                    let mut v = valid[..rng.below(valid.len())].to_vec();
                    let body: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
                    let mut frame = Vec::new();
                    let total = (MIN_FRAME_LEN + body.len()) as u32;
                    frame.extend_from_slice(&total.to_be_bytes());
                    frame.extend_from_slice(&((rng.below(body.len() + 1)) as u32).to_be_bytes());
                    let c = crc32(&frame);
                    frame.extend_from_slice(&c.to_be_bytes());
                    frame.extend_from_slice(&body);
                    let c = crc32(&frame);
                    frame.extend_from_slice(&c.to_be_bytes());
                    v.extend(frame);
                    v
                }
            };
            if round % 7 == 0 {
                input.truncate(rng.below(input.len() + 1));
            }
            let mut d = Decoder::new(limit);
            let mut rest = &input[..];
            let mut failed = false;
            while !rest.is_empty() && !failed {
                let n = (1 + rng.below(97)).min(rest.len());
                d.push(&rest[..n]);
                rest = &rest[n..];
                loop {
                    match d.next_frame() {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => {
                            assert!(!e.to_string().is_empty());
                            failed = true;
                            break;
                        }
                    }
                }
                assert!(
                    d.buffered() <= limit + 97,
                    "buffer grew to {}",
                    d.buffered()
                );
            }
            if !failed {
                let _ = d.finish();
            }
        }
    }
}
