//! Code Assist project discovery, once per account, cached in the plugin: `loadCodeAssist`
//! names the project, or `onboardUser` (a long-running operation, polled) creates one in the
//! default tier. Used only when the account has no `PROJECT_ID`.
//!
//! Concurrent first requests of one account share one discovery. A failure is not cached (the
//! next request tries again). A refused token comes back as a REFRESH reply so the host
//! refreshes it; other failures count against the account as the original's "could not
//! discover project". The original's `tokeninfo` lookup of the account's e-mail is skipped:
//! it only fed the UI and made discovery fail when Google's tokeninfo did.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aiclient_provider_kit as kit;
use aiclient_sdk::PluginError;
use aiclient_sdk::provider::{AccountAction, Reply};
use serde_json::{Value, json};

use crate::errors;
use crate::request::API_CLIENT;
use crate::response::{self, Call, Sent};
use crate::settings::{Kind, Settings};

/// The outcome of a discovery.
pub enum Discovered {
    Project(String),
    /// The upstream refused (token refused, rate limited, failed): the reply to hand back.
    Refused(Reply),
}

type Slot = Arc<tokio::sync::Mutex<Option<String>>>;

/// Discovered projects by account.
#[derive(Default)]
pub struct Projects {
    cache: Mutex<HashMap<String, Slot>>,
}

fn metadata() -> Value {
    json!({"ideType": "IDE_UNSPECIFIED", "platform": "PLATFORM_UNSPECIFIED", "pluginType": "GEMINI", "duetProject": ""})
}

/// A project id from `cloudaicompanionProject` (a string, or `{id, name}`).
fn project_of(v: Option<&Value>) -> Option<String> {
    let id = match v? {
        Value::String(s) => s.as_str(),
        Value::Object(o) => o.get("id").and_then(Value::as_str)?,
        _ => return None,
    };
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_string())
}

/// The default allowed tier's id, `free-tier` if none is marked.
fn default_tier(load: &Value) -> String {
    load.get("allowedTiers")
        .and_then(Value::as_array)
        .and_then(|tiers| {
            tiers
                .iter()
                .find(|t| t.get("isDefault").and_then(Value::as_bool) == Some(true))
        })
        .and_then(|t| t.get("id"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("free-tier")
        .to_string()
}

/// A refusal of a discovery call as the reply for the host.
fn refused(method: &str, r: Reply) -> Reply {
    if matches!(r.action, AccountAction::REFRESH | AccountAction::COOLDOWN) {
        return r;
    }
    let status = if r.status >= 500 { r.status } else { 502 };
    let msg = format!(
        "could not discover the Code Assist project: {method} answered {}: {}",
        r.status,
        response::upstream_message(&r.body)
    );
    let mut out = Reply::status(
        status,
        errors::google_error_body(status, "UNAVAILABLE", &msg),
    );
    out.retry_after_ms = r.retry_after_ms;
    out
}

async fn post_json(
    call: &Call,
    method: &str,
    body: &Value,
) -> Result<Result<Value, Reply>, PluginError> {
    match call.post(body).await? {
        Sent::Refused(r) => Ok(Err(refused(method, r))),
        Sent::Ok(resp) => {
            let text = response::read_capped(resp, 1 << 20).await?;
            serde_json::from_str(&text)
                .map(Ok)
                .map_err(|e| PluginError::unavailable(format!("could not discover the Code Assist project: {method} answered invalid JSON: {e}")))
        }
    }
}

/// Runs `loadCodeAssist`, then `onboardUser` until done.
async fn discover(
    settings: &Settings,
    base: &str,
    auth: &str,
    client: &reqwest::Client,
    timeout: std::time::Duration,
) -> Result<Discovered, PluginError> {
    let call = |method: &str| Call {
        client: client.clone(),
        url: kit::join_url(base, &format!("v1internal:{method}")),
        headers: vec![
            ("authorization", auth.to_string()),
            ("content-type", "application/json".to_string()),
            ("x-goog-api-client", API_CLIENT.to_string()),
        ],
        timeout,
    };
    let load = match post_json(
        &call("loadCodeAssist"),
        "loadCodeAssist",
        &json!({"cloudaicompanionProject": "", "metadata": metadata()}),
    )
    .await?
    {
        Ok(v) => v,
        Err(r) => return Ok(Discovered::Refused(r)),
    };
    if let Some(p) = project_of(load.get("cloudaicompanionProject")) {
        return Ok(Discovered::Project(p));
    }
    let body = json!({"tierId": default_tier(&load), "cloudaicompanionProject": "", "metadata": metadata()});
    let onboard = call("onboardUser");
    for poll in 0..settings.onboard_max_polls.max(1) {
        if poll > 0 {
            tokio::time::sleep(settings.onboard_poll).await;
        }
        let op = match post_json(&onboard, "onboardUser", &body).await? {
            Ok(v) => v,
            Err(r) => return Ok(Discovered::Refused(r)),
        };
        if op.get("done").and_then(Value::as_bool) == Some(true) {
            return match project_of(op.pointer("/response/cloudaicompanionProject")) {
                Some(p) => Ok(Discovered::Project(p)),
                None => Err(PluginError::unavailable(
                    "could not discover the Code Assist project: onboarding finished without a project id",
                )),
            };
        }
    }
    Err(PluginError::unavailable(format!(
        "could not discover the Code Assist project: onboarding timeout ({} polls)",
        settings.onboard_max_polls
    )))
}

/// Antigravity's stand-in when discovery fails: `adjective-noun-xxxxx`.
fn random_project() -> String {
    const ADJ: [&str; 8] = [
        "useful", "bright", "swift", "calm", "bold", "clever", "steady", "quiet",
    ];
    const NOUN: [&str; 8] = [
        "fuze", "wave", "spark", "flow", "core", "beam", "grove", "stone",
    ];
    let u = uuid::Uuid::new_v4();
    let b = u.as_bytes();
    let suffix: String = u.simple().to_string().chars().take(5).collect();
    format!(
        "{}-{}-{suffix}",
        ADJ[b[0] as usize % ADJ.len()],
        NOUN[b[1] as usize % NOUN.len()]
    )
}

impl Projects {
    /// The account's project: cached, else discovered (one discovery per account at a time).
    pub async fn resolve(
        &self,
        key: &str,
        settings: &Settings,
        base: &str,
        auth: &str,
        client: &reqwest::Client,
        timeout: std::time::Duration,
    ) -> Result<Discovered, PluginError> {
        let slot = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.to_string())
            .or_default()
            .clone();
        let mut cached = slot.lock().await;
        if let Some(p) = cached.as_ref() {
            return Ok(Discovered::Project(p.clone()));
        }
        let found = discover(settings, base, auth, client, timeout).await;
        let found = match (settings.kind, found) {
            (Kind::Antigravity, Err(e)) => {
                tracing::warn!(error = %e, "Antigravity project discovery failed; using a generated project id");
                Discovered::Project(random_project())
            }
            (Kind::Antigravity, Ok(Discovered::Refused(r)))
                if r.action != AccountAction::REFRESH =>
            {
                tracing::warn!(
                    status = r.status,
                    "Antigravity project discovery refused; using a generated project id"
                );
                Discovered::Project(random_project())
            }
            (_, other) => other?,
        };
        if let Discovered::Project(p) = &found {
            tracing::info!(project = %p, "Code Assist project discovered");
            *cached = Some(p.clone());
        }
        Ok(found)
    }

    /// Drops a discovered project (the upstream refused access to it).
    pub fn forget(&self, key: &str) {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_and_tiers() {
        assert_eq!(project_of(Some(&json!("p-1"))).as_deref(), Some("p-1"));
        assert_eq!(
            project_of(Some(&json!({"id": "p-2", "name": "n"}))).as_deref(),
            Some("p-2")
        );
        assert_eq!(project_of(Some(&json!(""))), None);
        assert_eq!(project_of(None), None);
        assert_eq!(
            default_tier(
                &json!({"allowedTiers": [{"id": "legacy-tier"}, {"id": "standard-tier", "isDefault": true}]})
            ),
            "standard-tier"
        );
        assert_eq!(default_tier(&json!({})), "free-tier");
        let p = random_project();
        assert_eq!(p.split('-').count(), 3, "{p}");
    }

    #[test]
    fn discovery_refusals_count_against_the_account() {
        let mut r = Reply::status(400, r#"{"error":{"code":400,"message":"bad"}}"#.into());
        r.action = AccountAction::CLIENT_ERROR;
        let out = refused("loadCodeAssist", r);
        assert_eq!(out.status, 502, "not the client's fault");
        assert_eq!(out.action, AccountAction::NONE);
        assert!(out.body.contains("could not discover"), "{}", out.body);
        let mut r = Reply::status(401, String::new());
        r.action = AccountAction::REFRESH;
        assert_eq!(refused("loadCodeAssist", r).action, AccountAction::REFRESH);
    }
}
