//! An incremental Server-Sent Events parser for upstream streams (WHATWG "event stream"
//! interpretation): feed it bytes as they arrive, take complete events out.
//!
//! Hardened for hostile or broken upstreams: it never panics on any input, accepts `\n`,
//! `\r\n` and `\r` line ends, skips comments and unknown fields, and bounds memory — a line or
//! an event longer than [`SseParser::max_event_bytes`] is an error, not an ever-growing buffer.

/// One parsed event: its `event:` name (empty if none) and its `data:` lines joined by `\n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseError {
    /// A single event (or line) grew past the limit.
    TooLarge { limit: usize },
    /// The data was not UTF-8.
    NotUtf8,
}

impl std::fmt::Display for SseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SseError::TooLarge { limit } => write!(f, "SSE event larger than {limit} bytes"),
            SseError::NotUtf8 => f.write_str("SSE stream is not UTF-8"),
        }
    }
}

impl std::error::Error for SseError {}

#[derive(Debug)]
pub struct SseParser {
    buf: Vec<u8>,
    event: String,
    data: String,
    has_data: bool,
    /// A `\r` ended the previous chunk: a `\n` starting the next one belongs to it.
    pending_cr: bool,
    max: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX)
    }
}

impl SseParser {
    /// 16 MiB: far above any real completion chunk, small enough to stop a runaway stream.
    pub const DEFAULT_MAX: usize = 16 << 20;

    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            buf: Vec::new(),
            event: String::new(),
            data: String::new(),
            has_data: false,
            pending_cr: false,
            max: max_event_bytes.max(1),
        }
    }

    pub fn max_event_bytes(&self) -> usize {
        self.max
    }

    /// Feeds bytes; appends every event completed by them to `out`.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.pending_cr && bytes.first() == Some(&b'\n') {
            bytes = &bytes[1..];
        }
        self.pending_cr = false;
        while let Some(pos) = bytes.iter().position(|b| *b == b'\n' || *b == b'\r') {
            let (line, rest) = bytes.split_at(pos);
            let ending = rest[0];
            bytes = &rest[1..];
            if ending == b'\r' {
                if bytes.first() == Some(&b'\n') {
                    bytes = &bytes[1..];
                } else if bytes.is_empty() {
                    self.pending_cr = true;
                }
            }
            if self.buf.is_empty() {
                self.line(line, out)?;
            } else {
                self.grow(line.len())?;
                self.buf.extend_from_slice(line);
                let full = std::mem::take(&mut self.buf);
                self.line(&full, out)?;
            }
        }
        self.grow(bytes.len())?;
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// The stream ended: an event still pending without its blank line is dispatched (many
    /// upstreams omit the final blank line).
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            self.line(&rest, out)?;
        }
        self.dispatch(out);
        Ok(())
    }

    fn grow(&self, more: usize) -> Result<(), SseError> {
        if self.buf.len() + more + self.data.len() > self.max {
            Err(SseError::TooLarge { limit: self.max })
        } else {
            Ok(())
        }
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.data.len() + value.len() + 1 > self.max {
                    return Err(SseError::TooLarge { limit: self.max });
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => {
                self.event.clear();
                self.event.push_str(value);
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if self.has_data {
            out.push(SseEvent {
                event: std::mem::take(&mut self.event),
                data: std::mem::take(&mut self.data),
            });
        }
        self.event.clear();
        self.data.clear();
        self.has_data = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_chunks(input: &[u8], chunk: usize) -> Vec<SseEvent> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for c in input.chunks(chunk.max(1)) {
            p.push(c, &mut out).expect("push");
        }
        p.finish(&mut out).expect("finish");
        out
    }

    #[test]
    fn events_survive_any_chunking_and_line_ending() {
        let text = "event: message_start\ndata: {\"a\":1}\n\n: comment\ndata: x\ndata: y\r\n\r\ndata: [DONE]\r\r";
        let want = vec![
            SseEvent {
                event: "message_start".into(),
                data: "{\"a\":1}".into(),
            },
            SseEvent {
                event: String::new(),
                data: "x\ny".into(),
            },
            SseEvent {
                event: String::new(),
                data: "[DONE]".into(),
            },
        ];
        for chunk in 1..text.len() {
            assert_eq!(
                parse_in_chunks(text.as_bytes(), chunk),
                want,
                "chunk size {chunk}"
            );
        }
    }

    #[test]
    fn a_final_event_without_blank_line_is_kept() {
        assert_eq!(
            parse_in_chunks(b"data: last", 3),
            vec![SseEvent {
                event: String::new(),
                data: "last".into()
            }]
        );
    }

    #[test]
    fn oversized_events_are_an_error_not_unbounded_memory() {
        let mut p = SseParser::new(1024);
        let mut out = Vec::new();
        let big = vec![b'a'; 4096];
        assert!(p.push(b"data: ", &mut out).is_ok());
        assert_eq!(
            p.push(&big, &mut out),
            Err(SseError::TooLarge { limit: 1024 })
        );
        let mut p = SseParser::new(1024);
        let mut lines = Vec::new();
        for _ in 0..200 {
            lines.extend_from_slice(b"data: 0123456789\n");
        }
        assert!(
            p.push(&lines, &mut out).is_err(),
            "many data lines in one event are bounded too"
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e3779b97f4a7c15u64;
        for _ in 0..2000 {
            let mut p = SseParser::new(4096);
            let mut out = Vec::new();
            let len = (seed % 300) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    [b'\n', b'\r', b':', b'd', b'a', b't', b' ', 0xff, b'e'][(seed % 9) as usize]
                })
                .collect();
            let _ = p.push(&bytes, &mut out);
            let _ = p.finish(&mut out);
        }
    }
}
