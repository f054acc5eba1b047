//! Token refresh that never collides.
//!
//! Several providers rotate refresh tokens: two refreshes of one account burn it. So a refresh
//! happens once per expiry, whoever needs it:
//! - **in this process**, per-account single flight: callers queue on the account's refresh
//!   mutex; whoever gets it second finds the token already changed and uses it;
//! - **across instances**, the storage backend's per-account lock (owner + expiry, released by
//!   compare-and-delete) lets one instance call the token endpoint; the others poll storage
//!   until the refresh token changes. The new token is stored with a compare-and-set on the old
//!   refresh token, so even a refresher that lost its lock cannot overwrite a newer token.
//!
//! A failed refresh marks the account unhealthy with the reason; the operator's credential is
//! never deleted.

use std::sync::Arc;
use std::time::Duration;

use aiclient_sdk::PluginError;
use aiclient_sdk::account::{now_ms, refresh_token_of};
use aiclient_sdk::provider::RefreshRequest;

use super::Gateway;
use super::pool::Slot;
use super::providers::ProviderPlugin;

/// How long a refresh may hold the account lock before another instance may take over.
const LOCK_TTL_MS: u64 = 60_000;
/// How long a waiting instance polls storage for another instance's refresh result.
const WAIT_FOR_OTHER: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);
/// After a retryable refresh failure, the account rests this long before the next attempt, so
/// a down token endpoint is not hammered by every request.
const REFRESH_RETRY_MS: i64 = 10_000;

impl Gateway {
    /// The token to call with: the cached one, refreshed first if it is within the plugin's
    /// refresh-ahead window, or unconditionally when `force` (the upstream refused it).
    /// `used` is the token the caller saw refused (for `force`), so a refresh someone else
    /// already made is reused rather than repeated.
    pub(crate) async fn fresh_token(
        &self,
        plugin: &ProviderPlugin,
        slot: &Arc<Slot>,
        force: bool,
        used: Option<&str>,
    ) -> Result<Option<Arc<str>>, PluginError> {
        let Some(token) = self.token_for(slot).await? else {
            return Ok(None);
        };
        if !force && !self.due(plugin, slot, &token) {
            return Ok(Some(token));
        }
        let seen = used
            .map(str::to_string)
            .unwrap_or_else(|| token.to_string());
        let _flight = slot.refresh.lock().await;
        // Someone in this process refreshed while we waited.
        if let Some(t) = self.token_for(slot).await?
            && *t != *seen
            && !self.due(plugin, slot, &t)
        {
            return Ok(Some(t));
        }
        let t = &*slot.provider_type;
        let u = &*slot.uuid;
        let owner = format!("{}:{}", self.instance_id, uuid::Uuid::new_v4());
        let deadline = tokio::time::Instant::now() + WAIT_FOR_OTHER;
        loop {
            if self.storage.acquire_lock(t, u, &owner, LOCK_TTL_MS).await? {
                break;
            }
            // Another instance is refreshing: wait for its result to land in storage.
            if let Some(stored) = self.storage.get_token(t, u).await?
                && self.newer(plugin, t, &seen, &stored)
            {
                let stored: Arc<str> = Arc::from(stored);
                slot.set_cached_token(Some(stored.clone()));
                return Ok(Some(stored));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(PluginError::timeout(format!(
                    "waited {}s for another instance's token refresh of {t}/{u}",
                    WAIT_FOR_OTHER.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
        let result = self.refresh_locked(plugin, slot, &seen).await;
        if let Err(e) = self.storage.release_lock(t, u, &owner).await {
            tracing::warn!(provider = t, uuid = u, error = %e, "releasing the refresh lock failed; it expires by itself");
        }
        result
    }

    async fn refresh_locked(
        &self,
        plugin: &ProviderPlugin,
        slot: &Arc<Slot>,
        seen: &str,
    ) -> Result<Option<Arc<str>>, PluginError> {
        let (t, u) = (&*slot.provider_type, &*slot.uuid);
        // The lock's previous holder may have finished just before we got it.
        let Some(stored) = self.storage.get_token(t, u).await? else {
            return Ok(None);
        };
        let stored_rt = refresh_token_of(&stored).unwrap_or_default();
        if self.newer(plugin, t, seen, &stored) {
            let s: Arc<str> = Arc::from(stored);
            slot.set_cached_token(Some(s.clone()));
            return Ok(Some(s));
        }
        let req = RefreshRequest {
            provider_type: t.into(),
            account_uuid: u.into(),
            account: slot.config().as_str().into(),
            token: stored.as_str().into(),
            options: "{}".into(),
        };
        tracing::info!(provider = t, uuid = u, "refreshing token");
        let result = plugin.refresh_token(req).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .token_refreshes
            .get_or_create(&crate::metrics::OutcomeLabels {
                provider: t.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        match result {
            Ok(new) => {
                let cas = self.storage.cas_token(t, u, &stored_rt, &new).await?;
                let current: Arc<str> = if cas.swapped {
                    Arc::from(new.as_str())
                } else {
                    Arc::from(
                        cas.current
                            .into_option()
                            .map(|s| s.into_string())
                            .unwrap_or(new),
                    )
                };
                slot.set_cached_token(Some(current.clone()));
                self.pools.refreshed(slot);
                Ok(Some(current))
            }
            Err(e) if e.retryable => {
                // The token endpoint is down or slow: the credential may be fine; try later.
                tracing::warn!(provider = t, uuid = u, error = %e, "token refresh failed for now; will retry");
                self.pools.cooldown(slot, now_ms() + REFRESH_RETRY_MS);
                Err(e)
            }
            Err(e) => {
                tracing::warn!(provider = t, uuid = u, error = %e, "token refresh failed");
                self.pools.mark_unhealthy(
                    slot,
                    &format!("token refresh failed: {}", e.message),
                    None,
                );
                Err(e)
            }
        }
    }

    /// Whether `stored` is a refresh of `seen`: a new refresh token (rotating providers) or a
    /// later expiry (providers such as Google keep the refresh token and only renew access).
    fn newer(
        &self,
        plugin: &ProviderPlugin,
        provider_type: &str,
        seen: &str,
        stored: &str,
    ) -> bool {
        if refresh_token_of(stored) != refresh_token_of(seen) {
            return true;
        }
        let (a, b) = (
            plugin.token_expiry(provider_type, seen),
            plugin.token_expiry(provider_type, stored),
        );
        b > a && b > 0
    }

    fn due(&self, plugin: &ProviderPlugin, slot: &Slot, token: &str) -> bool {
        let expiry = plugin.token_expiry(&slot.provider_type, token);
        expiry > 0 && expiry - now_ms() <= plugin.refresh_ahead_ms
    }
}
