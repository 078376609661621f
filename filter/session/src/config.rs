//! The `sessions` section of the filter's JSON configuration.
//!
//! [`SessionConfig`] is what the JSON says (every field has a default);
//! [`SessionConfig::validate`] refuses zero and absurd values, naming the
//! field. [`crate::SessionTracker::new`] validates before it builds.
//!
//! ```json
//! "sessions": {
//!   "enabled": true,
//!   "header": "x-oktsec-session",
//!   "idle_timeout_secs": 1800,
//!   "max_sessions": 16384
//! }
//! ```

use std::fmt;

use serde::Deserialize;

use crate::bucket::{MAX_BUCKET_LEN, WAYS};

/// Smallest accepted `idle_timeout_secs`: 10 s, so that the 1 s touch
/// interval costs at most a tenth of the timeout.
pub const MIN_IDLE_TIMEOUT_SECS: u64 = 10;

/// Largest accepted `idle_timeout_secs`: 7 days.
pub const MAX_IDLE_TIMEOUT_SECS: u64 = 7 * 24 * 60 * 60;

/// Smallest accepted `max_sessions`: one bucket.
pub const MIN_MAX_SESSIONS: u32 = WAYS as u32;

/// Largest accepted `max_sessions`: 2^20 sessions, 131,072 buckets, about
/// 54 MB of shared data.
pub const MAX_MAX_SESSIONS: u32 = 1 << 20;

/// The longest accepted header name.
pub const MAX_HEADER_LEN: usize = 64;

/// Session tracking settings, as written in the filter configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Whether requests get session ids at all. Default `true`.
    pub enabled: bool,
    /// The request and response header that carries the session id.
    /// Lowercase (Envoy header maps are lowercase). Default
    /// `"x-oktsec-session"`.
    pub header: String,
    /// A session ends after this many seconds with no request from its agent
    /// (sliding). 10 to 604,800. Default 1800 (30 minutes).
    pub idle_timeout_secs: u64,
    /// How many sessions the table holds at once; rounded up to a multiple
    /// of 8. This bounds the shared-data keys and so the memory used (see
    /// [`SessionConfig::max_stored_bytes`]). 8 to 1,048,576. Default 16,384.
    pub max_sessions: u32,
}

impl SessionConfig {
    /// Checks every field; the first bad one is reported.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the field, what is accepted and what was found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !is_header_name(&self.header) {
            return Err(ConfigError::Header { found: self.header.clone() });
        }
        if !(MIN_IDLE_TIMEOUT_SECS..=MAX_IDLE_TIMEOUT_SECS).contains(&self.idle_timeout_secs) {
            return Err(ConfigError::IdleTimeout { found: self.idle_timeout_secs });
        }
        if !(MIN_MAX_SESSIONS..=MAX_MAX_SESSIONS).contains(&self.max_sessions) {
            return Err(ConfigError::MaxSessions { found: self.max_sessions });
        }
        Ok(())
    }

    /// The number of buckets (shared-data keys): `ceil(max_sessions / 8)`.
    pub fn bucket_count(&self) -> u32 {
        self.max_sessions.div_ceil(WAYS as u32)
    }

    /// The number of sessions the table really holds: `bucket_count · 8`.
    pub fn capacity(&self) -> u64 {
        u64::from(self.bucket_count()).saturating_mul(WAYS as u64)
    }

    /// The most bytes of keys and values the table can ever hold in shared
    /// data: `bucket_count · (386 + key length)`, with the key length that of
    /// the longest key (`warrant.session.v1.` plus the largest index).
    ///
    /// The host adds its own per-key overhead (a hash-map node, two strings
    /// and a cas number; not measured, estimated at about 100 bytes), so the
    /// resident size is about `bucket_count · 500` bytes: 1 MB for the
    /// default 16,384 sessions.
    pub fn max_stored_bytes(&self) -> u64 {
        let longest_key = crate::tracker::bucket_key(self.bucket_count().saturating_sub(1)).len();
        let per_bucket = MAX_BUCKET_LEN.saturating_add(longest_key);
        u64::from(self.bucket_count()).saturating_mul(per_bucket as u64)
    }
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            enabled: true,
            header: "x-oktsec-session".to_owned(),
            idle_timeout_secs: 1800,
            max_sessions: 16_384,
        }
    }
}

/// A `sessions` setting is outside what is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `header` is not a lowercase header name.
    Header {
        /// The configured value.
        found: String,
    },
    /// `idle_timeout_secs` is outside 10..=604800.
    IdleTimeout {
        /// The configured value.
        found: u64,
    },
    /// `max_sessions` is outside 8..=1048576.
    MaxSessions {
        /// The configured value.
        found: u32,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Header { found } => write!(
                f,
                "sessions.header: expected 1 to {MAX_HEADER_LEN} characters of a-z 0-9 - \
                 (a lowercase header name), found {found:?}"
            ),
            ConfigError::IdleTimeout { found } => write!(
                f,
                "sessions.idle_timeout_secs: expected {MIN_IDLE_TIMEOUT_SECS} to \
                 {MAX_IDLE_TIMEOUT_SECS} seconds, found {found}"
            ),
            ConfigError::MaxSessions { found } => write!(
                f,
                "sessions.max_sessions: expected {MIN_MAX_SESSIONS} to {MAX_MAX_SESSIONS}, \
                 found {found}"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A lowercase HTTP header name we are willing to set: `[a-z0-9-]`, 1 to 64
/// bytes, not starting with `-`. Pseudo-headers (`:path`) are refused.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_HEADER_LEN
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<SessionConfig, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn empty_section_gives_the_documented_defaults() {
        let config = parse("{}").unwrap();
        assert_eq!(config, SessionConfig::default());
        assert!(config.enabled);
        assert_eq!(config.header, "x-oktsec-session");
        assert_eq!(config.idle_timeout_secs, 1800);
        assert_eq!(config.max_sessions, 16_384);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn every_field_can_be_set() {
        let config = parse(
            r#"{"enabled": false, "header": "x-session", "idle_timeout_secs": 60,
                "max_sessions": 1000}"#,
        )
        .unwrap();
        assert!(!config.enabled);
        assert_eq!(config.header, "x-session");
        assert_eq!(config.idle_timeout_secs, 60);
        assert_eq!(config.max_sessions, 1000);
    }

    #[test]
    fn unknown_field_is_refused_by_name() {
        let error = parse(r#"{"ttl": 5}"#).unwrap_err().to_string();
        assert!(error.contains("unknown field `ttl`"), "{error}");
    }

    #[test]
    fn validation_table() {
        let base = SessionConfig::default();
        let cases: Vec<(&str, SessionConfig, Result<(), ConfigError>)> = vec![
            ("defaults", base.clone(), Ok(())),
            (
                "empty header",
                SessionConfig { header: String::new(), ..base.clone() },
                Err(ConfigError::Header { found: String::new() }),
            ),
            (
                "uppercase header",
                SessionConfig { header: "X-Session".into(), ..base.clone() },
                Err(ConfigError::Header { found: "X-Session".into() }),
            ),
            (
                "pseudo header",
                SessionConfig { header: ":path".into(), ..base.clone() },
                Err(ConfigError::Header { found: ":path".into() }),
            ),
            (
                "65 byte header",
                SessionConfig { header: "a".repeat(65), ..base.clone() },
                Err(ConfigError::Header { found: "a".repeat(65) }),
            ),
            ("64 byte header", SessionConfig { header: "a".repeat(64), ..base.clone() }, Ok(())),
            (
                "zero timeout",
                SessionConfig { idle_timeout_secs: 0, ..base.clone() },
                Err(ConfigError::IdleTimeout { found: 0 }),
            ),
            (
                "9 s timeout",
                SessionConfig { idle_timeout_secs: 9, ..base.clone() },
                Err(ConfigError::IdleTimeout { found: 9 }),
            ),
            ("10 s timeout", SessionConfig { idle_timeout_secs: 10, ..base.clone() }, Ok(())),
            (
                "7 days timeout",
                SessionConfig { idle_timeout_secs: 604_800, ..base.clone() },
                Ok(()),
            ),
            (
                "over 7 days timeout",
                SessionConfig { idle_timeout_secs: 604_801, ..base.clone() },
                Err(ConfigError::IdleTimeout { found: 604_801 }),
            ),
            (
                "zero sessions",
                SessionConfig { max_sessions: 0, ..base.clone() },
                Err(ConfigError::MaxSessions { found: 0 }),
            ),
            (
                "7 sessions",
                SessionConfig { max_sessions: 7, ..base.clone() },
                Err(ConfigError::MaxSessions { found: 7 }),
            ),
            ("8 sessions", SessionConfig { max_sessions: 8, ..base.clone() }, Ok(())),
            ("2^20 sessions", SessionConfig { max_sessions: 1 << 20, ..base.clone() }, Ok(())),
            (
                "over 2^20 sessions",
                SessionConfig { max_sessions: (1 << 20) + 1, ..base.clone() },
                Err(ConfigError::MaxSessions { found: (1 << 20) + 1 }),
            ),
        ];
        for (name, config, want) in cases {
            assert_eq!(config.validate(), want, "case {name}");
        }
    }

    #[test]
    fn every_error_variant_formats() {
        let cases = [
            (
                ConfigError::Header { found: "X-A".into() },
                "sessions.header: expected 1 to 64 characters of a-z 0-9 - \
                 (a lowercase header name), found \"X-A\"",
            ),
            (
                ConfigError::IdleTimeout { found: 0 },
                "sessions.idle_timeout_secs: expected 10 to 604800 seconds, found 0",
            ),
            (
                ConfigError::MaxSessions { found: 0 },
                "sessions.max_sessions: expected 8 to 1048576, found 0",
            ),
        ];
        for (error, want) in cases {
            assert_eq!(error.to_string(), want);
        }
    }

    #[test]
    fn capacity_rounds_up_to_whole_buckets() {
        let config = SessionConfig { max_sessions: 1001, ..SessionConfig::default() };
        assert_eq!(config.bucket_count(), 126);
        assert_eq!(config.capacity(), 1008);
    }

    #[test]
    fn default_memory_bound_is_2048_buckets_of_386_bytes_plus_key() {
        let config = SessionConfig::default();
        assert_eq!(config.bucket_count(), 2048);
        // The longest key is "warrant.session.v1.2047", 23 bytes.
        assert_eq!(config.max_stored_bytes(), 2048 * (386 + 23));
    }
}
