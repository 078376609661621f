//! Fuzzes MCP JSON-RPC extraction with structured requests: a method, a
//! `params.name` of any JSON type (or none, or duplicated), arguments of
//! any shape, extra members, and batches, written out as JSON text.
//!
//! Properties, beyond "never panics":
//! - a `tools/call` with a string `params.name` is read as that tool, and
//!   its parts are the tool name then (when there are arguments) every
//!   string of the arguments; with a duplicated `name`, every copy is the
//!   tool that was read, or the body is refused;
//! - a `tools/call` whose `params.name` is not a string is refused as an
//!   invalid tool call;
//! - another method is read as JSON-RPC without a tool, and its one part
//!   holds every string of the request;
//! - a batch (an array) is read as plain JSON, with every string of every
//!   request in its one part: nothing in a body goes unscanned.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use warrant_core::extract::{extract, BodyKind, ExtractError};
use warrant_core::request::RequestHead;
use warrant_rules::ContentKind;

/// A JSON-RPC request, built from fuzz bytes.
#[derive(Debug, Arbitrary)]
struct Request {
    jsonrpc: bool,
    id: Option<Json>,
    method: Method,
    /// Each `name` member of `params`, in order (duplicates allowed).
    names: Vec<Json>,
    arguments: Option<Json>,
    extra: Vec<(String, Json)>,
}

#[derive(Debug, Arbitrary)]
enum Method {
    ToolsCall,
    ToolsList,
    Other(String),
}

/// Any JSON value; nesting is bounded when it is written out.
#[derive(Debug, Arbitrary)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

#[derive(Debug, Arbitrary)]
enum Input {
    One(Request),
    Batch(Vec<Request>),
}

/// Deepest nesting written (serde_json refuses 128 levels).
const MAX_DEPTH: usize = 24;

fuzz_target!(|input: Input| {
    let head = RequestHead { content_type: "application/json".into(), ..Default::default() };
    match input {
        Input::One(request) => {
            let text = request.write();
            let got = extract(&head, text.as_bytes(), true);
            check_one(&request, &text, got);
        }
        Input::Batch(requests) => {
            let items: Vec<String> = requests.iter().map(Request::write).collect();
            let text = format!("[{}]", items.join(","));
            let got = extract(&head, text.as_bytes(), true).expect("a batch is JSON");
            assert_eq!(got.kind, BodyKind::Json, "{text}");
            assert_eq!(got.parts.len(), 1);
            assert_eq!(got.parts[0].kind, ContentKind::Body);
            assert_all_strings_in(&text, &got.parts[0].text);
        }
    }
});

fn check_one(
    request: &Request,
    text: &str,
    got: Result<warrant_core::extract::Extracted, ExtractError>,
) {
    if !request.jsonrpc {
        // No `jsonrpc`, and none of `from`, `to`, `content` unless an extra
        // member is called that: plain JSON or an envelope.
        if let Ok(got) = got {
            assert!(!matches!(got.kind, BodyKind::JsonRpc { .. }), "{text}");
        }
        return;
    }
    let method = request.method.name();
    if method != "tools/call" {
        let got = got.expect("any other method is readable");
        assert_eq!(got.kind, BodyKind::JsonRpc { method: method.to_string(), tool: None });
        assert_eq!(got.parts.len(), 1);
        assert_all_strings_in(text, &got.parts[0].text);
        return;
    }
    // serde_json keeps the last of duplicated members.
    let effective = request.names.last().map(|n| n.to_value(0));
    let Some(Value::String(name)) = effective else {
        assert!(matches!(got, Err(ExtractError::InvalidToolCall(_))), "{text}: {got:?}");
        return;
    };
    let got = match got {
        Ok(got) => got,
        // Refusing a body whose `name` is ambiguous is fine.
        Err(_) if request.names.len() > 1 => return,
        Err(e) => panic!("{text}: {e}"),
    };
    assert_eq!(
        got.kind,
        BodyKind::JsonRpc { method: "tools/call".into(), tool: Some(name.clone()) },
        "{text}"
    );
    for copy in &request.names {
        assert_eq!(copy.to_value(0), Value::String(name.clone()), "duplicate `name` read as one");
    }
    assert_eq!(got.parts[0].kind, ContentKind::ToolName);
    assert_eq!(got.parts[0].text, name);
    match &request.arguments {
        Some(arguments) => {
            assert_eq!(got.parts.len(), 2);
            assert_eq!(got.parts[1].kind, ContentKind::ToolArguments);
            let written = serde_json::to_string(&arguments.to_value(0)).expect("serialises");
            assert_all_strings_in(&written, &got.parts[1].text);
        }
        None => assert_eq!(got.parts.len(), 1),
    }
}

impl Method {
    fn name(&self) -> &str {
        match self {
            Method::ToolsCall => "tools/call",
            Method::ToolsList => "tools/list",
            Method::Other(name) => name,
        }
    }
}

impl Json {
    fn to_value(&self, depth: usize) -> Value {
        if depth >= MAX_DEPTH {
            return Value::Null;
        }
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Int(n) => Value::from(*n),
            // Non-finite floats have no JSON form: null.
            Json::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Json::Str(s) => Value::String(s.clone()),
            Json::Array(items) => Value::Array(items.iter().map(|i| i.to_value(depth + 1)).collect()),
            Json::Object(members) => Value::Object(
                members.iter().map(|(k, v)| (k.clone(), v.to_value(depth + 1))).collect(),
            ),
        }
    }

    fn write(&self) -> String {
        serde_json::to_string(&self.to_value(1)).expect("serialises")
    }
}

impl Request {
    /// The request as JSON text; `params` is written by hand so that
    /// `name` can appear more than once.
    fn write(&self) -> String {
        let mut members = Vec::new();
        let quote = |s: &str| serde_json::to_string(s).expect("serialises");
        if self.jsonrpc {
            members.push(r#""jsonrpc":"2.0""#.to_string());
        }
        if let Some(id) = &self.id {
            members.push(format!(r#""id":{}"#, id.write()));
        }
        members.push(format!(r#""method":{}"#, quote(self.method.name())));
        let mut params: Vec<String> =
            self.names.iter().map(|n| format!(r#""name":{}"#, n.write())).collect();
        if let Some(arguments) = &self.arguments {
            params.push(format!(r#""arguments":{}"#, arguments.write()));
        }
        for (key, value) in &self.extra {
            // Extra members must not shadow the ones the properties are about.
            if matches!(key.as_str(), "name" | "arguments") {
                continue;
            }
            params.push(format!("{}:{}", quote(key), value.write()));
        }
        members.push(format!(r#""params":{{{}}}"#, params.join(",")));
        format!("{{{}}}", members.join(","))
    }
}

/// Every non-empty string (and object key) of the JSON `text` is a line of
/// `scanned`, or (when it has line breaks itself) is contained in it.
fn assert_all_strings_in(text: &str, scanned: &str) {
    let value: Value = serde_json::from_str(text).expect("written JSON parses");
    let mut stack = vec![&value];
    while let Some(value) = stack.pop() {
        match value {
            Value::String(s) => assert_scanned(s, scanned),
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                for (key, value) in map {
                    assert_scanned(key, scanned);
                    stack.push(value);
                }
            }
            _ => {}
        }
    }
}

fn assert_scanned(s: &str, scanned: &str) {
    if s.is_empty() {
        return;
    }
    let found = if s.contains(['\n', '\r']) {
        scanned.contains(s)
    } else {
        scanned.lines().any(|l| l == s)
    };
    assert!(found, "{s:?} was not scanned");
}
