//! Who sent a request, and whether that is authenticated.
//!
//! The configured sources are tried in order and the first that
//! authenticates a sender wins:
//! - `envelope`: a signed oktsec envelope whose signature verifies with the
//!   key configured for its `from` (an unsigned envelope only *claims* a
//!   sender);
//! - `mtls`: the peer certificate's URI SAN, mapped to a name by
//!   `identity.spiffe`;
//! - `header`: the configured header, trusted because an earlier filter
//!   set it.
//!
//! An envelope's claimed `from` must then equal the authenticated sender, or
//! the request is refused (`identity_rejected`): otherwise an mTLS-verified
//! agent could sign nothing and speak as another. With no authenticated
//! sender, `identity.require_authenticated` decides between 401
//! `signature_required` and carrying on with the unverified claim.

use crate::config::{IdentitySource, Policy};
use crate::decision::Decision;
use crate::envelope::{Envelope, EnvelopeError};
use crate::request::RequestHead;

/// Whether the sender proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureState {
    /// Authenticated by a source.
    Verified,
    /// Not authenticated (only claimed, or anonymous).
    Unsigned,
    /// A signature was present and failed (only seen on rejections).
    Invalid,
}

impl SignatureState {
    /// The name used in records.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureState::Verified => "verified",
            SignatureState::Unsigned => "unsigned",
            SignatureState::Invalid => "invalid",
        }
    }
}

/// The identified sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// Agent name (`""` when anonymous).
    pub name: String,
    /// The source that authenticated it, if any.
    pub source: Option<IdentitySource>,
    /// Whether it is authenticated.
    pub signature: SignatureState,
    /// Fingerprint of the key that verified the envelope, if one did.
    pub key_fingerprint: String,
}

/// A refusal: the decision, a reason for the record, and what is known of
/// the sender so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 400, 401 or 403 decision.
    pub decision: Decision,
    /// Why, for the record and the log.
    pub reason: String,
    /// The claimed sender, fingerprint and signature state, for the record.
    pub sender: Sender,
}

/// Identifies the sender of a request.
///
/// # Errors
/// A [`Refusal`] when the request must not go on.
pub fn identify(
    policy: &Policy,
    head: &RequestHead,
    envelope: Option<&Envelope>,
    now_unix_secs: i64,
) -> Result<Sender, Refusal> {
    let identity = &policy.config.identity;
    let claimed = envelope.map(|e| e.from.clone()).unwrap_or_default();
    let refuse = |decision, reason: String, signature, print: String| Refusal {
        decision,
        reason,
        sender: Sender { name: claimed.clone(), source: None, signature, key_fingerprint: print },
    };

    // 1. Try the sources in order.
    let mut authenticated = None;
    for source in &identity.sources {
        let found = match source {
            IdentitySource::Envelope => match envelope {
                Some(e) if e.signature.is_some() => {
                    let Some(key) = policy.keys.key(&e.from) else {
                        return Err(refuse(
                            Decision::IdentityRejected,
                            format!("no public key is configured for sender {:?}", e.from),
                            SignatureState::Invalid,
                            String::new(),
                        ));
                    };
                    let print = policy.keys.fingerprint(&e.from).unwrap_or_default().to_string();
                    if identity.revoked_keys.contains(&print) {
                        return Err(refuse(
                            Decision::IdentityRejected,
                            format!("the key of sender {:?} is revoked", e.from),
                            SignatureState::Invalid,
                            print,
                        ));
                    }
                    match e.verify(
                        key,
                        now_unix_secs,
                        identity.envelope_max_age_secs,
                        identity.envelope_max_future_secs,
                    ) {
                        Ok(()) => Some((e.from.clone(), print)),
                        Err(err @ EnvelopeError::BadTimestamp(_)) => {
                            return Err(refuse(
                                Decision::InvalidRequest,
                                err.to_string(),
                                SignatureState::Invalid,
                                print,
                            ))
                        }
                        Err(err) => {
                            return Err(refuse(
                                Decision::IdentityRejected,
                                err.to_string(),
                                SignatureState::Invalid,
                                print,
                            ))
                        }
                    }
                }
                _ => None,
            },
            IdentitySource::Mtls => head
                .peer_uri_sans
                .iter()
                .find_map(|san| identity.spiffe.get(san))
                .map(|name| (name.clone(), String::new())),
            IdentitySource::Header => match head.identity_header.as_deref() {
                Some(value) => match std::str::from_utf8(value) {
                    Ok(name) if valid_name(name) => Some((name.to_string(), String::new())),
                    utf8 => {
                        let what = if utf8.is_ok() {
                            "an invalid agent name"
                        } else {
                            "bytes that are not UTF-8"
                        };
                        return Err(refuse(
                            Decision::InvalidRequest,
                            format!(
                                "identity header `{}` holds {what} ({} bytes)",
                                identity.header,
                                value.len()
                            ),
                            SignatureState::Unsigned,
                            String::new(),
                        ));
                    }
                },
                None => None,
            },
        };
        if let Some((name, print)) = found {
            authenticated = Some((*source, name, print));
            break;
        }
    }

    // 2. An authenticated sender must be the one the envelope claims.
    if let Some((source, name, print)) = authenticated {
        if envelope.is_some() && claimed != name {
            return Err(refuse(
                Decision::IdentityRejected,
                format!(
                    "envelope claims sender {claimed:?} but {} authenticated {name:?}",
                    source.as_str()
                ),
                SignatureState::Invalid,
                print,
            ));
        }
        return Ok(Sender {
            name,
            source: Some(source),
            signature: SignatureState::Verified,
            key_fingerprint: print,
        });
    }

    // 3. Nobody authenticated.
    if identity.require_authenticated {
        return Err(refuse(
            Decision::SignatureRequired,
            "no identity source authenticated the sender".into(),
            SignatureState::Unsigned,
            String::new(),
        ));
    }
    Ok(Sender {
        name: claimed,
        source: None,
        signature: SignatureState::Unsigned,
        key_fingerprint: String::new(),
    })
}

fn valid_name(value: &str) -> bool {
    !value.is_empty() && value.len() <= 256 && !value.chars().any(|c| c == ',' || c.is_control())
}
