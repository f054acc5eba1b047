//! `PluginError`: the one error type that crosses the plugin boundary.
//!
//! The code is a `u32` newtype rather than an enum so that a newer plugin can return a code an
//! older host does not know yet without breaking the ABI; such a code reads as `INTERNAL`-like
//! (see [`ErrorCode::name`]).

use std::fmt;

use abi_stable::{StableAbi, std_types::RString};

/// Stable error codes. Values never change meaning; new ones are only appended.
#[repr(transparent)]
#[derive(StableAbi, Copy, Clone, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    /// A bug or an unexpected state inside the plugin.
    pub const INTERNAL: Self = Self(1);
    /// The addressed item (account, token, session, …) does not exist.
    pub const NOT_FOUND: Self = Self(2);
    /// The item exists already, or a compare-and-set lost.
    pub const CONFLICT: Self = Self(3);
    /// The service behind the plugin (Redis, an upstream) cannot be reached right now.
    pub const UNAVAILABLE: Self = Self(4);
    /// An operation ran out of time.
    pub const TIMEOUT: Self = Self(5);
    /// The caller sent something malformed (bad JSON, bad config, bad argument).
    pub const INVALID_INPUT: Self = Self(6);
    /// The plugin does not implement this operation or extension.
    pub const UNSUPPORTED: Self = Self(7);
    /// The plugin panicked; the panic was caught at the boundary and the host kept running.
    pub const PANIC: Self = Self(8);
    /// Credentials were refused (upstream 401/403, wrong Redis password).
    pub const UNAUTHORIZED: Self = Self(9);
    /// Rate limited (upstream 429); the message may carry a retry hint.
    pub const RATE_LIMITED: Self = Self(10);
    /// The data was written by a newer schema than this plugin understands.
    pub const INCOMPATIBLE: Self = Self(11);
    /// The service refuses writes for lack of resources (e.g. Redis `OOM command not allowed`).
    pub const RESOURCE_EXHAUSTED: Self = Self(12);

    /// A stable, lower-case name for logs and API bodies.
    pub fn name(self) -> &'static str {
        match self {
            Self::INTERNAL => "internal",
            Self::NOT_FOUND => "not_found",
            Self::CONFLICT => "conflict",
            Self::UNAVAILABLE => "unavailable",
            Self::TIMEOUT => "timeout",
            Self::INVALID_INPUT => "invalid_input",
            Self::UNSUPPORTED => "unsupported",
            Self::PANIC => "panic",
            Self::UNAUTHORIZED => "unauthorized",
            Self::RATE_LIMITED => "rate_limited",
            Self::INCOMPATIBLE => "incompatible",
            Self::RESOURCE_EXHAUSTED => "resource_exhausted",
            _ => "unknown",
        }
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An error returned by any plugin call: a stable code, a human message, and whether trying
/// the same call again later may succeed.
#[repr(C)]
#[derive(StableAbi, Clone, PartialEq, Eq)]
pub struct PluginError {
    pub code: ErrorCode,
    pub message: RString,
    pub retryable: bool,
}

impl PluginError {
    /// An error with the code's usual retry flag (`UNAVAILABLE`, `TIMEOUT`, `RATE_LIMITED` and
    /// `RESOURCE_EXHAUSTED` are retryable; everything else is not).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let retryable = matches!(
            code,
            ErrorCode::UNAVAILABLE
                | ErrorCode::TIMEOUT
                | ErrorCode::RATE_LIMITED
                | ErrorCode::RESOURCE_EXHAUSTED
        );
        Self {
            code,
            message: RString::from(message.into()),
            retryable,
        }
    }
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::INTERNAL, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::NOT_FOUND, m)
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::CONFLICT, m)
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::UNAVAILABLE, m)
    }
    pub fn timeout(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::TIMEOUT, m)
    }
    pub fn invalid_input(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::INVALID_INPUT, m)
    }
    pub fn unsupported(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::UNSUPPORTED, m)
    }
    pub fn panic(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::PANIC, m)
    }
    pub fn message(&self) -> &str {
        self.message.as_str()
    }
}

impl fmt::Debug for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginError")
            .field("code", &self.code)
            .field("message", &self.message.as_str())
            .field("retryable", &self.retryable)
            .finish()
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for PluginError {}

impl From<serde_json::Error> for PluginError {
    fn from(e: serde_json::Error) -> Self {
        Self::invalid_input(format!("invalid JSON: {e}"))
    }
}
