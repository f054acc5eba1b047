//! `aiclient init`: a fresh deployment's state. Default service config with a generated client
//! API key, empty pools, the default plugin states, a generated admin password (stored only as
//! a hash), meta. The secrets are printed once; there is no fixed default for either.

use std::io::Write;

use aiclient_sdk::account::{format_time, now_ms};
use aiclient_sdk::storage::PluginState;
use serde_json::{Map, Value, json};

use super::report::Progress;
use super::snapshot::{self, Tokens};
use super::spec::{Endpoint, Place};
use super::{Exit, Stop, meta_after, open, write_err};
use crate::admin::auth::{hash_password, random_hex};
use crate::config::Config;

/// The service config `init` writes: the original's defaults (`server-behaviour.md` §6.2) with
/// a generated `REQUIRED_API_KEY` instead of `123456`.
pub fn default_config(api_key: &str) -> Map<String, Value> {
    let v = json!({
        "REQUIRED_API_KEY": api_key,
        "MODEL_PROVIDER": "gemini-cli-oauth",
        "SYSTEM_PROMPT_FILE_PATH": "configs/input_system_prompt.txt",
        "SYSTEM_PROMPT_MODE": "append",
        "PROMPT_LOG_BASE_NAME": "prompt_log",
        "PROMPT_LOG_MODE": "none",
        "REQUEST_MAX_RETRIES": 3,
        "REQUEST_BASE_DELAY": 1000,
        "CREDENTIAL_SWITCH_MAX_RETRIES": 5,
        "CRON_NEAR_MINUTES": 15,
        "CRON_REFRESH_TOKEN": false,
        "MAX_ERROR_COUNT": 10,
        "providerFallbackChain": {},
        "modelFallbackMapping": {},
        "PROXY_URL": null,
        "PROXY_ENABLED_PROVIDERS": [],
        "LOGIN_EXPIRY": 3600,
        "SCHEDULED_HEALTH_CHECK": {"enabled": true, "interval": 600000},
    });
    v.as_object().cloned().unwrap_or_default()
}

/// The original's default `plugins.json` (the upstream version's: only the API-key check on).
pub fn default_plugins() -> Vec<PluginState> {
    [
        ("default-auth", true, "Default API key authentication"),
        ("api-potluck", false, "Shared API key pool"),
        ("ai-monitor", false, "Request and response monitor"),
        ("model-usage-stats", false, "Per-model usage statistics"),
        ("ip-node-proxy", false, "Per-client proxy nodes"),
    ]
    .into_iter()
    .map(|(name, enabled, description)| PluginState {
        name: name.into(),
        enabled,
        extra: json!({ "description": description }).to_string().into(),
    })
    .collect()
}

/// `aiclient init`.
pub async fn init(
    config: &Config,
    ep: &Endpoint,
    force: bool,
    out: &mut dyn Write,
) -> Result<Exit, Stop> {
    if ep.place == Place::Memory {
        return Err(Stop::usage(
            "the configured backend is memory, which keeps nothing after this command: give --redis-url URL, or --storage file --config-dir DIR",
        ));
    }
    let storage = open(&config.plugin_dir, ep).await?;
    let snap = snapshot::read(&storage, "target", Tokens::Of(&[]), &Progress::hidden()).await?;
    let mut existing = Vec::new();
    if snap.config.is_some() {
        existing.push("a service config".to_string());
    }
    if !snap.accounts.is_empty() {
        existing.push(format!("{} account(s)", snap.accounts.len()));
    }
    if snap.password.is_some() {
        existing.push("an admin password".into());
    }
    if !snap.plugins.is_empty() {
        existing.push("plugin states".into());
    }
    if snap.usage.is_some() {
        existing.push("a usage cache".into());
    }
    if snap.meta.is_some() {
        existing.push("meta".into());
    }
    if !existing.is_empty() && !force {
        return Err(Stop::failed(format!(
            "{} already holds data ({}); nothing was changed. --force re-initialises it (replaces the config, API key, admin password and default plugin states; keeps accounts, tokens and counters)",
            ep.label,
            existing.join(", ")
        )));
    }

    let password = random_hex(16);
    let api_key = format!("sk-{}", random_hex(24));
    let cfg = default_config(&api_key);
    let plugins = default_plugins();
    let w = |what: &str, e: aiclient_sdk::PluginError| format!("{}: writing {what}: {e}", ep.label);
    storage
        .set_config(&Value::Object(cfg.clone()).to_string())
        .await
        .map_err(|e| w("the config", e))?;
    let hash = tokio::task::spawn_blocking({
        let p = password.clone();
        move || hash_password(&p)
    })
    .await
    .map_err(|e| format!("hashing the password: {e}"))?;
    storage
        .set_password_hash(&hash)
        .await
        .map_err(|e| w("the password", e))?;
    for p in &plugins {
        storage
            .set_plugin_state(p.clone())
            .await
            .map_err(|e| w("the plugin states", e))?;
    }
    // A new password ends every web-UI session.
    for s in &snap.sessions {
        storage
            .delete_session(&s.token_hash)
            .await
            .map_err(|e| w("the sessions", e))?;
    }
    let meta = meta_after(
        snap.meta.as_ref(),
        &[
            ("initializedAt", Value::from(format_time(now_ms()))),
            (
                "initializedBy",
                Value::from(format!("aiclient {}", env!("CARGO_PKG_VERSION"))),
            ),
        ],
    );
    storage
        .set_meta(&Value::Object(meta).to_string())
        .await
        .map_err(|e| w("meta", e))?;
    storage
        .flush()
        .await
        .map_err(|e| format!("{}: flushing: {e}", ep.label))?;

    // Read back (from disk for a file backend).
    let storage = if storage.name() == "file" {
        drop(storage);
        open(&config.plugin_dir, ep).await?
    } else {
        storage
    };
    let back = snapshot::read(&storage, "target", Tokens::Of(&[]), &Progress::hidden()).await?;
    let mut problems = Vec::new();
    if back.config.as_ref() != Some(&cfg) {
        problems.push("the config");
    }
    // The hash was derived from the password above; it must come back unchanged.
    if back.password.as_deref() != Some(hash.as_str()) {
        problems.push("the admin password");
    }
    for p in &plugins {
        let ok = back.plugin(&p.name).is_some_and(|b| {
            b.enabled == p.enabled
                && serde_json::from_str::<Value>(&b.extra).ok()
                    == serde_json::from_str::<Value>(&p.extra).ok()
        });
        if !ok {
            problems.push("a plugin state");
        }
    }
    if !back.sessions.is_empty() {
        problems.push("the sessions (some survived)");
    }
    if !problems.is_empty() {
        problems.dedup();
        return Err(Stop::failed(format!(
            "{}: read back after init, {} did not match what was written",
            ep.label,
            problems.join(", ")
        )));
    }
    let mut o = || -> std::io::Result<()> {
        writeln!(out, "Initialised {}:", ep.label)?;
        writeln!(out, "  config: defaults, with a generated REQUIRED_API_KEY")?;
        if snap.accounts.is_empty() {
            writeln!(out, "  provider pools: empty")?;
        } else {
            writeln!(
                out,
                "  provider pools: {} existing account(s) kept",
                snap.accounts.len()
            )?;
        }
        let on: Vec<&str> = plugins
            .iter()
            .filter(|p| p.enabled)
            .map(|p| p.name.as_str())
            .collect();
        let off: Vec<&str> = plugins
            .iter()
            .filter(|p| !p.enabled)
            .map(|p| p.name.as_str())
            .collect();
        writeln!(
            out,
            "  plugins: {} enabled; {} disabled",
            on.join(", "),
            off.join(", ")
        )?;
        if !snap.sessions.is_empty() {
            writeln!(out, "  sessions: {} ended", snap.sessions.len())?;
        }
        writeln!(out, "  verified: read back and compared")?;
        writeln!(out)?;
        writeln!(
            out,
            "generated web UI admin password (shown once, stored hashed): {password}"
        )?;
        writeln!(
            out,
            "generated client API key (REQUIRED_API_KEY, shown once): {api_key}"
        )?;
        Ok(())
    };
    o().map_err(write_err)?;
    Ok(Exit::Success)
}
