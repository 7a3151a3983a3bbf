//! Formatting access log lines: JSON objects or logfmt pairs.
//!
//! Each worker formats the lines of the requests it serves, so formatting
//! time is request time, and the common values are written without `fmt`
//! machinery or temporary strings:
//! numbers through `itoa`, IPv4 addresses octet by octet, trace ids from
//! a table, and the time from the second's text kept between lines (only
//! the milliseconds change within a second). Nothing here allocates once
//! the output buffer has grown to a line's size.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use super::access_log::{Field, Format, Line};
use super::line_window::LineWindow;

/// Formats lines with one format and field list, remembering the text of
/// the last second it wrote.
#[derive(Debug)]
pub struct LineFormatter {
    format: Format,
    fields: Vec<Field>,
    /// Each field's key as written: `"name":` or `name=`.
    keys: Vec<Box<[u8]>>,
    /// Seconds since the epoch of `second_text`, and its
    /// `YYYY-MM-DDTHH:MM:SS` text.
    second: Option<(u64, String)>,
    /// Whether lines are the default ones, JSON with every field, which
    /// [`LineFormatter::write_default_json`] writes.
    default_json: bool,
    /// Where the default line is put together.
    window: LineWindow,
}

/// A field's value, or `None` when the line has none.
enum Value<'a> {
    Text(&'a [u8]),
    Number(u64),
    Millis(Duration),
    Time(SystemTime),
    Ip(IpAddr),
    Socket(SocketAddr),
    Hex([u8; 16]),
}

impl LineFormatter {
    /// `fields` in the order lines show them; every field when empty.
    pub fn new(format: Format, fields: &[Field]) -> LineFormatter {
        let fields = if fields.is_empty() {
            Field::ALL.to_vec()
        } else {
            fields.to_vec()
        };
        let default_json = format == Format::Json && fields == Field::ALL;
        let keys = fields
            .iter()
            .map(|f| match format {
                Format::Json => format!("\"{}\":", f.name()),
                Format::Text => format!("{}=", f.name()),
            })
            .map(|k| k.into_bytes().into_boxed_slice())
            .collect();
        LineFormatter {
            format,
            fields,
            keys,
            second: None,
            default_json,
            window: LineWindow::default(),
        }
    }

    /// Appends `line`, without its line break, to `out`.
    pub fn write(&mut self, out: &mut Vec<u8>, line: &Line) {
        if self.default_json && self.write_default_json(out, line) {
            return;
        }
        let json = self.format == Format::Json;
        // A line of every field is about 400 bytes: one growth at most.
        out.reserve(512);
        if json {
            out.push(b'{');
        }
        let mut first = true;
        for i in 0..self.fields.len() {
            let Some(v) = value(line, self.fields[i]) else {
                continue;
            };
            if !first {
                out.push(if json { b',' } else { b' ' });
            }
            first = false;
            out.extend_from_slice(&self.keys[i]);
            match v {
                Value::Number(n) => number(out, n),
                Value::Millis(d) => millis(out, d),
                Value::Text(t) if json => json_string(out, t),
                Value::Text(t) => logfmt_value(out, t),
                // Neither a time, an address nor hex needs quoting in
                // logfmt; JSON wants them as strings.
                v => {
                    if json {
                        out.push(b'"');
                    }
                    match v {
                        Value::Time(t) => self.time(out, t),
                        Value::Ip(ip) => ip_addr(out, ip),
                        Value::Socket(s) => socket_addr(out, s),
                        Value::Hex(h) => hex(out, &h),
                        Value::Text(_) | Value::Number(_) | Value::Millis(_) => {}
                    }
                    if json {
                        out.push(b'"');
                    }
                }
            }
        }
        if json {
            out.push(b'}');
        }
    }

    /// The default line, JSON with every field in [`Field::ALL`]'s order,
    /// written into the formatter's [`LineWindow`] and appended in one
    /// copy; `false` when a value needs escaping or the line does not fit
    /// the window, for the generic writer to do.
    ///
    /// Why a second writer: the generic one dispatches twice per field
    /// (which value, then how to write it) and copies each key and value
    /// through a library call; under load, with its code out of the
    /// core's caches between requests, that was most of a line's cost.
    /// Here the keys are constants, written with the quote that opens
    /// their value. Each field is written with a leading comma, and the
    /// first one's comma becomes the opening brace. A test checks that
    /// both writers give the same text.
    fn write_default_json(&mut self, out: &mut Vec<u8>, line: &Line) -> bool {
        let LineFormatter { window, second, .. } = self;
        let w = window;
        w.clear();
        if let Some(t) = line.time {
            w.put_const(b",\"time\":\"");
            let (text, ms) = time_parts(second, t);
            w.put(text);
            w.put_const(&ms);
            w.byte(b'"');
        }
        match line.client {
            Some(IpAddr::V4(ip)) => {
                w.put_const(b",\"client\":\"");
                w.ipv4(ip);
                w.byte(b'"');
            }
            Some(IpAddr::V6(_)) => w.spoil(),
            None => {}
        }
        text(w, b",\"method\":\"", line.method.map(str::as_bytes));
        text(w, b",\"host\":\"", line.host);
        text(w, b",\"path\":\"", line.path.map(str::as_bytes));
        text(w, b",\"protocol\":\"", Some(line.protocol.as_bytes()));
        w.put_const(b",\"status\":");
        w.number(u64::from(line.status));
        w.put_const(b",\"request_bytes\":");
        w.number(line.request_bytes);
        w.put_const(b",\"response_bytes\":");
        w.number(line.response_bytes);
        text(w, b",\"route\":\"", line.route.map(str::as_bytes));
        if let Some(u) = line.upstream {
            w.put_const(b",\"upstream\":\"");
            w.socket(u);
            w.byte(b'"');
        }
        w.put_const(b",\"attempts\":");
        w.number(u64::from(line.attempts));
        w.put_const(b",\"duration_ms\":");
        w.millis(line.duration);
        if let Some(d) = line.upstream_duration {
            w.put_const(b",\"upstream_ms\":");
            w.millis(d);
        }
        text(w, b",\"consumer\":\"", line.consumer.map(str::as_bytes));
        text(w, b",\"request_id\":\"", line.request_id);
        if let Some(t) = &line.trace_id {
            w.put_const(b",\"trace_id\":\"");
            w.hex(t);
            w.byte(b'"');
        }
        let answered_by = line.answered_by.map(str::as_bytes);
        text(w, b",\"answered_by\":\"", answered_by);
        text(w, b",\"user_agent\":\"", line.user_agent);
        let ai_instance = line.ai_instance.map(str::as_bytes);
        text(w, b",\"ai_instance\":\"", ai_instance);
        if let Some((prompt, completion)) = line.tokens {
            w.put_const(b",\"prompt_tokens\":");
            w.number(prompt);
            w.put_const(b",\"completion_tokens\":");
            w.number(completion);
        }
        if let Some(d) = line.ttft {
            w.put_const(b",\"ttft_ms\":");
            w.millis(d);
        }
        w.byte(b'}');
        // The protocol is always written, so there is a first comma.
        w.open(b'{');
        match w.text() {
            Some(text) => {
                out.extend_from_slice(text);
                true
            }
            None => false,
        }
    }

    /// RFC 3339 in UTC with milliseconds.
    fn time(&mut self, out: &mut Vec<u8>, t: SystemTime) {
        let (text, ms) = time_parts(&mut self.second, t);
        out.extend_from_slice(text);
        out.extend_from_slice(&ms);
    }
}

/// The text of `t`'s second, kept in `second` between calls (only the
/// milliseconds change within a second), and its milliseconds' `.mmmZ`.
fn time_parts(second: &mut Option<(u64, String)>, t: SystemTime) -> (&[u8], [u8; 5]) {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    if second.as_ref().is_none_or(|(s, _)| *s != secs) {
        *second = Some((secs, second_text(secs)));
    }
    let text = second.as_ref().map_or(&[][..], |(_, t)| t.as_bytes());
    let ms = d.subsec_millis();
    let millis = [
        b'.',
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
        b'Z',
    ];
    (text, millis)
}

fn value<'a>(line: &Line<'a>, f: Field) -> Option<Value<'a>> {
    Some(match f {
        Field::Time => Value::Time(line.time?),
        Field::Client => Value::Ip(line.client?),
        Field::Method => Value::Text(line.method?.as_bytes()),
        Field::Host => Value::Text(line.host?),
        Field::Path => Value::Text(line.path?.as_bytes()),
        Field::Protocol => Value::Text(line.protocol.as_bytes()),
        Field::Status => Value::Number(u64::from(line.status)),
        Field::RequestBytes => Value::Number(line.request_bytes),
        Field::ResponseBytes => Value::Number(line.response_bytes),
        Field::Route => Value::Text(line.route?.as_bytes()),
        Field::Upstream => Value::Socket(line.upstream?),
        Field::Attempts => Value::Number(u64::from(line.attempts)),
        Field::Duration => Value::Millis(line.duration),
        Field::UpstreamDuration => Value::Millis(line.upstream_duration?),
        Field::Consumer => Value::Text(line.consumer?.as_bytes()),
        Field::RequestId => Value::Text(line.request_id?),
        Field::TraceId => Value::Hex(line.trace_id?),
        Field::AnsweredBy => Value::Text(line.answered_by?.as_bytes()),
        Field::UserAgent => Value::Text(line.user_agent?),
        Field::AiInstance => Value::Text(line.ai_instance?.as_bytes()),
        Field::PromptTokens => Value::Number(line.tokens?.0),
        Field::CompletionTokens => Value::Number(line.tokens?.1),
        Field::TimeToFirstToken => Value::Millis(line.ttft?),
    })
}

/// A key of the default line (with the quote that opens the value) and
/// its string value, when it has one; a value that needs escaping
/// spoils the window.
#[inline(always)]
fn text(w: &mut LineWindow, key: &[u8], value: Option<&[u8]>) {
    if let Some(v) = value {
        if needs_escape(v) {
            w.spoil();
            return;
        }
        w.put_const(key);
        w.put(v);
        w.byte(b'"');
    }
}

fn number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Milliseconds with three decimals, from integer microseconds.
fn millis(out: &mut Vec<u8>, d: Duration) {
    // In u64: a u128 division is a library call.
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    out.extend_from_slice(itoa::Buffer::new().format(us / 1000).as_bytes());
    let frac = (us % 1000) as u16;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

fn ipv4(out: &mut Vec<u8>, ip: Ipv4Addr) {
    // At most 15 bytes, built on the stack and copied once; each octet
    // is followed by a dot, and the last one's is left out.
    let mut text = [0u8; 16];
    let mut n = 0;
    for octet in ip.octets() {
        if octet >= 100 {
            text[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            text[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        text[n] = b'0' + octet % 10;
        text[n + 1] = b'.';
        n += 2;
    }
    out.extend_from_slice(&text[..n - 1]);
}

fn ip_addr(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => ipv4(out, v4),
        IpAddr::V6(v6) => display(out, v6),
    }
}

fn socket_addr(out: &mut Vec<u8>, s: SocketAddr) {
    match s {
        SocketAddr::V4(v4) => {
            ipv4(out, *v4.ip());
            out.push(b':');
            number(out, u64::from(v4.port()));
        }
        SocketAddr::V6(v6) => display(out, v6),
    }
}

/// The rarer values (IPv6) through their `Display`.
fn display(out: &mut Vec<u8>, v: impl std::fmt::Display) {
    let mut s = String::new();
    let _ = write!(s, "{v}");
    out.extend_from_slice(s.as_bytes());
}

fn hex(out: &mut Vec<u8>, bytes: &[u8; 16]) {
    let mut text = [0u8; 32];
    super::trace::hex_into(&mut text, bytes);
    out.extend_from_slice(&text);
}

/// `YYYY-MM-DDTHH:MM:SS` of seconds since the epoch, in UTC.
fn second_text(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Year, month, day of a day count since 1970-01-01 (the proleptic
/// Gregorian calendar; Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A JSON string; bytes that are not UTF-8 (header values may carry
/// obs-text) are written as U+FFFD.
fn json_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    if !needs_escape(bytes) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut utf8 = [0u8; 4];
    for c in String::from_utf8_lossy(bytes).chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                let n = c as u8;
                out.extend_from_slice(b"\\u00");
                hex_byte(out, n);
            }
            c => out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes()),
        }
    }
    out.push(b'"');
}

/// Whether `bytes` need escapes in a JSON string: a control character, a
/// quote, a backslash, or a byte outside printable ASCII (which then goes
/// through the UTF-8 check).
///
/// Most values are printable ASCII with nothing to escape, and short (a
/// host, a path, a user agent): the vector loop the compiler makes of a
/// byte-by-byte check only starts at 32 bytes, and the byte loop was a
/// third of a line's cost. So this tests eight bytes at a time with word
/// arithmetic (the classic "has a zero byte" and "has a byte less than n"
/// tests). The last word is read from the value itself, overlapping the
/// one before (a byte tested twice is still tested once right); copying
/// the tail into a padded word first made the processor wait for those
/// byte stores before it could load the word, half of this check's time.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    fn zero_byte(v: u64) -> u64 {
        v.wrapping_sub(ONES) & !v & HIGH
    }
    fn flagged(w: u64) -> u64 {
        let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
        // A byte of 0x7f or more: its high bit is set, or adding one
        // sets it (a carry only comes out of a byte already flagged).
        let high = (w.wrapping_add(ONES) | w) & HIGH;
        control
            | high
            | zero_byte(w ^ (ONES * u64::from(b'"')))
            | zero_byte(w ^ (ONES * u64::from(b'\\')))
    }
    fn word(b: &[u8]) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[..8]);
        u64::from_le_bytes(w)
    }
    fn half(b: &[u8]) -> u64 {
        let mut w = [0u8; 4];
        w.copy_from_slice(&b[..4]);
        u64::from(u32::from_le_bytes(w))
    }
    let n = bytes.len();
    if n >= 8 {
        let mut any = 0;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            any |= flagged(word(chunk));
        }
        if !chunks.remainder().is_empty() {
            any |= flagged(word(&bytes[n - 8..]));
        }
        any != 0
    } else if n >= 4 {
        // Two overlapping halves make one word of the value's own bytes.
        flagged(half(bytes) | half(&bytes[n - 4..]) << 32) != 0
    } else {
        bytes
            .iter()
            .any(|&b| !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\')
    }
}

fn hex_byte(out: &mut Vec<u8>, b: u8) {
    let mut text = [0u8; 2];
    super::trace::hex_into(&mut text, &[b]);
    out.extend_from_slice(&text);
}

/// A value, quoted (as a JSON string) when it has spaces, quotes, `=` or
/// anything outside printable ASCII.
fn logfmt_value(out: &mut Vec<u8>, bytes: &[u8]) {
    let plain = !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'=' | b'\\'));
    if plain {
        out.extend_from_slice(bytes);
    } else {
        json_string(out, bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> Line<'static> {
        Line {
            time: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_733_456_789_123)),
            client: Some("10.0.0.9".parse().unwrap()),
            method: Some("POST"),
            host: Some(b"shop.test"),
            path: Some("/a b/\"q\"\u{1}"),
            protocol: "HTTP/1.1",
            status: 201,
            request_bytes: 12,
            response_bytes: 3,
            route: Some("default/shop/api"),
            upstream: Some("10.1.0.4:8080".parse().unwrap()),
            attempts: 2,
            duration: Duration::from_micros(1500),
            upstream_duration: Some(Duration::from_micros(1_200_007)),
            consumer: None,
            request_id: Some(b"r-1"),
            trace_id: Some([0xab; 16]),
            answered_by: None,
            user_agent: Some(b"curl/8 \xff"),
            ai_instance: None,
            tokens: None,
            ttft: None,
        }
    }

    fn text(f: &mut LineFormatter, line: &Line) -> String {
        let mut out = Vec::new();
        f.write(&mut out, line);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_lines_have_the_fields_that_have_values() {
        let out = text(&mut LineFormatter::new(Format::Json, &[]), &line());
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["time"], "2024-12-06T03:46:29.123Z");
        assert_eq!(v["client"], "10.0.0.9");
        assert_eq!(v["path"], "/a b/\"q\"\u{1}");
        assert_eq!(v["status"], 201);
        assert_eq!(v["attempts"], 2);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["upstream_ms"], 1200.007);
        assert_eq!(v["upstream"], "10.1.0.4:8080");
        assert_eq!(v["trace_id"], "ab".repeat(16));
        assert_eq!(v["user_agent"], "curl/8 \u{fffd}");
        assert!(v.get("consumer").is_none(), "{out}");
    }

    #[test]
    fn text_lines_quote_what_needs_it_and_keep_field_order() {
        let mut l = line();
        l.path = Some("/a b/\"q\"");
        let fields = [
            Field::Status,
            Field::Path,
            Field::Host,
            Field::Duration,
            Field::Client,
        ];
        let out = text(&mut LineFormatter::new(Format::Text, &fields), &l);
        assert_eq!(
            out,
            "status=201 path=\"/a b/\\\"q\\\"\" host=shop.test duration_ms=1.500 client=10.0.0.9"
        );
    }

    #[test]
    fn the_time_follows_each_line_across_seconds() {
        let mut f = LineFormatter::new(Format::Text, &[Field::Time]);
        let mut l = line();
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_733_456_789);
        for (ms, want) in [
            (5, "time=2024-12-06T03:46:29.005Z"),
            (999, "time=2024-12-06T03:46:29.999Z"),
            (1_000, "time=2024-12-06T03:46:30.000Z"),
            (86_400_000, "time=2024-12-07T03:46:29.000Z"),
        ] {
            l.time = Some(base + Duration::from_millis(ms));
            assert_eq!(text(&mut f, &l), want);
        }
    }

    #[test]
    fn ipv6_addresses_are_written_as_their_display() {
        let mut l = line();
        l.client = Some("2001:db8::1".parse().unwrap());
        l.upstream = Some("[fd00::4]:8443".parse().unwrap());
        let out = text(
            &mut LineFormatter::new(Format::Json, &[Field::Client, Field::Upstream]),
            &l,
        );
        assert_eq!(
            out,
            r#"{"client":"2001:db8::1","upstream":"[fd00::4]:8443"}"#
        );
    }

    #[test]
    fn the_default_writer_writes_what_the_generic_one_does() {
        let mut generic = LineFormatter::new(Format::Json, &Field::ALL);
        generic.default_json = false;
        let mut default = LineFormatter::new(Format::Json, &[]);
        assert!(default.default_json);
        let full = line();
        let mut ai = line();
        ai.consumer = Some("team-a");
        ai.answered_by = Some("keyAuth");
        ai.ai_instance = Some("openai-1");
        ai.tokens = Some((12, 345));
        ai.ttft = Some(Duration::from_micros(87_654));
        ai.client = Some("2001:db8::1".parse().unwrap());
        ai.upstream = Some("[fd00::4]:8443".parse().unwrap());
        let empty = Line {
            protocol: "HTTP/2",
            status: 400,
            ..Line::default()
        };
        // Nothing to escape, IPv4 only: written in the window.
        let mut clean = line();
        clean.path = Some("/api/v1/orders/1234567?x=1");
        clean.user_agent = Some(b"Mozilla/5.0 (X11; Linux x86_64)");
        clean.consumer = Some("team-a");
        clean.answered_by = Some("keyAuth");
        clean.ai_instance = Some("openai-1");
        clean.tokens = Some((0, u64::MAX));
        clean.ttft = Some(Duration::ZERO);
        clean.upstream = Some("[fd00::4]:8443".parse().unwrap());
        let mut bare = clean;
        bare.client = Some("1.2.3.4".parse().unwrap());
        bare.upstream = Some("255.255.255.255:65535".parse().unwrap());
        // A value longer than the window: written by the generic writer.
        let long_path = format!("/{}", "p".repeat(super::super::line_window::SIZE));
        let mut long = clean;
        long.path = Some(&long_path);
        for l in [&full, &ai, &empty, &clean, &bare, &long] {
            let want = text(&mut generic, l);
            assert_eq!(text(&mut default, l), want);
            serde_json::from_str::<serde_json::Value>(&want).unwrap();
        }
        // Which lines the window writes, and which it leaves.
        let mut out = Vec::new();
        assert!(default.write_default_json(&mut out, &clean));
        assert!(default.write_default_json(&mut out, &bare));
        assert!(default.write_default_json(&mut out, &empty));
        assert!(!default.write_default_json(&mut out, &full), "escapes");
        assert!(!default.write_default_json(&mut out, &ai), "IPv6 client");
        assert!(!default.write_default_json(&mut out, &long), "too long");
        // Appended after what the buffer holds, as lines are.
        let mut out = b"before\n".to_vec();
        default.write(&mut out, &empty);
        assert!(
            out.starts_with(b"before\n{\"protocol\":\"HTTP/2\","),
            "{out:?}"
        );
    }

    #[test]
    fn the_escape_check_agrees_with_a_byte_by_byte_one() {
        let naive = |b: &[u8]| {
            b.iter()
                .any(|&c| !(0x20..0x7f).contains(&c) || c == b'"' || c == b'\\')
        };
        let mut tried = 0;
        for len in 0..20 {
            for at in 0..len {
                for c in 0..=255u8 {
                    let mut b = vec![b'a'; len];
                    b[at] = c;
                    // Also next to the bytes whose arithmetic carries.
                    if at + 1 < len {
                        b[at + 1] = [0x7e, 0x21, 0x5b, 0x1f][usize::from(c) % 4];
                    }
                    assert_eq!(needs_escape(&b), naive(&b), "{b:?}");
                    tried += 1;
                }
            }
        }
        assert!(tried > 40_000);
        assert!(!needs_escape(b""));
        assert!(!needs_escape(b"Mozilla/5.0 (X11; Linux x86_64)"));
    }

    #[test]
    fn addresses_and_durations_are_written_exactly() {
        for (ip, want) in [
            ("0.0.0.0", "0.0.0.0"),
            ("10.244.3.17", "10.244.3.17"),
            ("255.255.255.255", "255.255.255.255"),
            ("100.9.10.99", "100.9.10.99"),
        ] {
            let mut out = b"x".to_vec();
            ipv4(&mut out, ip.parse().unwrap());
            assert_eq!(out, format!("x{want}").into_bytes());
        }
        let mut out = Vec::new();
        millis(&mut out, Duration::from_nanos(12_345_678_901));
        assert_eq!(out, b"12345.678");
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(11_016), (2000, 2, 29));
        assert_eq!(civil(20_428), (2025, 12, 6));
    }
}
