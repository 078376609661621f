//! The audit page: a read-only HTTP view of the chain, served by `serve`
//! (next to gRPC, loopback by default) and by `page` (for a copy of a
//! database).
//!
//! Routes ([`router`]):
//! - `GET /`: the HTML page: the chain status badge, recent records,
//!   sessions and the quarantine queue;
//! - `GET /api/verify`: the [`crate::verify::Report`] of a full check as
//!   JSON (HTTP 200 whether or not the chain is intact; read `valid`);
//! - `GET /metrics`: Prometheus text ([`crate::metrics`]).
//!
//! The badge ([`Badge`]) is green when the chain and the checkpoint
//! signatures verified (with the key fingerprint), yellow when the chain is
//! intact but signatures were not verified (no key, or no checkpoint yet),
//! red when verification found a problem (its seq, reason and position).
//! The element is `<div id="chain-status" data-state="green|yellow|red">`.
//!
//! Every request opens the database read-only ([`Store::open_read_only`]) on
//! a blocking thread; the page never writes. Only `GET` (and `HEAD`) are
//! routed: any other method is answered 405. Every value shown is
//! HTML-escaped ([`escape`]); the page has no script, and every answer
//! carries a `Content-Security-Policy` that forbids scripts, frames, forms
//! and every fetch but the page's own inline style ([`SECURITY_HEADERS`]),
//! plus `Cache-Control: no-store` (the records are evidence, not for a
//! shared cache).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ed25519_dalek::VerifyingKey;
use rusqlite::Connection;

use crate::metrics::{ChainGauges, Metrics};
use crate::quarantine;
use crate::sessions_cmd::{rfc3339, summarize, RecordRow};
use crate::store::{latest_checkpoint, read_chain_id, read_head, Store};
use crate::verify::{verify_connection, Options, Report, SignatureCheck};

/// Records shown in the "recent records" table.
pub const RECENT_RECORDS: usize = 50;
/// Newest entries read to summarize sessions.
pub const SESSION_WINDOW: usize = 10_000;
/// Sessions shown.
pub const SESSIONS_SHOWN: usize = 20;

/// What the page reads.
#[derive(Debug, Clone)]
pub struct PageState {
    /// The chain database.
    pub db: PathBuf,
    /// The key checkpoint signatures are verified with (`None`: skipped).
    pub key: Option<VerifyingKey>,
    /// The writer's counters (all zero when no writer runs here).
    pub metrics: Arc<Metrics>,
}

/// The badge's three states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Badge {
    /// Chain and signatures verified.
    Green,
    /// Chain intact, signatures not verified.
    Yellow,
    /// A problem was found.
    Red,
}

impl Badge {
    /// The badge for a report.
    pub fn of(report: &Report) -> Badge {
        match (report.valid, report.signature_check) {
            (false, _) => Badge::Red,
            (true, SignatureCheck::Valid) => Badge::Green,
            (true, _) => Badge::Yellow,
        }
    }

    /// `green`, `yellow` or `red`.
    pub fn as_str(self) -> &'static str {
        match self {
            Badge::Green => "green",
            Badge::Yellow => "yellow",
            Badge::Red => "red",
        }
    }
}

/// Headers on every answer of the page's routes.
pub const SECURITY_HEADERS: [(&str, &str); 5] = [
    (
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
];

/// The page's routes over `state`.
pub fn router(state: PageState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/api/verify", get(api_verify))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(state))
        .layer(axum::middleware::map_response(secure))
}

async fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, header::HeaderValue::from_static(value));
    }
    response
}

/// Serves the page on `listener` until `shutdown` completes.
///
/// # Errors
/// The listener fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: PageState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

type Shared = State<Arc<PageState>>;

async fn index(State(state): Shared) -> Response {
    blocking(move || render_page(&state).map(|html| Html(html).into_response())).await
}

async fn api_verify(State(state): Shared) -> Response {
    blocking(move || {
        let conn = Store::open_read_only(&state.db)?;
        let report = verify_connection(&conn, &options(&state), &mut |_, _| {})?;
        Ok(axum::Json(report).into_response())
    })
    .await
}

async fn metrics(State(state): Shared) -> Response {
    blocking(move || {
        let conn = Store::open_read_only(&state.db)?;
        let chain_id = read_chain_id(&conn)?;
        let gauges = ChainGauges {
            last_seq: read_head(&conn)?.seq,
            last_checkpoint: latest_checkpoint(&conn, &chain_id)?
                .map(|c| (c.checkpoint.seq, c.checkpoint.time_unix_nanos)),
        };
        let text = state.metrics.render(gauges, crate::server::now_ns());
        Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
    })
    .await
}

/// Runs database work off the async threads; an error is a 500 with the
/// message (the database path and SQLite's words, nothing secret).
async fn blocking(work: impl FnOnce() -> anyhow::Result<Response> + Send + 'static) -> Response {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("error: {e:#}\n")).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("error: {e}\n")).into_response(),
    }
}

fn options(state: &PageState) -> Options {
    Options { key: state.key, ..Options::default() }
}

fn render_page(state: &PageState) -> anyhow::Result<String> {
    let conn = Store::open_read_only(&state.db)?;
    let report = verify_connection(&conn, &options(state), &mut |_, _| {})?;
    let mut html = String::new();
    html.push_str(HEAD);
    let _ = write!(
        html,
        "<p class=\"db\">Database <code>{}</code></p>",
        escape(&state.db.display().to_string())
    );
    html.push_str(&render_badge(&report));
    render_records(&conn, report.broken.as_ref().map(|b| b.seq), &mut html)?;
    render_sessions(&conn, &mut html)?;
    render_quarantine(&conn, &mut html)?;
    html.push_str("</body></html>\n");
    Ok(html)
}

/// The badge element for a report.
pub fn render_badge(report: &Report) -> String {
    let badge = Badge::of(report);
    let fingerprint = report.key_fingerprint.as_deref().unwrap_or("");
    let body = match badge {
        Badge::Green => format!(
            "<strong>Chain + signatures: verified</strong> · {} · {} · \
             key <code class=\"fingerprint\">{}</code>",
            plural(report.entries, "entry", "entries"),
            plural(report.checkpoints, "checkpoint", "checkpoints"),
            escape(fingerprint)
        ),
        Badge::Yellow => {
            let why = match report.signature_check {
                SignatureCheck::Skipped => "no key",
                _ => "no checkpoint yet",
            };
            format!(
                "<strong>Chain: intact</strong> · {} · \
                 Signatures: not verified ({why})",
                plural(report.entries, "entry", "entries")
            )
        }
        Badge::Red => {
            let (seq, reason) =
                report.broken.as_ref().map_or((0, ""), |b| (b.seq, b.reason.as_str()));
            format!(
                "<strong>Chain: BROKEN at seq <span class=\"seq\">{seq}</span></strong> · \
                 position {seq} of {} · <span class=\"reason\">{}</span>",
                report.head_seq,
                escape(reason)
            )
        }
    };
    format!(
        "<div id=\"chain-status\" class=\"badge {0}\" data-state=\"{0}\">{body}</div>\n",
        badge.as_str()
    )
}

/// `1 entry`, `2 entries`.
fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn render_records(
    conn: &Connection,
    broken_seq: Option<u64>,
    html: &mut String,
) -> anyhow::Result<()> {
    let mut stmt = conn.prepare(
        "SELECT seq, appended_at_ns, from_agent, to_agent, method, path, status, decision
         FROM entries ORDER BY seq DESC LIMIT ?1",
    )?;
    html.push_str(
        "<h2>Recent records</h2><table id=\"records\"><tr><th>seq</th><th>time</th>\
         <th>from</th><th>to</th><th>request</th><th>status</th><th>decision</th></tr>\n",
    );
    let mut rows = stmt.query([RECENT_RECORDS as i64])?;
    while let Some(r) = rows.next()? {
        let seq = r.get::<_, i64>(0)?;
        if broken_seq == Some(seq as u64) {
            html.push_str("<tr class=\"broken\" title=\"verification found the problem here\">");
        } else {
            html.push_str("<tr>");
        }
        let cells: [String; 7] = [
            seq.to_string(),
            rfc3339(r.get(1)?),
            r.get(2)?,
            r.get(3)?,
            format!("{} {}", r.get::<_, String>(4)?, r.get::<_, String>(5)?),
            r.get(6)?,
            r.get(7)?,
        ];
        cells_of(html, &cells);
    }
    html.push_str("</table>\n");
    Ok(())
}

fn render_sessions(conn: &Connection, html: &mut String) -> anyhow::Result<()> {
    let mut stmt = conn.prepare(
        "SELECT appended_at_ns, from_agent, session_id, status, decision FROM entries
         WHERE session_id != '' ORDER BY seq DESC LIMIT ?1",
    )?;
    let rows = stmt
        .query_map([SESSION_WINDOW as i64], |r| {
            Ok(RecordRow {
                received_at_unix_nanos: r.get(0)?,
                from_agent: r.get(1)?,
                session_id: r.get(2)?,
                status: r.get(3)?,
                decision: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    html.push_str(
        "<h2>Sessions</h2><table id=\"sessions\"><tr><th>session</th><th>start</th>\
         <th>end</th><th>records</th><th>senders</th><th>blocks</th><th>quarantines</th>\
         <th>risk</th></tr>\n",
    );
    for s in summarize(&rows, None).iter().take(SESSIONS_SHOWN) {
        let cells: [String; 8] = [
            s.session_id.clone(),
            s.start.clone(),
            s.end.clone(),
            s.records.to_string(),
            s.senders.join(", "),
            s.blocks.to_string(),
            s.quarantines.to_string(),
            s.risk_score.to_string(),
        ];
        row(html, &cells);
    }
    html.push_str("</table>\n");
    Ok(())
}

fn render_quarantine(conn: &Connection, html: &mut String) -> anyhow::Result<()> {
    let items = quarantine::list(conn)?;
    html.push_str(
        "<h2>Quarantine</h2><table id=\"quarantine\"><tr><th>seq</th><th>message</th>\
         <th>from</th><th>to</th><th>received</th><th>state</th></tr>\n",
    );
    for item in items {
        let state = match &item.state {
            quarantine::State::Pending => "pending".to_string(),
            quarantine::State::Approved { reviewer, seq } => {
                format!("approved by {reviewer} (seq {seq})")
            }
            quarantine::State::Rejected { reviewer, seq } => {
                format!("rejected by {reviewer} (seq {seq})")
            }
        };
        let cells: [String; 6] = [
            item.seq.to_string(),
            item.message_id,
            item.from,
            item.to,
            rfc3339(item.received_at_ns),
            state,
        ];
        row(html, &cells);
    }
    html.push_str("</table>\n");
    Ok(())
}

fn row(html: &mut String, cells: &[String]) {
    html.push_str("<tr>");
    cells_of(html, cells);
}

/// The cells of an opened row, and its end.
fn cells_of(html: &mut String, cells: &[String]) {
    for cell in cells {
        let _ = write!(html, "<td>{}</td>", escape(cell));
    }
    html.push_str("</tr>\n");
}

const HEAD: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Warrant audit</title><style>\
body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin-bottom:2em}td,th{border:1px solid #ccc;padding:.2em .5em;\
text-align:left;font-size:.9em;white-space:nowrap}tr.broken td{background:#fdecea;\
font-weight:bold}.badge{padding:.8em 1em;border-radius:6px;border:2px solid}\
.green{border-color:#2a7;background:#eafaf1}.yellow{border-color:#d29922;background:#fff8e1}\
.red{border-color:#c33;background:#fdecea}code{font-size:.85em}\
</style></head><body><h1>Warrant audit chain</h1>\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_the_five_html_characters() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
