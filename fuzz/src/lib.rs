//! Helpers shared by the fuzz targets.

/// Expands run-length escapes so that a short input can reach the codec's
/// size limits (64 KiB heads, 16 KiB targets, 4 KiB chunk-size lines):
/// `0xFF n b` stands for byte `b` repeated `n * 32` times (`n = 0`: once,
/// which is how a literal `0xFF` is written). Every other byte stands for
/// itself, so ordinary seeds and dictionary words work unchanged.
pub fn expand(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] == 0xFF && i + 2 < data.len() {
            let n = usize::from(data[i + 1]);
            let b = data[i + 2];
            let count = if n == 0 { 1 } else { n * 32 };
            out.resize(out.len() + count, b);
            i += 3;
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

/// Pieces of `len` bytes in the sizes `seed` picks (1 to 64 bytes, then
/// the rest), for feeding an incremental decoder.
pub fn split_points(len: usize, seed: &[u8]) -> Vec<usize> {
    let mut points = Vec::new();
    let mut at = 0;
    let mut k = 0;
    while at < len {
        let step = match seed.get(k % seed.len().max(1)) {
            Some(&s) => 1 + usize::from(s % 64),
            None => len,
        };
        // After a pass over the seed, take bigger steps so that long
        // inputs stay cheap.
        let step = if k >= seed.len() { step * 64 } else { step };
        at = (at + step).min(len);
        points.push(at);
        k += 1;
    }
    points
}

/// Whether `name` is a header field name (case-insensitive).
pub fn is(name: &http::HeaderName, want: &str) -> bool {
    name.as_str().eq_ignore_ascii_case(want)
}
