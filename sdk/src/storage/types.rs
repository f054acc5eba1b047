//! The values that cross the storage boundary.

use abi_stable::{
    StableAbi,
    std_types::{ROption, RString},
};

/// Bits of [`AccountState::present`]: which state fields the account's JSON carries. A field
/// can be absent, present as `null`, or present with a value; the original files use all three,
/// and a lossless round trip has to keep them apart.
pub mod field {
    pub const USAGE_COUNT: u32 = 1 << 0;
    pub const ERROR_COUNT: u32 = 1 << 1;
    pub const REFRESH_COUNT: u32 = 1 << 2;
    pub const IS_HEALTHY: u32 = 1 << 3;
    pub const IS_DISABLED: u32 = 1 << 4;
    pub const NEEDS_REFRESH: u32 = 1 << 5;
    pub const LAST_USED: u32 = 1 << 6;
    pub const LAST_ERROR_TIME: u32 = 1 << 7;
    pub const LAST_ERROR_MESSAGE: u32 = 1 << 8;
    pub const SCHEDULED_RECOVERY_TIME: u32 = 1 << 9;
    pub const LAST_HEALTH_CHECK_TIME: u32 = 1 << 10;
    pub const LAST_HEALTH_CHECK_MODEL: u32 = 1 << 11;
    /// Every state field.
    pub const ALL: u32 = (1 << 12) - 1;
}

/// An account's runtime state: counters, health, flags. Kept apart from the account's config
/// JSON and changed only through [`StateUpdate`], so a counter bump never rewrites the
/// account's configuration (the Node Redis fork rewrote the whole JSON per request and lost
/// counts and `[]`s that way). Times are milliseconds since the Unix epoch.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct AccountState {
    /// Successful requests (`usageCount`).
    pub usage_count: i64,
    /// Failed requests counted toward unhealthy (`errorCount`).
    pub error_count: i64,
    /// Token refresh attempts since the last success (`refreshCount`).
    pub refresh_count: i64,
    /// `isHealthy`.
    pub healthy: bool,
    /// `isDisabled`: excluded from selection by the operator.
    pub disabled: bool,
    /// `needsRefresh`: excluded from selection until a token refresh finishes.
    pub needs_refresh: bool,
    /// `lastUsed`.
    pub last_used: ROption<i64>,
    /// `lastErrorTime`.
    pub last_error_time: ROption<i64>,
    /// `lastErrorMessage`: also the reason an account was marked unhealthy.
    pub last_error_message: ROption<RString>,
    /// `scheduledRecoveryTime`: when an unhealthy account may be tried again.
    pub scheduled_recovery_time: ROption<i64>,
    /// `lastHealthCheckTime`.
    pub last_health_check_time: ROption<i64>,
    /// `lastHealthCheckModel`.
    pub last_health_check_model: ROption<RString>,
    /// Which fields the account's JSON carries ([`field`] bits); a `None` field whose bit is set
    /// is written as `null`.
    pub present: u32,
}

impl Default for AccountState {
    /// A new account: healthy, enabled, zero counters, the fields the original always writes
    /// present.
    fn default() -> Self {
        Self {
            usage_count: 0,
            error_count: 0,
            refresh_count: 0,
            healthy: true,
            disabled: false,
            needs_refresh: false,
            last_used: ROption::RNone,
            last_error_time: ROption::RNone,
            last_error_message: ROption::RNone,
            scheduled_recovery_time: ROption::RNone,
            last_health_check_time: ROption::RNone,
            last_health_check_model: ROption::RNone,
            present: field::USAGE_COUNT
                | field::ERROR_COUNT
                | field::IS_HEALTHY
                | field::IS_DISABLED
                | field::LAST_USED
                | field::LAST_ERROR_TIME
                | field::LAST_ERROR_MESSAGE,
        }
    }
}

/// One atomic change to an account's state. Every backend applies it as a single indivisible
/// step, in the order documented on [`StateUpdate::apply`] (the reference implementation that
/// the memory and file backends call and the Redis backend's Lua script mirrors). A zero /
/// `None` / `false` member does nothing, so `StateUpdate::default()` is a no-op.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq, Eq)]
pub struct StateUpdate {
    /// When the event happened (ms). Timestamps only move forward: coalesced deltas flushed
    /// late never set `lastUsed` back.
    pub at: i64,
    pub usage_delta: i64,
    pub error_delta: i64,
    pub refresh_delta: i64,
    /// Sets `lastErrorMessage` (and `lastErrorTime`).
    pub error_message: ROption<RString>,
    /// If > 0 and the previous error is older than this, `errorCount` restarts from zero
    /// before `error_delta` is added (the original's 10 s window).
    pub error_window_ms: i64,
    /// If > 0 and `errorCount` reaches it after this update, the account becomes unhealthy.
    pub unhealthy_at: i64,
    pub healthy: ROption<bool>,
    pub disabled: ROption<bool>,
    pub needs_refresh: ROption<bool>,
    pub scheduled_recovery_time: ROption<i64>,
    /// Sets `lastHealthCheckTime = at` and `lastHealthCheckModel`.
    pub health_check_model: ROption<RString>,
    /// `errorCount = refreshCount = 0`, error time and message `null`, `needsRefresh = false`.
    pub clear_errors: bool,
    /// `usageCount = errorCount = refreshCount = 0`.
    pub reset_counters: bool,
    /// Sets `lastUsed` even without a usage delta (a selection).
    pub touch: bool,
}

impl StateUpdate {
    /// `n` successful requests (coalesced), the last at `at`.
    pub fn usage(n: i64, at: i64) -> Self {
        Self {
            at,
            usage_delta: n,
            ..Self::default()
        }
    }
    /// `n` failed requests with the last error's message.
    pub fn error(n: i64, at: i64, message: impl Into<String>) -> Self {
        Self {
            at,
            error_delta: n,
            error_message: ROption::RSome(RString::from(message.into())),
            ..Self::default()
        }
    }
    /// Healthy again, errors cleared (the original's `markProviderHealthy` minus the usage bump).
    pub fn mark_healthy(at: i64) -> Self {
        Self {
            at,
            healthy: ROption::RSome(true),
            clear_errors: true,
            ..Self::default()
        }
    }
    /// Unhealthy now, with the reason.
    pub fn mark_unhealthy(at: i64, reason: impl Into<String>) -> Self {
        Self {
            at,
            healthy: ROption::RSome(false),
            error_message: ROption::RSome(RString::from(reason.into())),
            ..Self::default()
        }
    }
    pub fn set_disabled(disabled: bool) -> Self {
        Self {
            disabled: ROption::RSome(disabled),
            ..Self::default()
        }
    }

    /// Applies the update to `s`. The order is part of the contract:
    /// 1. `reset_counters`, then `clear_errors`;
    /// 2. the error window: with `error_window_ms > 0`, `error_delta > 0` and a previous error
    ///    more than the window before `at`, `errorCount` restarts at 0;
    /// 3. deltas: usage (and `lastUsed = max(lastUsed, at)`, also on `touch`); errors (and
    ///    `lastErrorTime = max(.., at)` when `error_delta != 0` or a message is given; the
    ///    message); refreshes;
    /// 4. `healthy` (`true` also clears `scheduledRecoveryTime`), then `unhealthy_at`;
    /// 5. `scheduled_recovery_time`, `disabled`, `needs_refresh`, `health_check_model`.
    pub fn apply(&self, s: &mut AccountState) {
        use field::*;
        if self.reset_counters {
            s.usage_count = 0;
            s.error_count = 0;
            s.refresh_count = 0;
            s.present |= USAGE_COUNT | ERROR_COUNT | REFRESH_COUNT;
        }
        if self.clear_errors {
            s.error_count = 0;
            s.refresh_count = 0;
            s.last_error_time = ROption::RNone;
            s.last_error_message = ROption::RNone;
            s.needs_refresh = false;
            s.present |=
                ERROR_COUNT | REFRESH_COUNT | LAST_ERROR_TIME | LAST_ERROR_MESSAGE | NEEDS_REFRESH;
        }
        if self.error_window_ms > 0
            && self.error_delta > 0
            && let ROption::RSome(t) = s.last_error_time
            && self.at - t > self.error_window_ms
        {
            s.error_count = 0;
        }
        if self.usage_delta != 0 {
            s.usage_count += self.usage_delta;
            s.present |= USAGE_COUNT;
        }
        if self.usage_delta != 0 || self.touch {
            s.last_used = ROption::RSome(max_time(s.last_used, self.at));
            s.present |= LAST_USED;
        }
        if self.error_delta != 0 {
            s.error_count += self.error_delta;
            s.present |= ERROR_COUNT;
        }
        if self.error_delta != 0 || self.error_message.is_some() {
            s.last_error_time = ROption::RSome(max_time(s.last_error_time, self.at));
            s.present |= LAST_ERROR_TIME;
        }
        if let ROption::RSome(m) = &self.error_message {
            s.last_error_message = ROption::RSome(m.clone());
            s.present |= LAST_ERROR_MESSAGE;
        }
        if self.refresh_delta != 0 {
            s.refresh_count += self.refresh_delta;
            s.present |= REFRESH_COUNT;
        }
        if let ROption::RSome(h) = self.healthy {
            s.healthy = h;
            s.present |= IS_HEALTHY;
            if h && s.scheduled_recovery_time.is_some() {
                s.scheduled_recovery_time = ROption::RNone;
            }
        }
        if self.unhealthy_at > 0 && s.error_count >= self.unhealthy_at {
            s.healthy = false;
            s.present |= IS_HEALTHY;
        }
        if let ROption::RSome(t) = self.scheduled_recovery_time {
            s.scheduled_recovery_time = ROption::RSome(t);
            s.present |= SCHEDULED_RECOVERY_TIME;
        }
        if let ROption::RSome(d) = self.disabled {
            s.disabled = d;
            s.present |= IS_DISABLED;
        }
        if let ROption::RSome(n) = self.needs_refresh {
            s.needs_refresh = n;
            s.present |= NEEDS_REFRESH;
        }
        if let ROption::RSome(m) = &self.health_check_model {
            s.last_health_check_time = ROption::RSome(self.at);
            s.last_health_check_model = ROption::RSome(m.clone());
            s.present |= LAST_HEALTH_CHECK_TIME | LAST_HEALTH_CHECK_MODEL;
        }
    }
}

fn max_time(current: ROption<i64>, at: i64) -> i64 {
    match current {
        ROption::RSome(t) if t > at => t,
        _ => at,
    }
}

/// One account of a provider pool. `config` is the account's JSON object without the state
/// fields (credential paths, base URLs, `customName`, `notSupportedModels`, and every field
/// this version does not know, kept verbatim).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub provider_type: RString,
    pub uuid: RString,
    pub config: RString,
    pub state: AccountState,
}

/// The result of a token compare-and-set.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct TokenCas {
    /// Whether the new token was stored.
    pub swapped: bool,
    /// When refused: the token stored now (what the caller should use instead).
    pub current: ROption<RString>,
}

/// A web-UI session. Backends never see the bearer token itself, only a hash of it.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub token_hash: RString,
    /// JSON object, e.g. `{"username":"admin","loginTime":…,"expiryTime":…}`.
    pub data: RString,
    pub expires_at: i64,
}

/// A plugin's enabled flag, plus the rest of its `plugins.json` entry (e.g. `description`) as
/// a JSON object, kept verbatim.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct PluginState {
    pub name: RString,
    pub enabled: bool,
    pub extra: RString,
}

/// What a change-feed event is about.
#[repr(transparent)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChangeKind(pub u8);

impl ChangeKind {
    pub const CONFIG: Self = Self(1);
    /// An account was added or its config changed.
    pub const ACCOUNT: Self = Self(2);
    pub const ACCOUNT_DELETED: Self = Self(3);
    /// Counters, health or flags changed.
    pub const ACCOUNT_STATE: Self = Self(4);
    pub const TOKEN: Self = Self(5);
    pub const PASSWORD: Self = Self(6);
    pub const USAGE_CACHE: Self = Self(7);
    pub const PLUGINS: Self = Self(8);
    pub const META: Self = Self(9);
    pub const SESSION: Self = Self(10);
    /// Events may have been missed (a reconnect, a lagging subscriber): reload everything.
    pub const RESYNC: Self = Self(255);
}

/// One change-feed event: the kind, what it addresses (empty strings where not applicable) and
/// the id of the gateway instance that made it.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    pub provider_type: RString,
    pub uuid: RString,
    pub origin: RString,
}

impl Change {
    pub fn new(kind: ChangeKind, origin: &str) -> Self {
        Self {
            kind,
            provider_type: RString::new(),
            uuid: RString::new(),
            origin: origin.into(),
        }
    }
    pub fn account(kind: ChangeKind, provider_type: &str, uuid: &str, origin: &str) -> Self {
        Self {
            kind,
            provider_type: provider_type.into(),
            uuid: uuid.into(),
            origin: origin.into(),
        }
    }
    pub fn resync() -> Self {
        Self::new(ChangeKind::RESYNC, "")
    }
}
