//! Fuzzes MCP JSON-RPC extraction with structured requests: a method, a
//! `params.name` of any JSON type (or none, or duplicated), arguments of
//! any shape, extra members, and batches, written out as JSON text.
//!
//! Properties, beyond "never panics":
//! - a body with a duplicated member (`name` twice, or an extra member
//!   twice) is refused as invalid JSON: no parser's choice of value is
//!   trusted;
//! - a `tools/call` (with or without `jsonrpc`) with a string `params.name`
//!   is read as that tool, its first part is the tool name, then (when
//!   there are arguments) every string of the arguments;
//! - a `tools/call` whose `params.name` is not a string is refused as an
//!   invalid tool call;
//! - another method with `jsonrpc` is read as JSON-RPC without a tool;
//! - a batch (an array) with a call in it is read call by call, its tools
//!   are those of its `tools/call`s in order, and one that cannot be read
//!   refuses the batch;
//! - whatever is accepted, every string of the body (keys included) is in
//!   some part: nothing in a body goes unscanned.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use warrant_core::extract::{extract, BodyKind, ExtractError};
use warrant_core::request::RequestHead;
use warrant_fuzz::plain_json;
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
            let got = extract(&head, text.as_bytes(), true);
            if requests.iter().any(Request::has_duplicates) {
                assert!(matches!(got, Err(ExtractError::InvalidJson(_))), "{text}: {got:?}");
                return;
            }
            let readable =
                requests.iter().all(|r| r.method.name() != "tools/call" || r.tool().is_some());
            let got = match got {
                Ok(got) => got,
                Err(ExtractError::InvalidToolCall(_)) if !readable => return,
                Err(e) => panic!("{text}: {e}"),
            };
            assert!(readable, "{text}: a nameless tools/call was accepted");
            if requests.iter().any(Request::is_call) {
                let tools: Vec<String> = requests.iter().filter_map(Request::tool).collect();
                assert_eq!(got.tools(), tools, "{text}");
                assert!(matches!(got.kind, BodyKind::JsonRpcBatch { .. }), "{text}");
            } else {
                assert_eq!(got.kind, BodyKind::Json, "{text}");
            }
            assert_all_strings_in(&text, &all_parts(&got));
        }
    }
});

fn check_one(
    request: &Request,
    text: &str,
    got: Result<warrant_core::extract::Extracted, ExtractError>,
) {
    if request.has_duplicates() {
        assert!(matches!(got, Err(ExtractError::InvalidJson(_))), "{text}: {got:?}");
        return;
    }
    let method = request.method.name();
    if method == "tools/call" {
        let Some(name) = request.tool() else {
            assert!(matches!(got, Err(ExtractError::InvalidToolCall(_))), "{text}: {got:?}");
            return;
        };
        let got = got.unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(
            got.kind,
            BodyKind::JsonRpc { method: "tools/call".into(), tool: Some(name.clone()) },
            "{text}"
        );
        assert_eq!(got.parts[0].kind, ContentKind::ToolName);
        assert_eq!(got.parts[0].text, name);
        if let Some(arguments) = &request.arguments {
            assert_eq!(got.parts[1].kind, ContentKind::ToolArguments);
            // Depth 1, as `Request::write` writes it.
            let written = serde_json::to_string(&arguments.to_value(1)).expect("serialises");
            assert_all_strings_in(&written, &got.parts[1].text);
        }
        assert_all_strings_in(text, &all_parts(&got));
        return;
    }
    let got = got.unwrap_or_else(|e| panic!("{text}: {e}"));
    if request.jsonrpc {
        assert_eq!(got.kind, BodyKind::JsonRpc { method: method.to_string(), tool: None });
    } else {
        assert_eq!(got.kind, BodyKind::Json, "{text}");
    }
    assert_all_strings_in(text, &all_parts(&got));
}

fn all_parts(got: &warrant_core::extract::Extracted) -> String {
    let texts: Vec<&str> = got.parts.iter().map(|p| p.text.as_str()).collect();
    texts.join("\n")
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
            Json::Array(items) => {
                Value::Array(items.iter().map(|i| i.to_value(depth + 1)).collect())
            }
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
    /// Whether `params` is written with a member twice.
    fn has_duplicates(&self) -> bool {
        let mut keys: Vec<&str> = self.names.iter().map(|_| "name").collect();
        if self.arguments.is_some() {
            keys.push("arguments");
        }
        keys.extend(
            self.extra
                .iter()
                .map(|(k, _)| k.as_str())
                .filter(|k| !matches!(*k, "name" | "arguments")),
        );
        let count = keys.len();
        keys.sort_unstable();
        keys.dedup();
        keys.len() != count
    }

    /// Whether the filter reads it as a JSON-RPC call.
    fn is_call(&self) -> bool {
        self.jsonrpc || self.method.name() == "tools/call"
    }

    /// The tool of a `tools/call` whose one `name` is a string.
    fn tool(&self) -> Option<String> {
        if self.method.name() != "tools/call" || self.names.len() != 1 {
            return None;
        }
        match self.names.first().map(|n| n.to_value(1)) {
            Some(Value::String(name)) => Some(name),
            _ => None,
        }
    }

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
    let value = plain_json(text.as_bytes()).expect("written JSON parses");
    let mut stack = vec![&value];
    while let Some(value) = stack.pop() {
        match value {
            Value::String(s) => assert_scanned(s, scanned),
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                for (key, value) in map {
                    // A tools/call's `name` and `arguments` values are parts
                    // of their own; the two member names are not scanned.
                    if !matches!(key.as_str(), "name" | "arguments") {
                        assert_scanned(key, scanned);
                    }
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
