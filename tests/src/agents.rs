//! Test agents: fresh Ed25519 keys and oktsec envelopes signed with them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use warrant_delegation::{encode_header, mint, MintRequest, Timestamp};

/// An agent with a key pair.
#[derive(Debug, Clone)]
pub struct Agent {
    pub name: String,
    pub key: SigningKey,
}

impl Agent {
    /// A new agent with a random key.
    pub fn new(name: &str) -> Agent {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("randomness");
        Agent { name: name.to_string(), key: SigningKey::from_bytes(&seed) }
    }

    /// The public key as standard base64 of the raw 32 bytes.
    pub fn public_base64(&self) -> String {
        STANDARD.encode(self.key.verifying_key().as_bytes())
    }

    /// A one-token `X-Oktsec-Delegation` header issued now and signed with
    /// this agent's key in the name of `delegator` (its own name for a real
    /// grant, another's for a forgery): `delegator` lets `delegate` message
    /// `scope` for `ttl`, with all tools and a max depth of 3.
    pub fn grant(&self, delegator: &str, delegate: &str, scope: &[&str], ttl: Duration) -> String {
        let request = MintRequest {
            delegator,
            delegate,
            scope: scope.iter().map(|s| s.to_string()).collect(),
            tools: vec![],
            ttl,
            max_depth: 3,
            parent: None,
        };
        let token = mint(&self.key, &request, Timestamp::from_unix_secs(now_secs()))
            .expect("mint a delegation token");
        encode_header(&[token])
    }

    /// A signed envelope from this agent, timestamped now.
    pub fn envelope(&self, to: &str, content: &str) -> serde_json::Value {
        self.envelope_at(to, content, &rfc3339(now_secs()))
    }

    /// A signed envelope with a given timestamp string.
    pub fn envelope_at(&self, to: &str, content: &str, timestamp: &str) -> serde_json::Value {
        let payload = format!("{}\n{to}\n{content}\n{timestamp}", self.name);
        let signature = STANDARD.encode(self.key.sign(payload.as_bytes()).to_bytes());
        serde_json::json!({
            "from": self.name, "to": to, "content": content,
            "timestamp": timestamp, "signature": signature,
        })
    }
}

/// Now, in Unix seconds.
pub fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Unix seconds as RFC 3339 UTC.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}
