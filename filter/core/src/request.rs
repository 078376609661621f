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
    /// The value of the configured identity header, when present.
    pub identity_header: Option<String>,
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
    /// names), reading the configured header names.
    pub fn from_headers<'a, I>(headers: I, names: &HeaderNames<'_>) -> RequestHead
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut head = RequestHead::default();
        for (name, value) in headers {
            match name {
                ":method" => head.method = value.to_string(),
                ":path" => head.path = value.to_string(),
                ":authority" => head.authority = value.to_string(),
                "content-type" => {
                    let essence = value.split(';').next().unwrap_or("");
                    head.content_type = essence.trim().to_ascii_lowercase();
                }
                "content-length" => head.content_length = value.trim().parse().ok(),
                "content-encoding" => {
                    head.content_encoding = Some(value.trim().to_ascii_lowercase())
                }
                _ if name == names.identity => head.identity_header = Some(value.to_string()),
                _ if name == names.delegation => {
                    head.delegation_header = Some(value.as_bytes().to_vec())
                }
                _ if name == names.session => head.session_header = Some(value.as_bytes().to_vec()),
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
        assert_eq!(head.identity_header.as_deref(), Some("alice"));
    }

    #[test]
    fn bad_content_length_is_absent() {
        let head = RequestHead::from_headers([("content-length", "12a")], &NAMES);
        assert_eq!(head.content_length, None);
    }
}
