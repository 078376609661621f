//! One delegation token: its JSON form, its signed payload and its id.
//!
//! A [`Token`] is one grant: `delegator` lets `delegate` message the
//! recipients in `scope` (and use the tools in `allowed_tools`) until
//! `expires_at`. A token on its own proves nothing: [`crate::Chain`] parses
//! tokens from a header and only [`crate::Chain::verify`] says they hold.
//!
//! # JSON form (oktsec v0.13 `DelegationToken`)
//!
//! One object per token, keys in this order when written:
//!
//! | key | JSON type | notes |
//! |---|---|---|
//! | `delegator` | string | who grants; signs the token |
//! | `delegate` | string | who receives the grant |
//! | `scope` | array of strings | recipients; `"*"` = any; `null` read as `[]` |
//! | `issued_at` | RFC 3339 string | written as UTC `RFC3339Nano` |
//! | `expires_at` | RFC 3339 string | written as UTC `RFC3339Nano` |
//! | `signature` | string | std padded base64 of the Ed25519 signature; omitted when empty |
//! | `token_id` | string | SHA-256 hex of the payload; omitted when empty |
//! | `parent_token_id` | string | the previous token's id; omitted when empty (root) |
//! | `chain_depth` | integer | the token's index in the chain |
//! | `max_depth` | integer | the largest `chain_depth` this token accepts |
//! | `allowed_tools` | array of strings | tool scope; omitted when empty (= all tools) |
//!
//! Reading follows Go's decoder where it matters for interoperability:
//! unknown keys are ignored, `null` reads as empty, and a missing
//! `chain_depth`/`max_depth` reads as 0. It is stricter in three ways: keys
//! match case-sensitively (oktsec always writes them in lower case), a
//! repeated key is an error, and names are checked (see below).
//!
//! # Signed payload (9 fields)
//!
//! The UTF-8 bytes of these fields joined by `\n`, no trailing newline:
//! `delegator`, `delegate`, `scope` joined by `,`, `issued_at` and
//! `expires_at` in UTC at second precision, `parent_token_id`,
//! `chain_depth` and `max_depth` in decimal, `allowed_tools` joined by `,`.
//! For example:
//!
//! ```text
//! human
//! agent-a
//! target-agent,other-agent
//! 2026-03-24T12:00:00Z
//! 2026-03-24T16:00:00Z
//!
//! 0
//! 3
//! Bash,Read
//! ```
//!
//! `token_id` is the lowercase hex SHA-256 of the payload and `signature`
//! the Ed25519 signature over it; neither is part of it. Because lists are
//! joined by `,` and fields by `\n`, names (delegator, delegate, scope
//! entries, tools) must be non-empty and free of commas and control
//! characters; parsing refuses any other ([`crate::NameDefect`]).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{DelegationError, NameDefect};
use crate::time::{TimeError, Timestamp};

/// One delegation grant, as carried in the header. Unverified data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Who grants (and signs).
    pub delegator: String,
    /// Who receives the grant.
    pub delegate: String,
    /// Recipients the delegate may message; `"*"` means any, empty means
    /// none.
    pub scope: Vec<String>,
    /// When the grant was made.
    pub issued_at: Timestamp,
    /// When the grant ends (a check at exactly this instant still passes).
    pub expires_at: Timestamp,
    /// Standard padded base64 of the signature; empty when unsigned.
    pub signature: String,
    /// SHA-256 hex of the payload as stored; empty when absent.
    pub token_id: String,
    /// The previous token's id; empty for the root.
    pub parent_token_id: String,
    /// The token's index in its chain.
    pub chain_depth: i64,
    /// The largest `chain_depth` this token accepts.
    pub max_depth: i64,
    /// Tools the delegate may use; empty means all.
    pub allowed_tools: Vec<String>,
}

impl Token {
    /// The exact bytes that are signed and hashed (the 9-field payload
    /// specified in the module doc).
    pub fn signed_payload(&self) -> Vec<u8> {
        let fields = [
            self.delegator.clone(),
            self.delegate.clone(),
            self.scope.join(","),
            self.issued_at.to_rfc3339_seconds(),
            self.expires_at.to_rfc3339_seconds(),
            self.parent_token_id.clone(),
            self.chain_depth.to_string(),
            self.max_depth.to_string(),
            self.allowed_tools.join(","),
        ];
        fields.join("\n").into_bytes()
    }

    /// The lowercase hex SHA-256 of [`Token::signed_payload`]: what
    /// `token_id` must be.
    pub fn computed_token_id(&self) -> String {
        hex::encode(Sha256::digest(self.signed_payload()))
    }

    /// The decoded signature.
    ///
    /// # Errors
    /// [`DelegationError::InvalidSignatureEncoding`] (with `hop`) when the
    /// field is empty, not standard padded base64, or not 64 bytes.
    pub fn decoded_signature(&self, hop: usize) -> Result<Signature, DelegationError> {
        let bytes = STANDARD
            .decode(&self.signature)
            .map_err(|_| DelegationError::InvalidSignatureEncoding { hop })?;
        let bytes: [u8; 64] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| DelegationError::InvalidSignatureEncoding { hop })?;
        Ok(Signature::from_bytes(&bytes))
    }

    /// A human-readable summary, one `label: value` per line.
    ///
    /// # Example
    /// ```text
    /// token id:   3f1c...(64 hex)
    /// delegator:  human
    /// delegate:   agent-a
    /// scope:      target-agent
    /// tools:      all
    /// depth:      0 / 3
    /// issued at:  2026-03-24T12:00:00Z
    /// expires at: 2026-03-24T16:00:00Z
    /// parent:     none (root token)
    /// ```
    pub fn format_text(&self) -> String {
        let id =
            if self.token_id.is_empty() { self.computed_token_id() } else { self.token_id.clone() };
        let tools = if self.allowed_tools.is_empty() {
            "all".into()
        } else {
            self.allowed_tools.join(", ")
        };
        let parent = if self.parent_token_id.is_empty() {
            "none (root token)".to_string()
        } else {
            // Only a prefix: enough to match by eye. Counting chars cannot
            // panic on short or non-ASCII ids (oktsec's CLI slices blindly).
            let head: String = self.parent_token_id.chars().take(16).collect();
            format!("{head}...")
        };
        format!(
            "token id:   {id}\ndelegator:  {}\ndelegate:   {}\nscope:      {}\ntools:      {tools}\n\
             depth:      {} / {}\nissued at:  {}\nexpires at: {}\nparent:     {parent}\n",
            self.delegator,
            self.delegate,
            self.scope.join(", "),
            self.chain_depth,
            self.max_depth,
            self.issued_at,
            self.expires_at,
        )
    }

    /// Builds a token from its JSON form, checking names and times.
    pub(crate) fn from_wire(wire: WireToken, hop: usize) -> Result<Token, DelegationError> {
        let delegator = wire.delegator.unwrap_or_default();
        let delegate = wire.delegate.unwrap_or_default();
        let scope = wire.scope.unwrap_or_default();
        let allowed_tools = wire.allowed_tools.unwrap_or_default();
        check_name(hop, "delegator", &delegator)?;
        check_name(hop, "delegate", &delegate)?;
        for entry in &scope {
            check_name(hop, "scope", entry)?;
        }
        for tool in &allowed_tools {
            check_name(hop, "allowed_tools", tool)?;
        }
        Ok(Token {
            delegator,
            delegate,
            scope,
            issued_at: parse_time(hop, "issued_at", wire.issued_at.as_deref())?,
            expires_at: parse_time(hop, "expires_at", wire.expires_at.as_deref())?,
            signature: wire.signature.unwrap_or_default(),
            token_id: wire.token_id.unwrap_or_default(),
            parent_token_id: wire.parent_token_id.unwrap_or_default(),
            chain_depth: wire.chain_depth.unwrap_or(0),
            max_depth: wire.max_depth.unwrap_or(0),
            allowed_tools,
        })
    }
}

/// Encodes tokens as a header value: standard padded base64 of the JSON
/// array, root first, keys in the order of the module doc.
///
/// # Example
/// ```
/// # use warrant_delegation::encode_header;
/// assert_eq!(encode_header(&[]), "W10="); // "[]", which no verifier accepts
/// ```
pub fn encode_header(tokens: &[Token]) -> String {
    STANDARD.encode(encode_json(tokens))
}

/// The JSON array of tokens (the decoded header), root first.
pub fn encode_json(tokens: &[Token]) -> Vec<u8> {
    let wire: Vec<WireTokenOut<'_>> = tokens.iter().map(WireTokenOut::from).collect();
    // Serialising strings, integers and vectors of strings into a Vec cannot
    // fail; the fallback keeps the function total without a panic path.
    serde_json::to_vec(&wire).unwrap_or_default()
}

/// Checks one name: non-empty, no comma, no control character.
pub(crate) fn check_name(
    hop: usize,
    field: &'static str,
    name: &str,
) -> Result<(), DelegationError> {
    let defect = if name.is_empty() {
        NameDefect::Empty
    } else if name.contains(',') {
        NameDefect::Comma
    } else if name.chars().any(char::is_control) {
        NameDefect::ControlCharacter
    } else {
        return Ok(());
    };
    Err(DelegationError::InvalidName { hop, field, defect })
}

/// The token as JSON gives it: every field optional, `null` allowed, so the
/// checks in [`Token::from_wire`] can name what is missing or wrong.
#[derive(Debug, Deserialize)]
pub(crate) struct WireToken {
    delegator: Option<String>,
    delegate: Option<String>,
    scope: Option<Vec<String>>,
    issued_at: Option<String>,
    expires_at: Option<String>,
    signature: Option<String>,
    token_id: Option<String>,
    parent_token_id: Option<String>,
    chain_depth: Option<i64>,
    max_depth: Option<i64>,
    allowed_tools: Option<Vec<String>>,
}

/// The token as we write it, borrowing from a [`Token`].
#[derive(Serialize)]
struct WireTokenOut<'a> {
    delegator: &'a str,
    delegate: &'a str,
    scope: &'a [String],
    issued_at: String,
    expires_at: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    signature: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    token_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    parent_token_id: &'a str,
    chain_depth: i64,
    max_depth: i64,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    allowed_tools: &'a [String],
}

impl<'a> From<&'a Token> for WireTokenOut<'a> {
    fn from(t: &'a Token) -> Self {
        WireTokenOut {
            delegator: &t.delegator,
            delegate: &t.delegate,
            scope: &t.scope,
            issued_at: t.issued_at.to_string(),
            expires_at: t.expires_at.to_string(),
            signature: &t.signature,
            token_id: &t.token_id,
            parent_token_id: &t.parent_token_id,
            chain_depth: t.chain_depth,
            max_depth: t.max_depth,
            allowed_tools: &t.allowed_tools,
        }
    }
}

fn parse_time(
    hop: usize,
    field: &'static str,
    text: Option<&str>,
) -> Result<Timestamp, DelegationError> {
    let text =
        text.ok_or(DelegationError::InvalidTime { hop, field, reason: TimeError::Syntax })?;
    Timestamp::parse_rfc3339(text).map_err(|reason| DelegationError::InvalidTime {
        hop,
        field,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Token {
        Token {
            delegator: "human".into(),
            delegate: "agent-a".into(),
            scope: vec!["target-agent".into(), "other-agent".into()],
            issued_at: Timestamp::parse_rfc3339("2026-03-24T12:00:00.75Z").unwrap(),
            expires_at: Timestamp::parse_rfc3339("2026-03-24T16:00:00Z").unwrap(),
            signature: String::new(),
            token_id: String::new(),
            parent_token_id: String::new(),
            chain_depth: 0,
            max_depth: 3,
            allowed_tools: vec!["Bash".into(), "Read".into()],
        }
    }

    #[test]
    fn payload_is_nine_newline_separated_fields_at_second_precision() {
        let want = "human\nagent-a\ntarget-agent,other-agent\n2026-03-24T12:00:00Z\n\
                    2026-03-24T16:00:00Z\n\n0\n3\nBash,Read";
        assert_eq!(String::from_utf8(sample().signed_payload()).unwrap(), want);
    }

    #[test]
    fn token_id_is_sha256_hex_of_the_payload_and_deterministic() {
        let token = sample();
        let id = token.computed_token_id();
        assert_eq!(id, hex::encode(Sha256::digest(token.signed_payload())));
        assert_eq!(id, sample().computed_token_id());
        let mut other = sample();
        other.max_depth = 2;
        assert_ne!(other.computed_token_id(), id);
    }

    #[test]
    fn json_keeps_go_key_order_and_omits_empty_optional_fields() {
        let json = String::from_utf8(encode_json(&[sample()])).unwrap();
        assert_eq!(
            json,
            r#"[{"delegator":"human","delegate":"agent-a","scope":["target-agent","other-agent"],"issued_at":"2026-03-24T12:00:00.75Z","expires_at":"2026-03-24T16:00:00Z","chain_depth":0,"max_depth":3,"allowed_tools":["Bash","Read"]}]"#
        );
    }

    #[test]
    fn names_must_be_non_empty_without_commas_or_control_characters() {
        let cases = [
            ("", Some(NameDefect::Empty)),
            ("a,b", Some(NameDefect::Comma)),
            ("a\nb", Some(NameDefect::ControlCharacter)),
            ("a\rb", Some(NameDefect::ControlCharacter)),
            ("a\u{7f}", Some(NameDefect::ControlCharacter)),
            ("agent-a", None),
            ("*", None),
            ("ägent ü", None),
        ];
        for (name, want) in cases {
            let got = check_name(0, "delegate", name).err();
            let want = want.map(|defect| DelegationError::InvalidName {
                hop: 0,
                field: "delegate",
                defect,
            });
            assert_eq!(got, want, "{name:?}");
        }
    }

    #[test]
    fn signature_must_be_padded_standard_base64_of_64_bytes() {
        let mut token = sample();
        for bad in ["", "AAAA", &STANDARD.encode([0u8; 63]), "not base64"] {
            token.signature = bad.to_string();
            assert_eq!(
                token.decoded_signature(4),
                Err(DelegationError::InvalidSignatureEncoding { hop: 4 })
            );
        }
        token.signature = STANDARD.encode([1u8; 64]);
        assert!(token.decoded_signature(0).is_ok());
    }

    #[test]
    fn text_summary_survives_short_parent_ids() {
        let mut token = sample();
        token.parent_token_id = "abc".into();
        let text = token.format_text();
        assert!(text.contains("parent:     abc...\n"), "{text}");
        assert!(text.contains("depth:      0 / 3\n"), "{text}");
        assert!(text.contains("tools:      Bash, Read\n"), "{text}");
        token.parent_token_id = "é".repeat(20);
        assert!(token.format_text().contains(&format!("parent:     {}...", "é".repeat(16))));
    }
}
