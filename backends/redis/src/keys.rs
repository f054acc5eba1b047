//! The key schema, in one place (written down in `docs/redis-schema.md`; keep the two equal).
//!
//! Every key is `<prefix>{<tag>}:<name>`. The `{…}` part is a Redis Cluster hash tag: keys
//! with the same tag live in the same slot, so a Lua script or MULTI may touch several of them
//! on a cluster too. Two kinds of tag exist:
//! - `{global}`: config, the pool registry, password, sessions, usage cache, plugins, meta;
//! - `{pool:<type>}`: everything of one provider type (index, counter, accounts, tokens,
//!   locks), so every per-account script stays inside one slot.
//!
//! A `pool:` tag can never equal `global`, whatever the type is called. Provider types may not
//! contain `{` or `}` (they would end the tag early and let two types' keys collide).

use aiclient_sdk::PluginError;

/// Names of the account hash's fields, in the order `HMGET` reads them. `config` is the
/// account's JSON as an opaque string; the rest is [`aiclient_sdk::storage::AccountState`],
/// one field each (absent = `None`), plus `present` (the state-field bitmask).
pub const ACCOUNT_FIELDS: [&str; 14] = [
    "config",
    "present",
    "usageCount",
    "errorCount",
    "refreshCount",
    "isHealthy",
    "isDisabled",
    "needsRefresh",
    "lastUsed",
    "lastErrorTime",
    "lastErrorMessage",
    "scheduledRecoveryTime",
    "lastHealthCheckTime",
    "lastHealthCheckModel",
];

#[derive(Clone)]
pub struct Keys {
    prefix: String,
}

/// The keys of one provider type.
pub struct Pool {
    base: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    fn global(&self, name: &str) -> String {
        format!("{}{{global}}:{name}", self.prefix)
    }

    /// STRING: the service config JSON.
    pub fn config(&self) -> String {
        self.global("config")
    }
    /// ZSET: provider type → ms of its first `add_account` (the registry `list_provider_types`
    /// reads instead of scanning).
    pub fn pools(&self) -> String {
        self.global("pools")
    }
    /// STRING: the UI password hash.
    pub fn password(&self) -> String {
        self.global("password")
    }
    /// ZSET: session token hash → `expires_at` ms (the index `list_sessions` reads).
    pub fn sessions(&self) -> String {
        self.global("sessions")
    }
    /// HASH `data`, `expiresAt`, with a TTL of `expires_at - now`.
    pub fn session(&self, token_hash: &str) -> String {
        self.global(&format!("session:{token_hash}"))
    }
    /// STRING: the usage-cache JSON.
    pub fn usage(&self) -> String {
        self.global("usage")
    }
    /// HASH: plugin name → `1`/`0` (enabled).
    pub fn plugins(&self) -> String {
        self.global("plugins")
    }
    /// HASH: plugin name → the rest of its entry (JSON object).
    pub fn plugin_extra(&self) -> String {
        self.global("plugin-extra")
    }
    /// STRING: the meta JSON object (`schemaVersion`, …).
    pub fn meta(&self) -> String {
        self.global("meta")
    }
    /// The pub/sub channel of the change feed (channels are not keys; no tag needed).
    pub fn channel(&self) -> String {
        format!("{}changes", self.prefix)
    }

    /// The keys of provider type `t`; `INVALID_INPUT` if `t` cannot be a hash tag.
    pub fn pool(&self, t: &str) -> Result<Pool, PluginError> {
        if t.contains(['{', '}']) {
            return Err(PluginError::invalid_input(format!(
                "provider type {t:?} must not contain '{{' or '}}'"
            )));
        }
        Ok(Pool {
            base: format!("{}{{pool:{t}}}:", self.prefix),
        })
    }
}

impl Pool {
    /// ZSET: uuid → insertion sequence number (the pool's order).
    pub fn accounts(&self) -> String {
        format!("{}accounts", self.base)
    }
    /// STRING counter (INCR): insertion sequence numbers and config revisions.
    pub fn seq(&self) -> String {
        format!("{}seq", self.base)
    }
    /// HASH: [`ACCOUNT_FIELDS`] plus `rev` (config revision for compare-and-set).
    pub fn account(&self, uuid: &str) -> String {
        format!("{}account:{uuid}", self.base)
    }
    /// HASH `json` (the credential JSON), `refresh` (its refresh token, absent if none). No TTL.
    pub fn token(&self, uuid: &str) -> String {
        format!("{}token:{uuid}", self.base)
    }
    /// STRING: the lock owner, with the lock's TTL.
    pub fn lock(&self, uuid: &str) -> String {
        format!("{}lock:{uuid}", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_documented_schema() {
        let k = Keys::new("aiclient:");
        assert_eq!(k.config(), "aiclient:{global}:config");
        assert_eq!(k.session("ab12"), "aiclient:{global}:session:ab12");
        assert_eq!(k.channel(), "aiclient:changes");
        let p = k.pool("claude-kiro-oauth").expect("valid type");
        assert_eq!(p.accounts(), "aiclient:{pool:claude-kiro-oauth}:accounts");
        assert_eq!(
            p.account("u-1"),
            "aiclient:{pool:claude-kiro-oauth}:account:u-1"
        );
        assert_eq!(
            p.token("u-1"),
            "aiclient:{pool:claude-kiro-oauth}:token:u-1"
        );
        assert_eq!(p.lock("u-1"), "aiclient:{pool:claude-kiro-oauth}:lock:u-1");
        assert!(k.pool("a}b").is_err());
    }

    /// docs/redis-schema.md names every key exactly as this module builds it.
    #[test]
    fn the_schema_document_matches() {
        let doc = include_str!("../../../docs/redis-schema.md");
        let k = Keys::new("P");
        let p = k.pool("<t>").expect("placeholder type");
        let keys = [
            k.config(),
            k.pools(),
            k.password(),
            k.sessions(),
            k.session("<token-hash>"),
            k.usage(),
            k.plugins(),
            k.plugin_extra(),
            k.meta(),
            p.accounts(),
            p.seq(),
            p.account("<uuid>"),
            p.token("<uuid>"),
            p.lock("<uuid>"),
        ];
        for key in keys {
            assert!(
                doc.contains(&format!("| `{key}` |")),
                "{key} is not in the schema table"
            );
        }
        for f in ACCOUNT_FIELDS.iter().chain(&["rev"]) {
            assert!(
                doc.contains(&format!("`{f}`")),
                "account field {f} is not documented"
            );
        }
        assert!(doc.contains("Channel: `P` + `changes`") && k.channel() == "Pchanges");
        assert!(doc.contains(&format!("Schema version: **{}**", crate::SCHEMA_VERSION)));
    }
}
