//! Which text of a request body gets scanned.
//!
//! - A JSON body (by `content-type`) must parse, or the request is refused
//!   with 400: a body the filter cannot read is never forwarded unscanned.
//!   - An oktsec envelope (an object with `from`, `to` or `content`, and no
//!     `jsonrpc`): its `content` ([`ContentKind::Message`]).
//!   - MCP JSON-RPC `tools/call`: the tool name ([`ContentKind::ToolName`])
//!     and the string values of its arguments
//!     ([`ContentKind::ToolArguments`]).
//!   - Any other JSON (other JSON-RPC methods, batches, plain documents):
//!     every string in it, keys included, decoded and one per line
//!     ([`ContentKind::Body`]), so JSON escapes such as `\u0069gnore` cannot
//!     hide words from the rules.
//! - Any other body: its text (invalid UTF-8 replaced), as
//!   [`ContentKind::Body`].

use std::fmt;

use serde_json::Value;
use warrant_rules::{ContentKind, ContentPart};

use crate::envelope::{Envelope, EnvelopeError};
use crate::request::RequestHead;

/// What the body turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyKind {
    /// No body.
    Empty,
    /// An oktsec envelope.
    Envelope(Box<Envelope>),
    /// A JSON-RPC request (MCP); `tool` is set for `tools/call`.
    JsonRpc {
        /// The JSON-RPC method.
        method: String,
        /// The tool name of a `tools/call`.
        tool: Option<String>,
    },
    /// Other JSON.
    Json,
    /// Not JSON.
    Text,
}

/// A piece of text to scan, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Where it came from.
    pub kind: ContentKind,
    /// The text.
    pub text: String,
}

/// The body's kind and the text to scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// What the body is.
    pub kind: BodyKind,
    /// The text to scan, in order.
    pub parts: Vec<Part>,
}

impl Extracted {
    /// Borrowed parts, as the rule engine takes them.
    pub fn content_parts(&self) -> Vec<ContentPart<'_>> {
        self.parts.iter().map(|p| ContentPart { kind: p.kind, text: &p.text }).collect()
    }
}

/// Why a body could not be read (answered 400 `invalid_request`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtractError {
    /// Declared JSON, but not valid JSON.
    InvalidJson(String),
    /// An envelope-shaped object that is not a valid envelope.
    Envelope(EnvelopeError),
    /// A JSON-RPC `tools/call` without a string `params.name`.
    InvalidToolCall(String),
}

impl fmt::Display for ExtractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtractError::InvalidJson(why) => write!(f, "body is not valid JSON: {why}"),
            ExtractError::Envelope(e) => e.fmt(f),
            ExtractError::InvalidToolCall(why) => write!(f, "invalid MCP tools/call: {why}"),
        }
    }
}

impl std::error::Error for ExtractError {}

/// Reads `body` according to `head`. `envelopes` says whether envelope
/// parsing is enabled (the `envelope` identity source is configured).
///
/// # Errors
/// [`ExtractError`] when a JSON body cannot be read.
pub fn extract(
    head: &RequestHead,
    body: &[u8],
    envelopes: bool,
) -> Result<Extracted, ExtractError> {
    if body.is_empty() {
        return Ok(Extracted { kind: BodyKind::Empty, parts: Vec::new() });
    }
    if !head.is_json() {
        let text = String::from_utf8_lossy(body).into_owned();
        return Ok(Extracted {
            kind: BodyKind::Text,
            parts: vec![Part { kind: ContentKind::Body, text }],
        });
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ExtractError::InvalidJson(e.to_string()))?;
    if let Value::Object(object) = &value {
        if envelopes && Envelope::is_envelope_shaped(object) {
            let envelope = Envelope::from_value(value).map_err(ExtractError::Envelope)?;
            let parts = vec![Part { kind: ContentKind::Message, text: envelope.content.clone() }];
            return Ok(Extracted { kind: BodyKind::Envelope(Box::new(envelope)), parts });
        }
        if let Some(Value::String(method)) = object.get("jsonrpc").and(object.get("method")) {
            return json_rpc(method.clone(), object);
        }
    }
    Ok(Extracted {
        kind: BodyKind::Json,
        parts: vec![Part { kind: ContentKind::Body, text: strings_of(&value) }],
    })
}

fn json_rpc(
    method: String,
    object: &serde_json::Map<String, Value>,
) -> Result<Extracted, ExtractError> {
    if method != "tools/call" {
        let text = strings_of(&Value::Object(object.clone()));
        let parts = vec![Part { kind: ContentKind::Body, text }];
        return Ok(Extracted { kind: BodyKind::JsonRpc { method, tool: None }, parts });
    }
    let params = object.get("params");
    let Some(Value::String(tool)) = params.and_then(|p| p.get("name")) else {
        return Err(ExtractError::InvalidToolCall("`params.name` must be a string".into()));
    };
    let mut parts = vec![Part { kind: ContentKind::ToolName, text: tool.clone() }];
    if let Some(arguments) = params.and_then(|p| p.get("arguments")) {
        parts.push(Part { kind: ContentKind::ToolArguments, text: strings_of(arguments) });
    }
    Ok(Extracted { kind: BodyKind::JsonRpc { method, tool: Some(tool.clone()) }, parts })
}

/// Every string in a JSON value (object keys included), one per line.
fn strings_of(value: &Value) -> String {
    let mut out = String::new();
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::String(s) => push_line(&mut out, s),
            Value::Array(items) => stack.extend(items.iter().rev()),
            Value::Object(map) => {
                // Keys now; values later, in document order (the stack pops
                // the last pushed first).
                for key in map.keys() {
                    push_line(&mut out, key);
                }
                stack.extend(map.values().rev());
            }
            Value::Number(n) => push_line(&mut out, &n.to_string()),
            Value::Bool(_) | Value::Null => {}
        }
    }
    out
}

fn push_line(out: &mut String, s: &str) {
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_head() -> RequestHead {
        RequestHead { content_type: "application/json".into(), ..Default::default() }
    }

    #[test]
    fn envelope_content_is_the_message() {
        let body = br#"{"from":"alice","to":"bob","content":"hi there"}"#;
        let got = extract(&json_head(), body, true).unwrap();
        assert!(matches!(got.kind, BodyKind::Envelope(_)));
        assert_eq!(got.parts, vec![Part { kind: ContentKind::Message, text: "hi there".into() }]);
    }

    #[test]
    fn envelope_parsing_can_be_off() {
        let body = br#"{"from":"alice","to":"bob","content":"hi"}"#;
        assert_eq!(extract(&json_head(), body, false).unwrap().kind, BodyKind::Json);
    }

    #[test]
    fn mcp_tools_call_yields_tool_name_and_decoded_arguments() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"shell","arguments":{"cmd":"\u0069nsmod x"}}}"#;
        let got = extract(&json_head(), body, true).unwrap();
        assert_eq!(
            got.kind,
            BodyKind::JsonRpc { method: "tools/call".into(), tool: Some("shell".into()) }
        );
        assert_eq!(got.parts[0], Part { kind: ContentKind::ToolName, text: "shell".into() });
        assert_eq!(got.parts[1].kind, ContentKind::ToolArguments);
        assert!(got.parts[1].text.contains("insmod x"), "{}", got.parts[1].text);
    }

    #[test]
    fn tools_call_without_name_is_refused() {
        let body = br#"{"jsonrpc":"2.0","method":"tools/call","params":{}}"#;
        assert!(matches!(extract(&json_head(), body, true), Err(ExtractError::InvalidToolCall(_))));
    }

    #[test]
    fn invalid_json_is_refused_and_text_is_scanned_as_is() {
        assert!(matches!(
            extract(&json_head(), b"{\"from\": ", true),
            Err(ExtractError::InvalidJson(_))
        ));
        let text = RequestHead { content_type: "text/plain".into(), ..Default::default() };
        let got = extract(&text, b"plain \xff words", true).unwrap();
        assert_eq!(got.kind, BodyKind::Text);
        assert_eq!(got.parts[0].text, "plain \u{fffd} words");
    }

    #[test]
    fn other_json_scans_every_string() {
        let got = extract(&json_head(), br#"{"a":["x",{"b":"y"}],"n":3}"#, true).unwrap();
        let text = &got.parts[0].text;
        for word in ["a", "x", "b", "y", "n", "3"] {
            assert!(text.lines().any(|l| l == word), "{word} missing from {text:?}");
        }
    }
}
