//! Request bodies for the benchmark and the profiling driver: ordinary agent
//! traffic that no rule should flag, generated deterministically.
//!
//! - [`mixed`]: lines of prose, Markdown, JSON, logs, shell and code, some of
//!   them holding words rule literals look for (token, password, curl,
//!   ignore, execute, docker) without being attacks.
//! - [`prose`]: the sentences an agent writes in an envelope; the in-Envoy
//!   benchmark (`tests/src/bench.rs`) includes this file and sends the same.
//! - [`mcp_arguments`]: the arguments of a report-writing MCP `tools/call`
//!   as JSON text, with a long prose argument.

#![allow(dead_code)]

/// Lines of ordinary traffic.
pub(crate) const LINES: &[&str] = &[
    "The quarterly revenue grew by 12% compared to last year, driven by enterprise renewals.",
    "Please review the attached pull request and update the documentation for the new API.",
    "## Installation",
    "- Run `cargo build --release` and copy the binary to /usr/local/bin.",
    r#"{"id": 4821, "name": "widget-pro", "tags": ["blue", "large"], "updated_at": "2024-05-01T12:00:00Z"}"#,
    r#"{"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "search", "arguments": {"query": "hotel rooms in Lisbon"}}}"#,
    "2024-05-01 12:00:03 INFO api: request completed status=200 path=/api/v1/users latency=12ms",
    "2024-05-01 12:00:04 WARN auth: token refresh took longer than expected (830ms)",
    "fn main() { let total = orders.iter().map(|o| o.amount).sum::<u64>(); println!(\"{total}\"); }",
    "    if user.is_admin() and request.method == 'POST': return handle_update(request)",
    "See https://docs.example.com/guide/install#configuration for the full list of options.",
    "git commit -m 'fix typo in README' && git push origin feature/search-filters",
    "docker compose up -d postgres redis && curl -s http://localhost:8080/health | jq .status",
    "Remember to reset your password through the account settings page if you forget it.",
    "You can ignore the warnings about deprecated fields; they will be removed in the next release.",
    "The agent should execute the nightly report job and email the summary to the finance team.",
    "| region | orders | revenue |",
    "|--------|--------|---------|",
    "| EMEA   | 1,204  | 88,310  |",
    "Meeting notes: discussed hiring plan, Q3 roadmap, and the migration to the new billing system.",
    "kubectl get pods -n payments -o wide | grep Running",
    "SELECT customer_id, SUM(total) FROM invoices WHERE created_at > '2024-01-01' GROUP BY 1;",
    "Thanks! I'll summarize the customer feedback and share the draft by Friday afternoon.",
    "The model returned three candidate answers; the evaluator picked the second one as best.",
    "```python",
    "def load(path):\n    with open(path) as f:\n        return json.load(f)",
    "```",
    "Error: connection refused while contacting upstream service inventory-api (retry 2/5)",
];

/// `size` bytes of [`LINES`] in a pseudo-random order.
pub(crate) fn mixed(size: usize) -> String {
    let mut out = String::with_capacity(size + 256);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    while out.len() < size {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let line = LINES[(state >> 33) as usize % LINES.len()];
        out.push_str(line);
        out.push('\n');
    }
    truncate(&mut out, size);
    out
}

/// Sentences of an agent's message (no quotes or backslashes).
const SENTENCES: &[&str] = &[
    "The quarterly revenue grew by twelve percent compared to last year.",
    "Renewals from enterprise customers were the main driver of the growth.",
    "Please summarize the attached meeting notes for the planning team.",
    "The new onboarding flow reduced the time to first value by two days.",
    "Hotel rooms near the conference center are available from Monday.",
    "The migration of the billing service finished ahead of schedule.",
    "Latency on the search page stayed under two hundred milliseconds.",
    "Customer satisfaction scores improved in every region this quarter.",
    "The design review is moved to Thursday afternoon at three.",
    "Inventory levels for the spring collection look healthy.",
    "Add a short paragraph about the roadmap for the second half.",
    "The support backlog dropped to forty open tickets this week.",
    "Translate the product description into Portuguese and Spanish.",
    "Shipping times to northern Europe averaged four business days.",
    "The team agreed to publish the release notes on Friday morning.",
    "Compare the three vendor proposals by price and delivery time.",
];

/// `len` bytes of prose on one line, as an envelope's content.
pub(crate) fn prose(len: usize, seed: u64) -> String {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut text = String::with_capacity(len + 128);
    while text.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        text.push_str(SENTENCES[(state % SENTENCES.len() as u64) as usize]);
        text.push(' ');
    }
    truncate(&mut text, len);
    text
}

/// The arguments of a `tools/call` as JSON text of about `size` bytes.
pub(crate) fn mcp_arguments(size: usize, seed: u64) -> String {
    let build = |draft: &str| {
        format!(
            r#"{{"title":"Quarterly business review","format":"markdown","sections":["summary","revenue","customers","next steps"],"max_words":1200,"draft":"{draft}"}}"#
        )
    };
    let overhead = build("").len();
    build(&prose(size.saturating_sub(overhead), seed))
}

fn truncate(text: &mut String, size: usize) {
    let mut end = size.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
}
