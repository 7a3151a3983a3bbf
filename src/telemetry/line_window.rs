//! A fixed window that the default access log line is written into before
//! it is appended to the worker's buffer in one copy.
//!
//! Why not write straight into the `Vec`: a line is some 40 small pieces
//! of varying length (values of 3 to 40 bytes, numbers, addresses), and
//! each `extend_from_slice` of a length the compiler cannot see is a call
//! into the C library's `memmove`, whose size dispatch mispredicts when the
//! sizes change from piece to piece; and `itoa`'s or an address's digits,
//! built in a stack buffer and then copied out, stall the copy's loads on
//! the byte stores just made. Together that was more than a third of a
//! line's cost. Here each piece is written in place: digits where they
//! belong, and values of up to 32 bytes as two fixed-size copies that
//! overlap (the compiler turns a copy of a constant size into plain moves).
//!
//! Every write checks that it fits; one that does not marks the window
//! spoiled, and the caller writes the line another way. Nothing here
//! panics on any input.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// A line of every field with common values takes 400-700 bytes.
pub const SIZE: usize = 2048;

/// The window and how much of it is written.
#[derive(Debug)]
pub struct LineWindow {
    buf: Box<[u8; SIZE]>,
    at: usize,
    spoiled: bool,
}

impl Default for LineWindow {
    fn default() -> Self {
        LineWindow {
            buf: Box::new([0; SIZE]),
            at: 0,
            spoiled: false,
        }
    }
}

impl LineWindow {
    /// Starts a new line.
    pub fn clear(&mut self) {
        self.at = 0;
        self.spoiled = false;
    }

    /// The line, unless a piece did not fit.
    pub fn text(&self) -> Option<&[u8]> {
        if self.spoiled {
            return None;
        }
        self.buf.get(..self.at)
    }

    /// Replaces the line's first byte (the comma before its first field).
    pub fn open(&mut self, b: u8) {
        if self.at > 0
            && let Some(first) = self.buf.first_mut()
        {
            *first = b;
        }
    }

    /// Gives up on the line: the caller writes it another way.
    pub fn spoil(&mut self) {
        self.spoiled = true;
    }

    /// The `N` bytes at the end of the line, which grows by `len` (at most
    /// `N`); `None` (and the window spoiled) when they do not fit.
    #[inline(always)]
    fn room<const N: usize>(&mut self, len: usize) -> Option<&mut [u8; N]> {
        let at = self.at;
        match self
            .buf
            .get_mut(at..at + N)
            .and_then(|w| <&mut [u8; N]>::try_from(w).ok())
        {
            Some(w) => {
                self.at = at + len.min(N);
                Some(w)
            }
            None => {
                self.spoiled = true;
                None
            }
        }
    }

    /// Bytes whose length is known where this is inlined (keys, quotes).
    #[inline(always)]
    pub fn put_const(&mut self, bytes: &[u8]) {
        let at = self.at;
        match self.buf.get_mut(at..at + bytes.len()) {
            Some(w) => {
                w.copy_from_slice(bytes);
                self.at = at + bytes.len();
            }
            None => self.spoiled = true,
        }
    }

    /// Bytes of any length: short ones as two overlapping copies of a
    /// fixed size, long ones through `copy_from_slice`.
    #[inline]
    pub fn put(&mut self, v: &[u8]) {
        let n = v.len();
        if n > 32 {
            self.put_const(v);
        } else if n >= 16 {
            if let Some(w) = self.room::<32>(n) {
                w[..16].copy_from_slice(&v[..16]);
                w[n - 16..n].copy_from_slice(&v[n - 16..]);
            }
        } else if n >= 8 {
            if let Some(w) = self.room::<16>(n) {
                w[..8].copy_from_slice(&v[..8]);
                w[n - 8..n].copy_from_slice(&v[n - 8..]);
            }
        } else if n >= 4 {
            if let Some(w) = self.room::<8>(n) {
                w[..4].copy_from_slice(&v[..4]);
                w[n - 4..n].copy_from_slice(&v[n - 4..]);
            }
        } else if let Some(w) = self.room::<4>(n) {
            for (to, from) in w.iter_mut().zip(v) {
                *to = *from;
            }
        }
    }

    /// One byte.
    #[inline(always)]
    pub fn byte(&mut self, b: u8) {
        if let Some(w) = self.room::<1>(1) {
            w[0] = b;
        }
    }

    /// A number in decimal, its digits written where they belong.
    pub fn number(&mut self, mut n: u64) {
        let mut digits = 1;
        let mut limit = 10u64;
        while digits < 20 && n >= limit {
            digits += 1;
            limit = limit.saturating_mul(10);
        }
        if let Some(w) = self.room::<20>(digits) {
            for d in w[..digits].iter_mut().rev() {
                *d = b'0' + (n % 10) as u8;
                n /= 10;
            }
        }
    }

    /// Milliseconds with three decimals, from integer microseconds.
    pub fn millis(&mut self, d: Duration) {
        // In u64: a u128 division is a library call.
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.number(us / 1000);
        let frac = us % 1000;
        if let Some(w) = self.room::<4>(4) {
            *w = [
                b'.',
                b'0' + (frac / 100) as u8,
                b'0' + (frac / 10 % 10) as u8,
                b'0' + (frac % 10) as u8,
            ];
        }
    }

    /// An IPv4 address, octet by octet.
    pub fn ipv4(&mut self, ip: Ipv4Addr) {
        for (i, octet) in ip.octets().into_iter().enumerate() {
            if i > 0 {
                self.byte(b'.');
            }
            self.number(u64::from(octet));
        }
    }

    /// A socket address; IPv6 ones through their `Display`.
    pub fn socket(&mut self, s: SocketAddr) {
        match s {
            SocketAddr::V4(v4) => {
                self.ipv4(*v4.ip());
                self.byte(b':');
                self.number(u64::from(v4.port()));
            }
            SocketAddr::V6(v6) => self.put(v6.to_string().as_bytes()),
        }
    }

    /// Lower-case hex of a trace id.
    pub fn hex(&mut self, bytes: &[u8; 16]) {
        if let Some(w) = self.room::<32>(32) {
            super::trace::hex_into(w, bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(f: impl FnOnce(&mut LineWindow)) -> String {
        let mut w = LineWindow::default();
        f(&mut w);
        String::from_utf8(w.text().expect("fits").to_vec()).expect("text")
    }

    #[test]
    fn values_of_every_length_are_copied_exactly() {
        let source: Vec<u8> = (0..200u8).map(|i| b'a' + i % 26).collect();
        for offset in 0..3 {
            for len in 0..=100 {
                let v = &source[..len];
                let got = written(|w| {
                    w.put(&source[100..100 + offset]);
                    w.put(v);
                    w.byte(b'|');
                });
                let mut want = String::from_utf8(source[100..100 + offset].to_vec()).unwrap();
                want.push_str(std::str::from_utf8(v).unwrap());
                want.push('|');
                assert_eq!(got, want, "offset {offset}, length {len}");
            }
        }
    }

    #[test]
    fn numbers_match_their_display() {
        let mut n = 1u64;
        let mut cases = vec![0, 9, 10, 99, 100, u64::MAX, u64::MAX - 1];
        while let Some(next) = n.checked_mul(10) {
            cases.extend([n - 1, n, n + 1]);
            n = next;
        }
        cases.extend([n - 1, n, n + 1]);
        for n in cases {
            assert_eq!(written(|w| w.number(n)), n.to_string());
        }
    }

    #[test]
    fn addresses_durations_and_ids() {
        assert_eq!(
            written(|w| w.socket("10.244.0.7:8080".parse().unwrap())),
            "10.244.0.7:8080"
        );
        assert_eq!(
            written(|w| w.ipv4(Ipv4Addr::new(255, 0, 10, 1))),
            "255.0.10.1"
        );
        assert_eq!(
            written(|w| w.socket("[fd00::4]:8443".parse().unwrap())),
            "[fd00::4]:8443"
        );
        assert_eq!(
            written(|w| w.millis(Duration::from_micros(1_200_007))),
            "1200.007"
        );
        assert_eq!(written(|w| w.millis(Duration::ZERO)), "0.000");
        assert_eq!(
            written(|w| w.hex(&[0xab; 16])),
            "abababababababababababababababab"
        );
    }

    #[test]
    fn what_does_not_fit_spoils_the_line_and_never_panics() {
        let mut w = LineWindow::default();
        let long = vec![b'x'; SIZE - 10];
        w.put(&long);
        assert!(w.text().is_some());
        w.put(b"0123456789abcdef");
        assert!(w.text().is_none(), "a value past the end");
        w.clear();
        w.put(&long);
        w.number(u64::MAX);
        w.hex(&[1; 16]);
        w.millis(Duration::MAX);
        w.put(&[b'y'; SIZE]);
        assert!(w.text().is_none());
        w.clear();
        w.put(b"ok");
        assert_eq!(w.text(), Some(&b"ok"[..]));
    }
}
