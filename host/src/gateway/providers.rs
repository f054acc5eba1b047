//! The running provider plugins and which provider types each serves.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aiclient_convert::Protocol;
use aiclient_sdk::PluginError;
use aiclient_sdk::provider::{ProviderObject, ProviderReply, ProviderRequest, RefreshRequest};
use serde_json::Value;

/// One provider plugin instance.
pub struct ProviderPlugin {
    pub name: String,
    pub protocol: Protocol,
    pub types: Vec<String>,
    /// Static model ids per provider type, for the model lists.
    pub models: HashMap<String, Vec<String>>,
    pub check_model: Option<String>,
    /// Refresh a token this long before it expires (`describe().refreshAheadMs`).
    pub refresh_ahead_ms: i64,
    /// Routing stops within one change-feed round trip of a disable (kept in the backend).
    pub enabled: AtomicBool,
    obj: ProviderObject,
}

pub fn protocol_from_name(name: &str) -> Option<Protocol> {
    match name {
        "openai" => Some(Protocol::OpenAi),
        "openaiResponses" | "codex" => Some(Protocol::OpenAiResponses),
        "claude" => Some(Protocol::Claude),
        "gemini" => Some(Protocol::Gemini),
        _ => None,
    }
}

impl ProviderPlugin {
    pub fn new(name: &str, obj: ProviderObject) -> Result<Self, String> {
        let d: Value = serde_json::from_str(&obj.describe())
            .map_err(|e| format!("provider plugin {name}: describe() is not JSON: {e}"))?;
        let proto = d
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let protocol = protocol_from_name(proto)
            .ok_or_else(|| format!("provider plugin {name}: unknown protocol {proto:?}"))?;
        let types: Vec<String> = d
            .get("providerTypes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        if types.is_empty() {
            return Err(format!(
                "provider plugin {name}: describe() lists no providerTypes"
            ));
        }
        let models = d
            .get("models")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(t, v)| {
                        let ids = v
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(Value::as_str)
                                    .map(String::from)
                                    .collect()
                            })
                            .unwrap_or_default();
                        (t.clone(), ids)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            name: name.to_string(),
            protocol,
            types,
            models,
            check_model: d
                .get("checkModel")
                .and_then(Value::as_str)
                .map(String::from),
            refresh_ahead_ms: d
                .get("refreshAheadMs")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                .max(0),
            enabled: AtomicBool::new(true),
            obj,
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub async fn call(&self, req: ProviderRequest) -> Result<ProviderReply, PluginError> {
        self.obj.call(req).await.into_result()
    }

    pub async fn refresh_token(&self, req: RefreshRequest) -> Result<String, PluginError> {
        Ok(self
            .obj
            .refresh_token(req)
            .await
            .into_result()?
            .into_string())
    }

    /// When `token` expires (ms), 0 if the plugin cannot tell.
    pub fn token_expiry(&self, provider_type: &str, token: &str) -> i64 {
        self.obj.token_expiry(provider_type.into(), token.into())
    }

    pub fn object(&self) -> &ProviderObject {
        &self.obj
    }
}

/// Provider type → plugin.
#[derive(Default)]
pub struct ProviderRegistry {
    pub plugins: Vec<Arc<ProviderPlugin>>,
    by_type: HashMap<String, Arc<ProviderPlugin>>,
}

impl ProviderRegistry {
    pub fn add(&mut self, p: ProviderPlugin) -> Result<(), String> {
        for t in &p.types {
            if let Some(other) = self.by_type.get(t) {
                return Err(format!(
                    "provider type {t} is served by both {} and {}",
                    other.name, p.name
                ));
            }
        }
        let p = Arc::new(p);
        for t in &p.types {
            self.by_type.insert(t.clone(), p.clone());
        }
        self.plugins.push(p);
        Ok(())
    }

    /// The plugin serving `provider_type`. The original also accepts suffixed custom groups
    /// (`openai-custom-1` is served like `openai-custom`).
    pub fn for_type(&self, provider_type: &str) -> Option<&Arc<ProviderPlugin>> {
        self.by_type.get(provider_type).or_else(|| {
            self.by_type
                .iter()
                .filter(|(base, _)| provider_type.starts_with(&format!("{base}-")))
                .max_by_key(|(base, _)| base.len())
                .map(|(_, p)| p)
        })
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<ProviderPlugin>> {
        self.plugins.iter().find(|p| p.name == name)
    }
}
