//! Reading a backend's whole state into memory through the storage API (the "stage" step), and
//! the look at an original `configs/` directory for content the storage API cannot carry.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use aiclient_sdk::PluginError;
use aiclient_sdk::account::now_ms;
use aiclient_sdk::storage::{Account, PluginState, Session};
use futures_util::stream::{self, StreamExt};
use serde_json::{Map, Value};

use super::copy::{Cat, Item, Outcome};
use super::report::Progress;
use crate::storage::Storage;

/// `(provider type, uuid)`.
pub type Key = (String, String);

/// How many calls run at once against a backend (Redis pipelines them on one connection).
pub const CONCURRENCY: usize = 64;

/// One account with its config parsed.
pub struct Acct {
    pub account: Account,
    pub config: Map<String, Value>,
}

impl Acct {
    pub fn t(&self) -> &str {
        self.account.provider_type.as_str()
    }
    pub fn u(&self) -> &str {
        self.account.uuid.as_str()
    }
    pub fn key(&self) -> Key {
        (self.t().to_string(), self.u().to_string())
    }
}

/// A token as stored (the text, written as is) and parsed (for comparing).
pub struct Token {
    pub text: String,
    pub value: Value,
}

/// Everything a backend holds, except locks and the change feed.
#[derive(Default)]
pub struct Snapshot {
    pub config: Option<Map<String, Value>>,
    pub accounts: Vec<Acct>,
    index: HashMap<Key, usize>,
    pub tokens: HashMap<Key, Token>,
    pub password: Option<String>,
    pub sessions: Vec<Session>,
    pub usage: Option<Map<String, Value>>,
    pub plugins: Vec<PluginState>,
    pub meta: Option<Map<String, Value>>,
}

impl Snapshot {
    pub fn account(&self, t: &str, u: &str) -> Option<&Acct> {
        self.index
            .get(&(t.to_string(), u.to_string()))
            .map(|&i| &self.accounts[i])
    }

    pub fn token(&self, t: &str, u: &str) -> Option<&Token> {
        self.tokens.get(&(t.to_string(), u.to_string()))
    }

    /// Every account's key, in order.
    pub fn keys(&self) -> Vec<Key> {
        self.accounts.iter().map(Acct::key).collect()
    }

    /// Provider types with accounts, in order of first appearance.
    pub fn types(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        self.accounts
            .iter()
            .filter(|a| seen.insert(a.t().to_string()))
            .map(|a| a.t().to_string())
            .collect()
    }

    pub fn session(&self, key: &str) -> Option<&Session> {
        self.sessions.iter().find(|s| s.token_hash.as_str() == key)
    }

    pub fn plugin(&self, name: &str) -> Option<&PluginState> {
        self.plugins.iter().find(|p| p.name.as_str() == name)
    }

    /// Adds an account (for building snapshots in tests).
    pub fn push_account(&mut self, account: Account) -> Result<(), String> {
        let config = object("account config", &account.config)?;
        let a = Acct { account, config };
        self.index.insert(a.key(), self.accounts.len());
        self.accounts.push(a);
        Ok(())
    }
}

/// Parses a stored document that must be a JSON object.
pub fn object(what: &str, text: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(format!("{what} is not a JSON object")),
        Err(e) => Err(format!("{what} is not JSON: {e}")),
    }
}

/// Which tokens to read.
pub enum Tokens<'a> {
    All,
    /// Only these accounts' (those that exist).
    Of(&'a [Key]),
}

/// Reads everything `s` holds. `side` names it in errors ("source", "target").
pub async fn read(
    s: &Storage,
    side: &str,
    tokens: Tokens<'_>,
    bar: &Progress,
) -> Result<Snapshot, String> {
    let name = s.name().to_string();
    let err = |what: &str, e: PluginError| format!("{side} ({name}): cannot read {what}: {e}");
    let mut snap = Snapshot::default();
    if let Some(t) = s.get_config().await.map_err(|e| err("the config", e))? {
        snap.config = Some(object(&format!("{side}: the service config"), &t)?);
    }
    for a in s
        .list_accounts(None)
        .await
        .map_err(|e| err("the accounts", e))?
    {
        let what = format!("{side}: account {}/{}", a.provider_type, a.uuid);
        let config = object(&what, &a.config)?;
        let acct = Acct { account: a, config };
        snap.index.insert(acct.key(), snap.accounts.len());
        snap.accounts.push(acct);
    }
    let keys: Vec<Key> = match tokens {
        Tokens::All => snap.keys(),
        Tokens::Of(k) => k
            .iter()
            .filter(|k| snap.index.contains_key(*k))
            .cloned()
            .collect(),
    };
    bar.set_len(keys.len() as u64);
    let results: Vec<(Key, Result<Option<String>, PluginError>)> = stream::iter(keys)
        .map(|k| {
            let s = s.clone();
            async move {
                let r = s.get_token(&k.0, &k.1).await;
                (k, r)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .inspect(|_| bar.inc(1))
        .collect()
        .await;
    for (k, r) in results {
        let what = format!("the token of {}/{}", k.0, k.1);
        if let Some(text) = r.map_err(|e| err(&what, e))? {
            let value = serde_json::from_str(&text)
                .map_err(|e| format!("{side}: {what} is not JSON: {e}"))?;
            snap.tokens.insert(k, Token { text, value });
        }
    }
    snap.password = s
        .get_password_hash()
        .await
        .map_err(|e| err("the password", e))?
        .filter(|p| !p.trim().is_empty());
    snap.sessions = s
        .list_sessions()
        .await
        .map_err(|e| err("the sessions", e))?;
    for sess in &snap.sessions {
        object(&format!("{side}: a session's data"), &sess.data)?;
    }
    if let Some(t) = s
        .get_usage_cache()
        .await
        .map_err(|e| err("the usage cache", e))?
    {
        snap.usage = Some(object(&format!("{side}: the usage cache"), &t)?);
    }
    snap.plugins = s
        .list_plugin_states()
        .await
        .map_err(|e| err("the plugin states", e))?;
    for p in &snap.plugins {
        object(&format!("{side}: plugin {}'s entry", p.name), &p.extra)?;
    }
    if let Some(t) = s.get_meta().await.map_err(|e| err("the meta", e))? {
        snap.meta = Some(object(&format!("{side}: the meta"), &t)?);
    }
    Ok(snap)
}

fn skip(cat: Cat, name: String, note: String) -> Item {
    Item::new(cat, name, Outcome::Skip, Some(note))
}

fn read_raw(p: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(p).ok()?;
    serde_json::from_str(text.strip_prefix('\u{feff}').unwrap_or(&text)).ok()
}

/// What an original `configs/` directory holds that the storage API does not carry, as
/// *skip* items: pool entries that are not accounts, empty pools, unknown top-level keys of
/// `plugins.json` and `token-store.json`, expired sessions. (Unknown fields inside accounts,
/// `config.json`, token files, plugin entries and `usage-cache.json` are carried.)
pub fn scan_file_dir(dir: &Path, pools_file: &Path) -> Vec<Item> {
    let mut items = Vec::new();
    if let Some(Value::Object(pools)) = read_raw(pools_file) {
        for (t, v) in &pools {
            let Value::Array(entries) = v else {
                items.push(skip(
                    Cat::Accounts,
                    format!("provider_pools.json {t:?}"),
                    "not an array of accounts; not migrated".into(),
                ));
                continue;
            };
            if entries.is_empty() {
                items.push(skip(
                    Cat::Types,
                    t.clone(),
                    "an empty pool ([]) is not migrated".into(),
                ));
            }
            let mut seen = HashSet::new();
            for (i, e) in entries.iter().enumerate() {
                let why = match e.get("uuid") {
                    _ if !e.is_object() => Some("not an object"),
                    Some(Value::String(u)) if !u.is_empty() => {
                        (!seen.insert(u.clone())).then_some("a duplicate uuid")
                    }
                    _ => Some("no uuid"),
                };
                if let Some(why) = why {
                    items.push(skip(
                        Cat::Accounts,
                        format!("provider_pools.json {t}[{i}]"),
                        format!("{why}; the gateway does not serve it, not migrated"),
                    ));
                }
            }
        }
    }
    if let Some(Value::Object(doc)) = read_raw(&dir.join("plugins.json")) {
        for k in doc.keys().filter(|k| *k != "plugins") {
            items.push(skip(
                Cat::Plugins,
                format!("plugins.json {k:?}"),
                "a top-level key besides \"plugins\" is not carried by the storage API".into(),
            ));
        }
        if let Some(Value::Object(p)) = doc.get("plugins") {
            for (name, _) in p.iter().filter(|(_, e)| !e.is_object()) {
                items.push(skip(
                    Cat::Plugins,
                    name.clone(),
                    "its entry is not an object; not migrated".into(),
                ));
            }
        }
    }
    if let Some(Value::Object(doc)) = read_raw(&dir.join("token-store.json")) {
        for k in doc.keys().filter(|k| *k != "tokens") {
            items.push(skip(
                Cat::Sessions,
                format!("token-store.json {k:?}"),
                "a top-level key besides \"tokens\" is not carried by the storage API".into(),
            ));
        }
        if let Some(Value::Object(t)) = doc.get("tokens") {
            let now = now_ms();
            let expired = t
                .values()
                .filter(|v| {
                    v.get("expiryTime")
                        .and_then(|x| x.as_i64().or_else(|| x.as_f64().map(|f| f as i64)))
                        .is_none_or(|e| e <= now)
                })
                .count();
            if expired > 0 {
                items.push(skip(
                    Cat::Sessions,
                    format!("{expired} expired session(s)"),
                    "expired sessions are not migrated".into(),
                ));
            }
        }
    }
    items
}
