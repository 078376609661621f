//! Which text of a request body gets scanned.
//!
//! - A JSON body must parse strictly, or the request is refused with 400: a
//!   body the filter cannot read is never forwarded unscanned. Strictly
//!   means: valid UTF-8 (lone surrogate escapes included), no object with
//!   the same key twice (parsers disagree on which value wins, so the filter
//!   could scan one value and the upstream act on the other), and at most
//!   `max_json_depth` levels of arrays and objects.
//!   - An oktsec envelope (an object with `from`, `to` or `content`, and no
//!     `jsonrpc`): its `content` ([`ContentKind::Message`]).
//!   - A JSON-RPC call (an object with a string `method` and `jsonrpc`, or
//!     with `method` `tools/call` and no `jsonrpc`): for MCP `tools/call`,
//!     the tool name ([`ContentKind::ToolName`]), the strings of its
//!     arguments ([`ContentKind::ToolArguments`]) and every other string of
//!     the call, keys and `id` included ([`ContentKind::Body`]); for other
//!     methods, every string.
//!   - A JSON-RPC batch (an array one of whose elements is such a call):
//!     every element must be an object, and each is read as above, so every
//!     call's tool is checked and scanned ([`Extracted::tools`]).
//!   - Any other JSON: every string in it, keys included, decoded and one
//!     per line ([`ContentKind::Body`]), so JSON escapes such as
//!     `\u0069gnore` cannot hide words from the rules.
//! - A body not declared JSON: if it parses strictly as a JSON object or
//!   array, it is read as JSON all the same (a mislabelled `tools/call` is
//!   still a tool call to the upstream); otherwise its text, with invalid
//!   UTF-8 replaced by U+FFFD, as [`ContentKind::Body`].

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
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
    /// A JSON-RPC batch: the method of every call, and the tool of every
    /// `tools/call`, in order.
    JsonRpcBatch {
        /// Every call's method (responses in the batch have none).
        methods: Vec<String>,
        /// Every `tools/call`'s tool name.
        tools: Vec<String>,
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
    /// The text to scan, in order, beside an envelope's content (which
    /// stays in the envelope, not copied: see [`Extracted::content_parts`]).
    pub parts: Vec<Part>,
}

impl Extracted {
    /// Borrowed parts, as the rule engine takes them: an envelope's
    /// content (as [`ContentKind::Message`]), then [`Extracted::parts`].
    pub fn content_parts(&self) -> Vec<ContentPart<'_>> {
        let message = match &self.kind {
            BodyKind::Envelope(envelope) => {
                Some(ContentPart { kind: ContentKind::Message, text: envelope.content.as_str() })
            }
            _ => None,
        };
        let parts = self.parts.iter().map(|p| ContentPart { kind: p.kind, text: &p.text });
        message.into_iter().chain(parts).collect()
    }

    /// The MCP tools the body calls: one for a `tools/call`, every call's
    /// for a batch, none otherwise.
    pub fn tools(&self) -> Vec<&str> {
        match &self.kind {
            BodyKind::JsonRpc { tool: Some(tool), .. } => vec![tool.as_str()],
            BodyKind::JsonRpcBatch { tools, .. } => tools.iter().map(String::as_str).collect(),
            _ => Vec::new(),
        }
    }
}

/// Nesting depth used by [`extract`]; the configuration's default.
pub const DEFAULT_MAX_DEPTH: u32 = 32;

/// Why a body could not be read (answered 400 `invalid_request`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtractError {
    /// Declared JSON, but not valid JSON.
    InvalidJson(String),
    /// An envelope-shaped object that is not a valid envelope.
    Envelope(EnvelopeError),
    /// A JSON-RPC `tools/call` without a string `params.name`.
    InvalidToolCall(String),
    /// An array mixing JSON-RPC calls with elements that are not objects.
    InvalidBatch(String),
}

impl fmt::Display for ExtractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtractError::InvalidJson(why) => write!(f, "body is not valid JSON: {why}"),
            ExtractError::Envelope(e) => e.fmt(f),
            ExtractError::InvalidToolCall(why) => write!(f, "invalid MCP tools/call: {why}"),
            ExtractError::InvalidBatch(why) => write!(f, "invalid JSON-RPC batch: {why}"),
        }
    }
}

impl std::error::Error for ExtractError {}

/// Reads `body` according to `head`, with nesting capped at
/// [`DEFAULT_MAX_DEPTH`]. `envelopes` says whether envelope parsing is
/// enabled (the `envelope` identity source is configured).
///
/// # Errors
/// [`ExtractError`] when a JSON body cannot be read.
pub fn extract(
    head: &RequestHead,
    body: &[u8],
    envelopes: bool,
) -> Result<Extracted, ExtractError> {
    extract_limited(head, body, envelopes, DEFAULT_MAX_DEPTH)
}

/// [`extract`] with nesting capped at `max_depth` levels.
///
/// # Errors
/// [`ExtractError`] when a JSON body cannot be read.
pub fn extract_limited(
    head: &RequestHead,
    body: &[u8],
    envelopes: bool,
    max_depth: u32,
) -> Result<Extracted, ExtractError> {
    if body.is_empty() {
        return Ok(Extracted { kind: BodyKind::Empty, parts: Vec::new() });
    }
    let value = if head.is_json() {
        parse_strict(body, max_depth).map_err(ExtractError::InvalidJson)?
    } else {
        let looks_like_json =
            matches!(body.iter().find(|b| !b.is_ascii_whitespace()), Some(b'{' | b'['));
        match looks_like_json.then(|| parse_strict(body, max_depth)) {
            Some(Ok(value)) => value,
            _ => {
                let text = String::from_utf8_lossy(body).into_owned();
                return Ok(Extracted {
                    kind: BodyKind::Text,
                    parts: vec![Part { kind: ContentKind::Body, text }],
                });
            }
        }
    };
    match &value {
        Value::Object(object) => {
            if envelopes && Envelope::is_envelope_shaped(object) {
                let envelope = Envelope::from_value(value).map_err(ExtractError::Envelope)?;
                let kind = BodyKind::Envelope(Box::new(envelope));
                return Ok(Extracted { kind, parts: Vec::new() });
            }
            if let Some(method) = call_method(object) {
                let (tool, parts) = json_rpc(method, object)?;
                let method = method.to_string();
                return Ok(Extracted { kind: BodyKind::JsonRpc { method, tool }, parts });
            }
        }
        Value::Array(items) if items.iter().any(is_call) => return batch(items),
        _ => {}
    }
    Ok(Extracted {
        kind: BodyKind::Json,
        parts: vec![Part { kind: ContentKind::Body, text: strings_of(&value) }],
    })
}

/// Parses JSON strictly (see the module doc); the error says why not.
fn parse_strict(body: &[u8], max_depth: u32) -> Result<Value, String> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value =
        Strict { depth: 0, max_depth }.deserialize(&mut deserializer).map_err(|e| e.to_string())?;
    deserializer.end().map_err(|e| e.to_string())?;
    Ok(value)
}

/// The method of a JSON-RPC call object (see the module doc), if it is one.
fn call_method(object: &Map<String, Value>) -> Option<&str> {
    match object.get("method") {
        Some(Value::String(method)) if object.contains_key("jsonrpc") || method == "tools/call" => {
            Some(method)
        }
        _ => None,
    }
}

fn is_call(value: &Value) -> bool {
    match value {
        Value::Object(object) => object.contains_key("jsonrpc") || call_method(object).is_some(),
        _ => false,
    }
}

fn batch(items: &[Value]) -> Result<Extracted, ExtractError> {
    let mut methods = Vec::new();
    let mut tools = Vec::new();
    let mut parts = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let Value::Object(object) = item else {
            return Err(ExtractError::InvalidBatch(format!("element {index} is not an object")));
        };
        match call_method(object) {
            Some(method) => {
                let (tool, call_parts) = json_rpc(method, object).map_err(|e| match e {
                    ExtractError::InvalidToolCall(why) => {
                        ExtractError::InvalidToolCall(format!("element {index}: {why}"))
                    }
                    other => other,
                })?;
                methods.push(method.to_string());
                tools.extend(tool);
                parts.extend(call_parts);
            }
            // A response, or an object that is no call: scanned whole.
            None => parts.push(Part { kind: ContentKind::Body, text: strings_of(item) }),
        }
    }
    Ok(Extracted { kind: BodyKind::JsonRpcBatch { methods, tools }, parts })
}

/// The tool (for `tools/call`) and the parts of one call.
fn json_rpc(
    method: &str,
    object: &Map<String, Value>,
) -> Result<(Option<String>, Vec<Part>), ExtractError> {
    if method != "tools/call" {
        let text = object_strings(object, false);
        return Ok((None, vec![Part { kind: ContentKind::Body, text }]));
    }
    let params = object.get("params");
    let Some(Value::String(tool)) = params.and_then(|p| p.get("name")) else {
        return Err(ExtractError::InvalidToolCall("`params.name` must be a string".into()));
    };
    let mut parts = vec![Part { kind: ContentKind::ToolName, text: tool.clone() }];
    if let Some(arguments) = params.and_then(|p| p.get("arguments")) {
        parts.push(Part { kind: ContentKind::ToolArguments, text: strings_of(arguments) });
    }
    // Whatever else the call carries (`id`, `params._meta`, extra members)
    // reaches the upstream too, so it is scanned as well.
    parts.push(Part { kind: ContentKind::Body, text: object_strings(object, true) });
    Ok((Some(tool.clone()), parts))
}

/// A JSON value builder that refuses duplicate keys and nesting past
/// `max_depth`.
#[derive(Clone, Copy)]
struct Strict {
    depth: u32,
    max_depth: u32,
}

impl Strict {
    fn deeper<E: de::Error>(self) -> Result<Strict, E> {
        if self.depth >= self.max_depth {
            return Err(E::custom(format!(
                "nesting deeper than {} levels of arrays and objects",
                self.max_depth
            )));
        }
        Ok(Strict { depth: self.depth + 1, max_depth: self.max_depth })
    }
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.deeper()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.deeper()?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "duplicate key {key:?}: which value counts would depend on the parser"
                )));
            }
            let value = map.next_value_seed(inner)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Every string in a JSON value (object keys included), one per line.
fn strings_of(value: &Value) -> String {
    let mut out = String::new();
    strings_into(&mut out, value);
    out
}

/// [`strings_of`] of `object`; with `without_call`, its `params` object
/// goes in without its `name` and `arguments` (a `tools/call`'s tool and
/// arguments, scanned as their own parts). The same text as [`strings_of`]
/// of a copy of `object` with those two members removed, without the copy.
fn object_strings(object: &Map<String, Value>, without_call: bool) -> String {
    let mut out = String::new();
    for key in object.keys() {
        push_line(&mut out, key);
    }
    for (key, value) in object {
        match value {
            Value::Object(params) if without_call && key == "params" => {
                let kept = |k: &&String| !matches!(k.as_str(), "name" | "arguments");
                for k in params.keys().filter(kept) {
                    push_line(&mut out, k);
                }
                for (_, v) in params.iter().filter(|(k, _)| kept(k)) {
                    strings_into(&mut out, v);
                }
            }
            _ => strings_into(&mut out, value),
        }
    }
    out
}

/// Appends every string of `value` to `out`, one per line, in document
/// order (keys of an object before its values).
fn strings_into(out: &mut String, value: &Value) {
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::String(s) => push_line(out, s),
            Value::Array(items) => stack.extend(items.iter().rev()),
            Value::Object(map) => {
                // Keys now; values later, in document order (the stack pops
                // the last pushed first).
                for key in map.keys() {
                    push_line(out, key);
                }
                stack.extend(map.values().rev());
            }
            Value::Number(n) => push_line(out, &n.to_string()),
            Value::Bool(_) | Value::Null => {}
        }
    }
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

    /// The text of a call's other members is what `strings_of` gives for a
    /// copy of the object without `params.name` and `params.arguments`.
    #[test]
    fn the_rest_of_a_call_is_read_without_copying_it() {
        let bodies = [
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"t","arguments":{"a":["x",{"b":"y"}]},"_meta":{"k":"v"},"z":[1,"w"]},"extra":"e"}"#,
            r#"{"method":"tools/call","params":{"arguments":"s","name":"t"}}"#,
            r#"{"b":{"c":"d"},"method":"tools/list","params":{"name":"kept","arguments":"kept too"},"a":1}"#,
        ];
        for body in bodies {
            let Value::Object(object) = serde_json::from_str::<Value>(body).unwrap() else {
                panic!("{body}")
            };
            assert_eq!(object_strings(&object, false), strings_of(&Value::Object(object.clone())));
            let mut rest = object.clone();
            if let Some(Value::Object(params)) = rest.get_mut("params") {
                params.remove("name");
                params.remove("arguments");
            }
            assert_eq!(object_strings(&object, true), strings_of(&Value::Object(rest)), "{body}");
        }
    }

    #[test]
    fn envelope_content_is_the_message() {
        let body = br#"{"from":"alice","to":"bob","content":"hi there"}"#;
        let got = extract(&json_head(), body, true).unwrap();
        assert!(matches!(got.kind, BodyKind::Envelope(_)));
        assert!(got.parts.is_empty(), "the content is not copied: {:?}", got.parts);
        let parts = got.content_parts();
        assert_eq!(
            (parts.len(), parts[0].kind, parts[0].text),
            (1, ContentKind::Message, "hi there")
        );
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

    fn refused(body: &[u8]) -> String {
        match extract(&json_head(), body, true) {
            Err(e) => e.to_string(),
            Ok(got) => panic!("accepted {:?}: {got:?}", String::from_utf8_lossy(body)),
        }
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let cases: [&[u8]; 4] = [
            br#"{"from":"alice","to":"bob","content":"hi","content":"rm -rf /"}"#,
            br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"read","name":"shell"}}"#,
            br#"{"a":{"b":1,"b":2}}"#,
            br#"[{"x":1},{"y":[{"k":1,"k":1}]}]"#,
        ];
        for body in cases {
            let why = refused(body);
            assert!(why.contains("duplicate key"), "{why}");
        }
        // The same key in sibling objects is fine.
        assert!(extract(&json_head(), br#"[{"k":1},{"k":2}]"#, true).is_ok());
    }

    #[test]
    fn nesting_is_capped() {
        let nested = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n)).into_bytes();
        assert!(extract_limited(&json_head(), &nested(8), true, 8).is_ok());
        let why = match extract_limited(&json_head(), &nested(9), true, 8) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("9 levels accepted with a cap of 8"),
        };
        assert!(why.contains("nesting deeper than 8"), "{why}");
        // Far past serde_json's own limit: refused, no stack overflow.
        assert!(refused(&nested(100_000)).contains("not valid JSON"));
        let objects = "{\"a\":".repeat(40) + "1" + &"}".repeat(40);
        assert!(refused(objects.as_bytes()).contains("nesting deeper than 32"));
    }

    #[test]
    fn invalid_utf8_in_json_is_refused_and_in_text_is_replaced() {
        assert!(refused(b"{\"content\":\"caf\xe9\"}").contains("not valid JSON"));
        assert!(refused(br#"{"content":"\ud800"}"#).contains("not valid JSON"));
        assert!(refused(b"\xef\xbb\xbf{}").contains("not valid JSON"), "a BOM is refused");
        let text = RequestHead { content_type: "text/plain".into(), ..Default::default() };
        let got = extract(&text, b"ins\xffmod words", true).unwrap();
        assert_eq!(got.parts[0].text, "ins\u{fffd}mod words");
    }

    #[test]
    fn batch_reads_every_call() {
        let body = br#"[
            {"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read","arguments":{"p":"a"}}},
            {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"shell","arguments":{"cmd":"insmod x"}}},
            {"jsonrpc":"2.0","method":"notifications/initialized"},
            {"jsonrpc":"2.0","id":7,"result":{"text":"done"}}
        ]"#;
        let got = extract(&json_head(), body, true).unwrap();
        assert_eq!(got.tools(), ["read", "shell"]);
        let BodyKind::JsonRpcBatch { methods, .. } = &got.kind else { panic!("{:?}", got.kind) };
        assert_eq!(methods.len(), 3);
        let names: Vec<_> = got.parts.iter().filter(|p| p.kind == ContentKind::ToolName).collect();
        assert_eq!(names.len(), 2);
        assert!(got
            .parts
            .iter()
            .any(|p| p.kind == ContentKind::ToolArguments && p.text.contains("insmod x")));
        assert!(got.parts.iter().any(|p| p.text.contains("done")), "responses are scanned");

        let mixed = br#"[{"jsonrpc":"2.0","method":"tools/call","params":{"name":"a"}}, 5]"#;
        assert!(refused(mixed).contains("element 1 is not an object"));
        let nameless = br#"[{"jsonrpc":"2.0","method":"tools/call","params":{}}]"#;
        assert!(refused(nameless).contains("element 0"));
        // An array of plain objects is no batch.
        let got = extract(&json_head(), br#"[{"a":"b"}]"#, true).unwrap();
        assert_eq!(got.kind, BodyKind::Json);
    }

    #[test]
    fn tool_calls_are_found_without_jsonrpc_or_json_content_type() {
        let call = br#"{"method":"tools/call","params":{"name":"shell","arguments":{}}}"#;
        assert_eq!(extract(&json_head(), call, true).unwrap().tools(), ["shell"]);
        let text = RequestHead { content_type: "text/plain".into(), ..Default::default() };
        let full = br#" {"jsonrpc":"2.0","method":"tools/call","params":{"name":"shell"}}"#;
        assert_eq!(extract(&text, full, true).unwrap().tools(), ["shell"]);
        // Text that is not JSON stays text, even if it starts like JSON.
        assert_eq!(extract(&text, b"{not json", true).unwrap().kind, BodyKind::Text);
    }

    #[test]
    fn everything_else_in_a_tool_call_is_scanned_too() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{},"_meta":{"note":"hidden words"}},"extra":"more"}"#;
        let got = extract(&json_head(), body, true).unwrap();
        let rest = got.parts.iter().find(|p| p.kind == ContentKind::Body).unwrap();
        assert!(rest.text.contains("hidden words") && rest.text.contains("more"), "{}", rest.text);
        assert!(!rest.text.lines().any(|l| l == "t"), "the tool name is its own part");
    }
}
