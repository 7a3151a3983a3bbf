//! Server-sent events (the WHATWG `text/event-stream` format) as LLM
//! providers stream them: lines ending in LF, CRLF or CR; `event:` and
//! `data:` fields (several `data:` lines join with LF); `:` comments;
//! an event ends at a blank line.
//!
//! Hand-written: the decoder works on whatever pieces the connection
//! delivers and hands back each whole event at once, keeping only the
//! unfinished tail, which no event-stream crate among the dependencies
//! does over an `http_body` stream. One event may hold at most
//! [`MAX_EVENT`] bytes, so a provider that never ends a line cannot make
//! the gateway buffer without bound.

use bytes::{Buf, BytesMut};

/// The longest event accepted, in bytes.
pub const MAX_EVENT: usize = 4 << 20;

/// One event: its name (`event:`), if any, and its data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    pub name: Option<String>,
    pub data: String,
}

/// Why a stream cannot be read as events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an event is longer than {MAX_EVENT} bytes")]
    TooLong,
    #[error("an event is not UTF-8")]
    Encoding,
}

/// Decodes events from pieces of a stream.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Bytes not yet split into lines.
    buf: BytesMut,
    name: Option<String>,
    data: String,
    has_data: bool,
    /// The previous piece ended with CR: an LF starting the next one
    /// belongs to the same line end.
    after_cr: bool,
    /// Bytes held for the event being built.
    held: usize,
}

impl Decoder {
    /// Adds the next piece of the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole event, if the stream has one yet.
    pub fn next_event(&mut self) -> Result<Option<Event>, SseError> {
        loop {
            if self.after_cr && self.buf.first() == Some(&b'\n') {
                self.buf.advance(1);
            }
            self.after_cr = false;
            let Some(end) = self.buf.iter().position(|&b| b == b'\n' || b == b'\r') else {
                if self.held + self.buf.len() > MAX_EVENT {
                    return Err(SseError::TooLong);
                }
                return Ok(None);
            };
            let line = self.buf.split_to(end);
            let cr = self.buf[0] == b'\r';
            self.buf.advance(1);
            if cr {
                if self.buf.first() == Some(&b'\n') {
                    self.buf.advance(1);
                } else if self.buf.is_empty() {
                    self.after_cr = true;
                }
            }
            if line.is_empty() {
                if let Some(e) = self.dispatch() {
                    return Ok(Some(e));
                }
                continue;
            }
            self.field(&line)?;
        }
    }

    /// What is left when the stream ends: an event not closed by a blank
    /// line is dropped, as the format says.
    pub fn is_clean(&self) -> bool {
        self.buf.is_empty() && !self.has_data
    }

    fn field(&mut self, line: &[u8]) -> Result<(), SseError> {
        if line[0] == b':' {
            return Ok(());
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        self.held += line.len();
        if self.held > MAX_EVENT {
            return Err(SseError::TooLong);
        }
        let value = std::str::from_utf8(value).map_err(|_| SseError::Encoding)?;
        match name {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            b"event" => self.name = Some(value.to_owned()),
            // `id` and `retry` matter to browsers reconnecting, not here.
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self) -> Option<Event> {
        self.held = 0;
        let name = self.name.take();
        if !self.has_data {
            return None;
        }
        self.has_data = false;
        Some(Event {
            name,
            data: std::mem::take(&mut self.data),
        })
    }
}

/// Appends `data: <json>` and the blank line ending the event.
pub fn put_data(out: &mut BytesMut, json: &[u8]) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
}

/// Appends a named event (`event: NAME`, then its data).
pub fn put_event(out: &mut BytesMut, name: &str, json: &[u8]) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\n");
    put_data(out, json);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(pieces: &[&[u8]]) -> Vec<Event> {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for p in pieces {
            d.push(p);
            while let Some(e) = d.next_event().unwrap() {
                out.push(e);
            }
        }
        out
    }

    fn ev(name: Option<&str>, data: &str) -> Event {
        Event {
            name: name.map(str::to_owned),
            data: data.to_owned(),
        }
    }

    #[test]
    fn events_split_anywhere_come_out_whole() {
        let stream = b"event: message_start\ndata: {\"a\":1}\n\n: keep-alive\n\ndata: one\ndata: two\n\ndata:[DONE]\n\n";
        let expected = vec![
            ev(Some("message_start"), "{\"a\":1}"),
            ev(None, "one\ntwo"),
            ev(None, "[DONE]"),
        ];
        assert_eq!(all(&[stream]), expected);
        // Every split point gives the same events.
        for i in 0..stream.len() {
            let (a, b) = stream.split_at(i);
            assert_eq!(all(&[a, b]), expected, "split at {i}");
        }
        // One byte at a time.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(all(&bytes), expected);
    }

    #[test]
    fn every_line_ending_is_understood() {
        assert_eq!(
            all(&[b"data: a\r\n\r\ndata: b\r\rdata: c\n\n"]),
            vec![ev(None, "a"), ev(None, "b"), ev(None, "c")]
        );
        // A CRLF split between two pieces is one line end.
        assert_eq!(
            all(&[b"data: a\r", b"\n\r", b"\ndata: b\n\n"]),
            vec![ev(None, "a"), ev(None, "b")]
        );
    }

    #[test]
    fn an_unfinished_event_is_held_not_dispatched() {
        let mut d = Decoder::default();
        d.push(b"data: {\"partial\":");
        assert_eq!(d.next_event().unwrap(), None);
        assert!(!d.is_clean());
        d.push(b"true}\n\n");
        assert_eq!(
            d.next_event().unwrap(),
            Some(ev(None, "{\"partial\":true}"))
        );
        assert!(d.is_clean());
    }

    #[test]
    fn endless_lines_are_refused() {
        let mut d = Decoder::default();
        let big = vec![b'x'; 1 << 20];
        d.push(b"data: ");
        let mut refused = false;
        for _ in 0..5 {
            d.push(&big);
            if d.next_event() == Err(SseError::TooLong) {
                refused = true;
                break;
            }
        }
        assert!(refused);
    }

    #[test]
    fn events_are_written_in_the_format() {
        let mut out = BytesMut::new();
        put_data(&mut out, b"{}");
        put_event(&mut out, "ping", b"{\"type\":\"ping\"}");
        assert_eq!(
            &out[..],
            b"data: {}\n\nevent: ping\ndata: {\"type\":\"ping\"}\n\n"
        );
    }
}
