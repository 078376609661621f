//! `warrant-audit delegate`: mint a delegation token, or extend a chain by
//! one hop.
//!
//! The delegator's private key is `KEYS-DIR/FROM.key`. Without `--parent`
//! the token is a root grant and the chain has one token. With `--parent
//! HEADER` the given chain is parsed and verified first (signatures, links,
//! expiry, narrowing; not the recipient, as there is no request), with the
//! public keys `KEYS-DIR/*.pub`; FROM must be its final delegate, and the
//! new token is appended. So a chain of any length is built by repeating
//! the command, each time with the previous header:
//!
//! ```text
//! H1=$(warrant-audit delegate --from human --to agent-a --format header)
//! H2=$(warrant-audit delegate --from agent-a --to agent-b --parent "$H1" --format header)
//! ```
//!
//! Before printing, the whole new chain is parsed and verified again with
//! the same keys plus FROM's, so what is printed is what a verifier with
//! those keys accepts (apart from the recipient, scope and depth cap, which
//! depend on the request and the filter's configuration).
//!
//! Output (`--format`):
//! - `header`: the `X-Oktsec-Delegation` header value, every hop, one line;
//! - `json`: one pretty-printed object, `{"token": {...}, "chain": [...],
//!   "header": "...", "chain_hash": "...", "path": [...], "expires_at":
//!   "..."}`, where `token` is the new token and `chain` every token, root
//!   first, in the header's JSON form (see [`warrant_delegation::token`]);
//! - `text` (default): the new token, the chain, and the header value.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, ValueEnum};
use warrant_delegation::keys::{parse_private_key, KeyStore};
use warrant_delegation::mint::DEFAULT_TOKEN_MAX_DEPTH;
use warrant_delegation::{
    encode_header, encode_json, extend_header, mint, Chain, MintRequest, Timestamp, VerifiedChain,
    VerifyPolicy,
};

use crate::cli::keys::{check_file_name, load_public_key, load_public_keys, read_small};

/// Mint a delegation token, or extend a chain (--parent) by one hop.
///
/// FROM grants TO the right to message the recipients in --scope (and to
/// use the tools in --tools) for --ttl. The token is signed with
/// KEYS-DIR/FROM.key. With --parent the given chain is verified with the
/// public keys KEYS-DIR/*.pub and the new token is appended to it, so
/// `--format header` prints the whole chain.
#[derive(Debug, Args)]
pub struct DelegateArgs {
    /// The delegator: who grants, and whose private key signs.
    #[arg(long, value_name = "NAME")]
    pub from: String,
    /// The delegate: who receives the grant.
    #[arg(long, value_name = "NAME")]
    pub to: String,
    /// Recipients the delegate may message; '*' means any.
    ///
    /// Repeat the flag or give a comma list. With --parent, a subset of the
    /// parent's scope.
    #[arg(long, value_name = "RECIPIENT", value_delimiter = ',', default_value = "*")]
    pub scope: Vec<String>,
    /// Tools the delegate may use. Default: all (still narrowed by the
    /// parent's tools).
    ///
    /// Repeat the flag or give a comma list.
    #[arg(long, value_name = "TOOL", value_delimiter = ',')]
    pub tools: Vec<String>,
    /// How long the token lasts, such as 30m, 4h or 1h30m.
    ///
    /// The chain as a whole expires with its earliest token.
    #[arg(long, value_name = "DURATION", default_value = "4h", value_parser = parse_ttl)]
    pub ttl: Duration,
    /// The largest chain depth the token accepts. Default: 3, or with
    /// --parent the parent's last max depth.
    ///
    /// A token at depth D (the root is 0) verifies only if D is at most its
    /// max depth, and max depth never grows along a chain.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..=1_000_000))]
    pub max_depth: Option<i64>,
    /// The directory of FROM.key and of the *.pub keys that verify --parent.
    #[arg(long, value_name = "DIR", default_value = "keys")]
    pub keys_dir: PathBuf,
    /// The chain to extend: an X-Oktsec-Delegation header value, or '-' to
    /// read it from stdin.
    ///
    /// FROM must be its final delegate. It is verified (signatures, links,
    /// expiry, narrowing) with the keys in KEYS-DIR before a hop is added.
    #[arg(long, value_name = "HEADER")]
    pub parent: Option<String>,
    /// What to print.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// The output of `delegate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The header value (every hop), one line.
    Header,
    /// One JSON object: the new token, the chain, the header and its hash.
    Json,
    /// The new token and the chain, for people.
    Text,
}

/// Runs `delegate`.
///
/// # Errors
/// A bad name, a missing or malformed key, a parent chain that does not
/// parse or verify, or a token that would not verify (see
/// [`warrant_delegation::mint()`]).
pub fn run(args: DelegateArgs) -> anyhow::Result<ExitCode> {
    let now = now()?;

    // 1. The delegator's key, and the keys that check the chain.
    check_file_name(&args.from).context("--from")?;
    let key_path = args.keys_dir.join(format!("{}.key", args.from));
    let key = parse_private_key(&read_small(&key_path)?)
        .with_context(|| format!("{}: not a private key", key_path.display()))?;
    let mut keys = KeyStore::new();
    if args.parent.is_some() {
        for (name, public) in load_public_keys(&args.keys_dir)? {
            keys.insert(name, public);
        }
    } else {
        let public_path = args.keys_dir.join(format!("{}.pub", args.from));
        if public_path.exists() {
            keys.insert(args.from.clone(), load_public_key(&public_path)?);
        }
    }
    match keys.key(&args.from) {
        Some(public) if *public != key.verifying_key() => bail!(
            "{}: public key does not belong to {}",
            args.keys_dir.join(format!("{}.pub", args.from)).display(),
            key_path.display()
        ),
        Some(_) => {}
        None => {
            eprintln!(
                "warning: {}: not found; a verifier needs {}'s public key to accept this token",
                args.keys_dir.join(format!("{}.pub", args.from)).display(),
                args.from
            );
            keys.insert(args.from.clone(), key.verifying_key());
        }
    }

    // 2. The parent chain, verified.
    let policy = VerifyPolicy::new();
    let parent = match &args.parent {
        None => None,
        Some(header) => Some(verify_parent(header, &keys, &policy, now)?),
    };

    // 3. Mint and append.
    let max_depth = args.max_depth.unwrap_or_else(|| {
        parent
            .as_ref()
            .and_then(|p| p.tokens().last())
            .map_or(DEFAULT_TOKEN_MAX_DEPTH, |t| t.max_depth)
    });
    let request = MintRequest {
        delegator: &args.from,
        delegate: &args.to,
        scope: args.scope.clone(),
        tools: args.tools.clone(),
        ttl: args.ttl,
        max_depth,
        parent: parent.as_ref(),
    };
    let token = mint(&key, &request, now).map_err(|e| anyhow!("cannot mint the token: {e}"))?;
    let header = match &parent {
        Some(parent) => extend_header(parent, &token),
        None => encode_header(std::slice::from_ref(&token)),
    };

    // 4. Check the result as a verifier would.
    let chain = Chain::parse(header.as_bytes(), policy.limits())
        .and_then(|chain| chain.verify_ignoring_recipient(&keys, &policy, now))
        .map_err(|e| anyhow!("the new chain does not verify: {e}"))?;

    print!("{}", render(args.format, &chain, &header)?);
    Ok(ExitCode::SUCCESS)
}

/// Parses and verifies `--parent`.
fn verify_parent(
    header: &str,
    keys: &KeyStore,
    policy: &VerifyPolicy,
    now: Timestamp,
) -> anyhow::Result<VerifiedChain> {
    let header = if header == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("--parent -: cannot read stdin")?;
        text
    } else {
        header.to_string()
    };
    // A header pasted from a terminal or `$(...)` may carry a newline.
    let header = header.trim();
    let chain = Chain::parse(header.as_bytes(), policy.limits())
        .map_err(|e| anyhow!("--parent: not a delegation header: {e}"))?;
    chain.verify_ignoring_recipient(keys, policy, now).map_err(|e| {
        anyhow!(
            "--parent: the chain does not verify: {e}\n\nhint: every delegator's public key \
             must be in the keys directory as NAME.pub"
        )
    })
}

/// The output in `format`, ending with a newline.
fn render(format: Format, chain: &VerifiedChain, header: &str) -> anyhow::Result<String> {
    let Some(token) = chain.tokens().last() else {
        bail!("internal: a verified chain without tokens");
    };
    Ok(match format {
        Format::Header => format!("{header}\n"),
        Format::Text => {
            format!("{}\n{}header:     {header}\n", token.format_text(), chain.format_text())
        }
        Format::Json => {
            let tokens: serde_json::Value = serde_json::from_slice(&encode_json(chain.tokens()))
                .context("internal: the chain's JSON form does not parse")?;
            let object = serde_json::json!({
                "token": tokens.get(chain.depth().saturating_sub(1)),
                "chain": tokens,
                "header": header,
                "chain_hash": chain.chain_hash(),
                "path": chain.path(),
                "expires_at": chain.expires_at().to_string(),
            });
            format!("{}\n", serde_json::to_string_pretty(&object)?)
        }
    })
}

/// Reads `--ttl`: a positive duration such as `30m`, `4h` or `1h30m`.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(text).map_err(|e| {
        format!("expected a duration such as 30m, 4h or 1h30m, found {text:?}: {e}")
    })?;
    if ttl.is_zero() {
        return Err(format!("expected a positive duration, found {text:?}"));
    }
    Ok(ttl)
}

fn now() -> anyhow::Result<Timestamp> {
    let since_epoch =
        SystemTime::now().duration_since(UNIX_EPOCH).context("the clock is before 1970")?;
    let nanos = i64::try_from(since_epoch.as_nanos()).context("the clock is past 2262")?;
    Ok(Timestamp::from_unix_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_accepts_go_like_durations_and_refuses_zero_and_garbage() {
        assert_eq!(parse_ttl("4h"), Ok(Duration::from_secs(4 * 3600)));
        assert_eq!(parse_ttl("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert!(parse_ttl("0s").unwrap_err().contains("expected a positive duration"));
        assert!(parse_ttl("soon").unwrap_err().starts_with("expected a duration"));
    }
}
