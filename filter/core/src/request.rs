//! What the filter knows about a request before its body: the pseudo-headers
//! and the few headers and connection properties that decisions use.
//!
//! The glue fills a [`RequestHead`] once, from one bulk header read, in the
//! request-headers callback.

/// The request line, selected headers and connection facts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHead {
    /// `:method`.
    pub method: String,
    /// `:path`.
    pub path: String,
    /// `:authority`.
    pub authority: String,
    /// `content-type`, lowercased, without parameters (`application/json`).
    pub content_type: String,
    /// `content-length`, when present and a valid number.
    pub content_length: Option<u64>,
    /// `content-encoding`, lowercased, when present.
    pub content_encoding: Option<String>,
    /// The raw value of the configured identity header, when present
    /// (refused unless it is UTF-8 and a valid agent name).
    pub identity_header: Option<Vec<u8>>,
    /// The raw value of the delegation header, when present.
    pub delegation_header: Option<Vec<u8>>,
    /// The raw value of the session header, when present.
    pub session_header: Option<Vec<u8>>,
    /// The mTLS peer certificate's URI SANs (SPIFFE ids), when the
    /// connection is mTLS.
    pub peer_uri_sans: Vec<String>,
    /// Wall-clock time the headers arrived, Unix nanoseconds.
    pub received_at_unix_nanos: i64,
}

/// The configured names of the headers Warrant reads (lowercase).
#[derive(Debug, Clone, Copy)]
pub struct HeaderNames<'a> {
    /// The trusted identity header.
    pub identity: &'a str,
    /// The delegation chain header.
    pub delegation: &'a str,
    /// The session header.
    pub session: &'a str,
}

impl RequestHead {
    /// Builds a head from header pairs as the host returns them (lowercase
    /// names), reading the configured header names. Values are bytes: HTTP
    /// allows any byte from 0x80 up in a value (`obs-text`), and Envoy
    /// passes them on. The identity, chain and session headers stay bytes
    /// (what reads them refuses what it does not accept); the others are
    /// read as UTF-8 with each invalid sequence replaced by U+FFFD.
    pub fn from_headers<I, N, V>(headers: I, names: &HeaderNames<'_>) -> RequestHead
    where
        I: IntoIterator<Item = (N, V)>,
        N: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let mut head = RequestHead::default();
        for (name, value) in headers {
            let (name, value) = (name.as_ref(), value.as_ref());
            let text = || String::from_utf8_lossy(value);
            match name {
                b":method" => head.method = text().into_owned(),
                b":path" => head.path = text().into_owned(),
                b":authority" => head.authority = text().into_owned(),
                b"content-type" => {
                    let essence =
                        text().split(';').next().unwrap_or("").trim().to_ascii_lowercase();
                    head.content_type = essence;
                }
                b"content-length" => head.content_length = text().trim().parse().ok(),
                b"content-encoding" => {
                    head.content_encoding = Some(text().trim().to_ascii_lowercase())
                }
                _ if name == names.identity.as_bytes() => {
                    head.identity_header = Some(value.to_vec())
                }
                _ if name == names.delegation.as_bytes() => {
                    head.delegation_header = Some(value.to_vec())
                }
                _ if name == names.session.as_bytes() => head.session_header = Some(value.to_vec()),
                _ => {}
            }
        }
        head
    }

    /// Whether the body is declared compressed (any `content-encoding` but
    /// `identity`): such a body cannot be scanned as sent.
    pub fn is_encoded(&self) -> bool {
        self.content_encoding.as_deref().is_some_and(|e| !e.is_empty() && e != "identity")
    }

    /// Whether the body is declared as JSON (`application/json` or any
    /// `+json` type).
    pub fn is_json(&self) -> bool {
        self.content_type == "application/json" || self.content_type.ends_with("+json")
    }
}

/// A header map in the proxy-wasm serialisation that does not hold together
/// (a count or a length past the end, a missing terminator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMapError(pub &'static str);

impl std::fmt::Display for HeaderMapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed header map: {}", self.0)
    }
}

impl std::error::Error for HeaderMapError {}

/// A header's name and value, borrowed from the host's serialisation.
pub type HeaderPair<'a> = (&'a [u8], &'a [u8]);

/// Reads the pairs of a header map as the host hands it over
/// (`proxy_get_header_map_pairs`, proxy-wasm ABI 0.2.1): a little-endian
/// `u32` count, then a `u32` name length and a `u32` value length per pair,
/// then per pair the name, a NUL, the value and a NUL. The pairs borrow
/// from `bytes`, so no header is copied until [`RequestHead::from_headers`]
/// keeps the few it reads. Values are bytes, not text: the SDK's own
/// reading of the same map (`get_map`) panics on a value that is not UTF-8.
///
/// # Errors
/// [`HeaderMapError`] when the serialisation does not hold together
/// (never from a conforming host; the glue then reads no headers).
pub fn decode_header_map(bytes: &[u8]) -> Result<Vec<HeaderPair<'_>>, HeaderMapError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let word = |at: usize| -> Result<usize, HeaderMapError> {
        let end = at.checked_add(4).ok_or(HeaderMapError("length past the end"))?;
        let raw = bytes.get(at..end).ok_or(HeaderMapError("length past the end"))?;
        let mut le = [0u8; 4];
        le.copy_from_slice(raw);
        usize::try_from(u32::from_le_bytes(le)).map_err(|_| HeaderMapError("length too large"))
    };
    let count = word(0)?;
    // Each pair takes 8 bytes of lengths and 2 terminators: a count the
    // buffer cannot hold is refused before anything is reserved for it.
    if count > bytes.len() / 10 {
        return Err(HeaderMapError("more pairs than the map can hold"));
    }
    let mut pairs = Vec::with_capacity(count);
    let mut at = 4 + count * 8;
    let mut take = |len: usize| -> Result<&[u8], HeaderMapError> {
        let end = at.checked_add(len).ok_or(HeaderMapError("entry past the end"))?;
        let entry = bytes.get(at..end).ok_or(HeaderMapError("entry past the end"))?;
        if bytes.get(end) != Some(&0) {
            return Err(HeaderMapError("entry without its NUL terminator"));
        }
        at = end + 1;
        Ok(entry)
    };
    for i in 0..count {
        let name_len = word(4 + i * 8)?;
        let value_len = word(8 + i * 8)?;
        let name = take(name_len)?;
        let value = take(value_len)?;
        pairs.push((name, value));
    }
    Ok(pairs)
}

/// Writes header pairs in the serialisation [`decode_header_map`] reads
/// (the host's side, for tests and fuzzing).
pub fn encode_header_map<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> Vec<u8> {
    let mut out = Vec::new();
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    out.extend_from_slice(&len(pairs.len()));
    for (name, value) in pairs {
        out.extend_from_slice(&len(name.as_ref().len()));
        out.extend_from_slice(&len(value.as_ref().len()));
    }
    for (name, value) in pairs {
        out.extend_from_slice(name.as_ref());
        out.push(0);
        out.extend_from_slice(value.as_ref());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: HeaderNames<'static> = HeaderNames {
        identity: "x-warrant-agent",
        delegation: "x-oktsec-delegation",
        session: "x-oktsec-session",
    };

    #[test]
    fn reads_pseudo_headers_and_selected_headers() {
        let head = RequestHead::from_headers(
            [
                (":method", "POST"),
                (":path", "/v1/message"),
                (":authority", "bob.local"),
                ("content-type", "Application/JSON; charset=utf-8"),
                ("content-length", "12"),
                ("x-warrant-agent", "alice"),
                ("x-oktsec-delegation", "abc="),
                ("x-oktsec-session", "s-1"),
                ("x-other", "ignored"),
            ],
            &NAMES,
        );
        assert_eq!(head.delegation_header.as_deref(), Some(&b"abc="[..]));
        assert_eq!(head.session_header.as_deref(), Some(&b"s-1"[..]));
        assert_eq!(head.method, "POST");
        assert_eq!(head.content_type, "application/json");
        assert!(head.is_json());
        assert_eq!(head.content_length, Some(12));
        assert_eq!(head.identity_header.as_deref(), Some(&b"alice"[..]));
    }

    #[test]
    fn bad_content_length_is_absent() {
        let head = RequestHead::from_headers([("content-length", "12a")], &NAMES);
        assert_eq!(head.content_length, None);
    }

    #[test]
    fn values_that_are_not_utf8_are_kept_as_bytes_or_replaced() {
        let head = RequestHead::from_headers(
            [
                (&b":path"[..], &b"/caf\xe9"[..]),
                (b"x-warrant-agent", b"al\xffice"),
                (b"x-oktsec-delegation", b"abc\xff"),
                (b"x-oktsec-session", b"s\x80"),
                (b"x-other", b"\xfe\xff"),
            ],
            &NAMES,
        );
        assert_eq!(head.path, "/caf\u{fffd}");
        assert_eq!(head.identity_header.as_deref(), Some(&b"al\xffice"[..]));
        assert_eq!(head.delegation_header.as_deref(), Some(&b"abc\xff"[..]));
        assert_eq!(head.session_header.as_deref(), Some(&b"s\x80"[..]));
    }

    #[test]
    fn header_map_round_trips_any_bytes() {
        let pairs: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b"x-empty", b""),
            (b"x-bytes", b"\x00\xff\x80 nul inside"),
            (b"", b"empty name"),
        ];
        let bytes = encode_header_map(&pairs);
        assert_eq!(decode_header_map(&bytes), Ok(pairs));
        assert_eq!(decode_header_map(&[]), Ok(Vec::new()));
        assert_eq!(decode_header_map(&encode_header_map::<&[u8], &[u8]>(&[])), Ok(Vec::new()));
    }

    #[test]
    fn header_map_that_does_not_hold_together_is_an_error() {
        let good = encode_header_map(&[("a", "bc"), ("d", "")]);
        // Every truncation, and a terminator overwritten.
        for cut in 1..good.len() {
            assert!(decode_header_map(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut unterminated = good.clone();
        let last = unterminated.len() - 1;
        unterminated[last] = b'x';
        assert!(decode_header_map(&unterminated).is_err());
        // A count or a length far past the end.
        let mut huge_count = good.clone();
        huge_count[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_header_map(&huge_count).is_err());
        let mut huge_len = good;
        huge_len[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_header_map(&huge_len).is_err());
    }
}
