//! Redis client errors → [`PluginError`]s with the contract's codes. A failed call is always an
//! error, never an empty value; connection trouble is `UNAVAILABLE`/`TIMEOUT` (retryable), a
//! full server `RESOURCE_EXHAUSTED`, refused credentials `UNAUTHORIZED`. Every message names
//! the server by its masked address and passes through the [`Redactor`].

use std::time::Duration;

use aiclient_sdk::{ErrorCode, PluginError};
use redis::{ErrorKind, RedisError};

use crate::settings::Redactor;

/// What an error message needs to say where it happened without saying too much.
#[derive(Clone)]
pub struct Ctx {
    /// `host:port` only.
    pub server: String,
    pub redactor: Redactor,
}

/// The code a server error code (`OOM`, `NOAUTH`, …) stands for, if it decides one.
fn server_code(code: &str) -> Option<ErrorCode> {
    match code {
        // `maxmemory` reached under a no-eviction policy.
        "OOM" => Some(ErrorCode::RESOURCE_EXHAUSTED),
        "NOAUTH" | "WRONGPASS" | "NOPERM" => Some(ErrorCode::UNAUTHORIZED),
        // Loading a dump, a long script elsewhere, a replica without master, a resharding.
        "LOADING" | "BUSY" | "MASTERDOWN" | "READONLY" | "TRYAGAIN" | "CLUSTERDOWN" => {
            Some(ErrorCode::UNAVAILABLE)
        }
        _ => None,
    }
}

pub fn code_of(e: &RedisError) -> ErrorCode {
    // A single reply error, or a MULTI/pipeline whose commands failed: the codes decide.
    if let Some(errs) = e.clone().into_server_errors()
        && let Some(c) = errs.iter().find_map(|(_, se)| server_code(se.code()))
    {
        return c;
    }
    if let Some(c) = e.code().and_then(server_code) {
        return c;
    }
    // Older servers wrap an error inside a script as `ERR Error running script … OOM …`.
    if e.to_string().contains("OOM command not allowed") {
        return ErrorCode::RESOURCE_EXHAUSTED;
    }
    match e.kind() {
        ErrorKind::AuthenticationFailed => ErrorCode::UNAUTHORIZED,
        ErrorKind::Io if e.is_timeout() => ErrorCode::TIMEOUT,
        ErrorKind::Io
        | ErrorKind::ClusterConnectionNotFound
        | ErrorKind::MasterNameNotFoundBySentinel
        | ErrorKind::NoValidReplicasFoundBySentinel => ErrorCode::UNAVAILABLE,
        ErrorKind::InvalidClientConfig => ErrorCode::INVALID_INPUT,
        _ if e.is_connection_dropped() || e.is_connection_refusal() => ErrorCode::UNAVAILABLE,
        _ => ErrorCode::INTERNAL,
    }
}

pub fn from_redis(e: &RedisError, what: &str, ctx: &Ctx) -> PluginError {
    let code = code_of(e);
    let msg = format!("redis {what} at {}: {e}", ctx.server);
    PluginError::new(code, ctx.redactor.redact(&msg))
}

pub fn timed_out(what: &str, after: Duration, ctx: &Ctx) -> PluginError {
    PluginError::timeout(format!(
        "redis {what} at {}: no reply within {} ms",
        ctx.server,
        after.as_millis()
    ))
}

/// A reply of an unexpected shape (another program wrote our keys, or a bug).
pub fn bad_reply(what: &str, detail: impl std::fmt::Display) -> PluginError {
    PluginError::internal(format!("redis {what}: unexpected reply: {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let oom: RedisError = redis::make_extension_error(
            "OOM".into(),
            Some("command not allowed when used memory > 'maxmemory'.".into()),
        );
        assert_eq!(code_of(&oom), ErrorCode::RESOURCE_EXHAUSTED);
        let io: RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused").into();
        assert_eq!(code_of(&io), ErrorCode::UNAVAILABLE);
        let t: RedisError = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow").into();
        assert_eq!(code_of(&t), ErrorCode::TIMEOUT);
        let auth: RedisError = (ErrorKind::AuthenticationFailed, "bad").into();
        assert_eq!(code_of(&auth), ErrorCode::UNAUTHORIZED);
    }
}
