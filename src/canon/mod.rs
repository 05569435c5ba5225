//! Stage 2a: the one canonical path.
//!
//! The raw request path is percent-decoded exactly once and checked; anything
//! ambiguous is refused rather than "fixed", because a gateway that resolves
//! `..` or decodes twice sees a different path than the upstream does. The
//! result is re-encoded in one normal form (unreserved and sub-delim bytes
//! literal, everything else `%XX` upper-case), and that string is what routing,
//! every later check and the upstream request all use.
//!
//! Refused: encoded `/` or `\` (`%2F`, `%5C`), `.`/`..` segments in any
//! spelling, empty segments (`//`), backslashes, NUL and control characters,
//! invalid UTF-8 (including overlong forms such as `%C0%AF`), `;` (path
//! parameters, raw or encoded), a raw `#` (in practice the `http` crate cuts a
//! fragment off before this code sees the path), malformed `%` escapes,
//! double encoding (a decoded `%XX`), and paths over the configured length.

use std::fmt::Write;

/// Why a path was refused (the text is safe to show the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Longer than the configured maximum.
    TooLong,
    /// Any other reason; the message names it.
    Invalid(&'static str),
}

/// Canonicalizes a raw request path (the part before `?`).
pub fn canonicalize(raw: &str, max_len: usize) -> Result<String, PathError> {
    use PathError::Invalid;
    let b = raw.as_bytes();
    if b.len() > max_len {
        return Err(PathError::TooLong);
    }
    if b.first() != Some(&b'/') {
        return Err(Invalid("the path must start with '/'"));
    }
    // Fast path: nothing encoded and every byte already literal.
    if b.iter().all(|&c| is_literal(c)) {
        check_segments(raw)?;
        return Ok(raw.to_owned());
    }
    let mut decoded: Vec<u8> = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'%' => {
                let hex = |j: usize| b.get(j).and_then(|&h| (h as char).to_digit(16));
                let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
                    return Err(Invalid("malformed percent-encoding"));
                };
                let v = (hi * 16 + lo) as u8;
                match v {
                    b'/' => return Err(Invalid("encoded '/' in path")),
                    b'\\' => return Err(Invalid("encoded '\\' in path")),
                    _ => decoded.push(v),
                }
                i += 3;
            }
            b'\\' => return Err(Invalid("backslash in path")),
            b'#' => return Err(Invalid("fragment in request target")),
            _ => {
                decoded.push(c);
                i += 1;
            }
        }
    }
    let s = std::str::from_utf8(&decoded).map_err(|_| Invalid("path is not valid UTF-8"))?;
    if s.chars().any(char::is_control) {
        return Err(Invalid("control character in path"));
    }
    if s.contains(';') {
        return Err(Invalid("';' path parameters are not allowed"));
    }
    if has_escape(s.as_bytes()) {
        return Err(Invalid("double percent-encoding in path"));
    }
    check_segments(s)?;
    let mut out = String::with_capacity(s.len() + 8);
    for &byte in s.as_bytes() {
        if is_literal(byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    Ok(out)
}

/// Segment rules on the decoded form: no `.`/`..`, no empty segment except
/// a trailing one. The first split item is the empty string before the '/'.
fn check_segments(s: &str) -> Result<(), PathError> {
    let b = s.as_bytes();
    let mut start = 1; // after the leading '/'
    for i in 1..=b.len() {
        if i < b.len() && b.get(i) != Some(&b'/') {
            continue;
        }
        match b.get(start..i) {
            Some(b".") | Some(b"..") => {
                return Err(PathError::Invalid("'.' or '..' segment in path"));
            }
            Some([]) if i < b.len() => {
                return Err(PathError::Invalid("empty segment ('//') in path"));
            }
            _ => {}
        }
        start = i + 1;
    }
    Ok(())
}

/// Decodes one canonical path segment or parameter value (`%XX` -> byte).
/// Canonical paths only hold valid escapes of valid UTF-8, so this cannot fail
/// for them; other input is decoded leniently.
pub fn decode_segment(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |j: usize| b.get(j).and_then(|&h| (h as char).to_digit(16));
        match (b[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True when `s` contains `%` followed by two hex digits.
fn has_escape(s: &[u8]) -> bool {
    s.windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

/// Bytes kept literal in the canonical form: RFC 3986 `pchar` minus `%` and `;`.
fn is_literal(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'/' | b'-'
                | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b':'
                | b'@'
        )
}

#[cfg(test)]
mod tests;
