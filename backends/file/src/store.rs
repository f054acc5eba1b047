//! The config dir's contents in memory: what every call reads and changes, and what the writer
//! turns back into files.
//!
//! Every file is kept whole, unknown content included: accounts as config + state (split by
//! `aiclient_sdk::account`, with the object's original key order remembered so a rewrite only
//! changes values), pool entries that are not valid accounts verbatim in their place, and the
//! other documents as JSON objects changed in place.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use aiclient_sdk::PluginError;
use aiclient_sdk::account::{merge_account, split_account};
use aiclient_sdk::storage::{Account, AccountState};
use indexmap::IndexMap;
use serde_json::{Map, Value};

use crate::files::{kind_of, read_object, read_text};
use crate::layout::{Layout, credential_field};

pub(crate) const CONFIG_FILE: &str = "config.json";
pub(crate) const POOLS_FILE: &str = "provider_pools.json";
pub(crate) const PWD_FILE: &str = "pwd";
pub(crate) const SESSIONS_FILE: &str = "token-store.json";
pub(crate) const USAGE_FILE: &str = "usage-cache.json";
pub(crate) const PLUGINS_FILE: &str = "plugins.json";
/// Not a file of the original (it keeps no metadata); the Node version ignores it.
pub(crate) const META_FILE: &str = "aiclient-meta.json";

/// Dirty bits of the documents.
pub(crate) mod doc {
    pub const CONFIG: u32 = 1 << 0;
    pub const POOLS: u32 = 1 << 1;
    pub const PWD: u32 = 1 << 2;
    pub const SESSIONS: u32 = 1 << 3;
    pub const USAGE: u32 = 1 << 4;
    pub const PLUGINS: u32 = 1 << 5;
    pub const META: u32 = 1 << 6;
}

/// One account.
pub(crate) struct Slot {
    /// The account object minus its state fields, compact JSON.
    pub config: String,
    pub state: AccountState,
    /// The credential file its path field references, resolved.
    pub token: Option<PathBuf>,
    /// Key order of the object as read from the file; a rewrite follows it.
    pub order: Option<Arc<[String]>>,
}

/// One element of a pool array.
pub(crate) enum Entry {
    Account(Slot),
    /// Not a usable account (no uuid, a duplicate uuid, not an object): kept verbatim, in
    /// place, never served.
    Opaque(Value),
}

/// One top-level value of `provider_pools.json`.
pub(crate) enum Top {
    /// uuid (or a synthetic key for opaque entries) → entry, in file order.
    Pool(IndexMap<String, Entry>),
    /// Not an array: kept verbatim.
    Other(Value),
}

#[derive(Default)]
pub(crate) struct Store {
    pub config: Option<Map<String, Value>>,
    pub pools: IndexMap<String, Top>,
    opaque_keys: u64,
    /// Resolved path → token JSON; `None` = no such file (never was, or deleted). Keyed by
    /// path, not account, because accounts may share a file.
    pub tokens: HashMap<PathBuf, Option<String>>,
    pub locks: HashMap<(String, String), (String, Instant)>,
    pub pwd: Option<String>,
    /// `token-store.json`; its `tokens` member is an object whenever it is present.
    pub sessions: Option<Map<String, Value>>,
    pub usage: Option<Map<String, Value>>,
    /// `plugins.json`; its `plugins` member is an object whenever it is present.
    pub plugins: Option<Map<String, Value>>,
    pub meta: Option<Map<String, Value>>,
    pub dirty: u32,
    pub dirty_tokens: HashSet<PathBuf>,
}

impl Store {
    pub fn slot(&self, t: &str, u: &str) -> Option<&Slot> {
        match self.pools.get(t)? {
            Top::Pool(p) => match p.get(u)? {
                Entry::Account(s) => Some(s),
                Entry::Opaque(_) => None,
            },
            Top::Other(_) => None,
        }
    }

    pub fn slot_mut(&mut self, t: &str, u: &str) -> Option<&mut Slot> {
        match self.pools.get_mut(t)? {
            Top::Pool(p) => match p.get_mut(u)? {
                Entry::Account(s) => Some(s),
                Entry::Opaque(_) => None,
            },
            Top::Other(_) => None,
        }
    }

    /// Every account as (type, uuid, slot), in file order.
    pub fn accounts(&self) -> impl Iterator<Item = (&str, &str, &Slot)> {
        self.pools.iter().flat_map(|(t, top)| {
            let pool = match top {
                Top::Pool(p) => Some(p),
                Top::Other(_) => None,
            };
            pool.into_iter()
                .flatten()
                .filter_map(move |(u, e)| match e {
                    Entry::Account(s) => Some((t.as_str(), u.as_str(), s)),
                    Entry::Opaque(_) => None,
                })
        })
    }

    /// Whether an account other than `except` references the token file `p`.
    pub fn referenced(&self, p: &Path, except: (&str, &str)) -> bool {
        self.accounts()
            .any(|(t, u, s)| (t, u) != except && s.token.as_deref() == Some(p))
    }

    /// Loads the token at `p` into the cache unless it is there already. A malformed file is
    /// an error and nothing is cached.
    pub fn load_token(&mut self, p: &Path) -> Result<(), PluginError> {
        if !self.tokens.contains_key(p) {
            let token = read_object(p)?.map(|m| Value::Object(m).to_string());
            self.tokens.insert(p.to_path_buf(), token);
        }
        Ok(())
    }

    /// How many files wait to be written.
    pub fn pending(&self) -> usize {
        self.dirty.count_ones() as usize + self.dirty_tokens.len()
    }

    fn opaque_key(&mut self) -> String {
        self.opaque_keys += 1;
        // NUL cannot start a real uuid taken from a file or the API.
        format!("\u{0}opaque-{}", self.opaque_keys)
    }
}

/// The `tokens` object of `token-store.json`, created if missing.
pub(crate) fn session_tokens(doc: &mut Map<String, Value>) -> &mut Map<String, Value> {
    let v = doc
        .entry("tokens")
        .or_insert_with(|| Value::Object(Map::new()));
    if !v.is_object() {
        // Only reachable for a document built at run time: load refuses a non-object.
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => m,
        _ => unreachable!("made an object above"),
    }
}

/// A session entry's expiry (`expiryTime`, ms); `None` counts as expired, as in the original
/// (`Date.now() > undefined` is false there, but its sweep drops such entries too).
pub(crate) fn session_expiry(entry: &Value) -> Option<i64> {
    let v = entry.get("expiryTime")?;
    v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))
}

/// `provider_pools.json`'s path: `PROVIDER_POOLS_FILE_PATH` from `config.json` if it names an
/// existing file (upstream honours it), else `<config dir>/provider_pools.json`. Fixed at
/// startup.
pub(crate) fn pools_path(layout: &Layout, config: Option<&Map<String, Value>>) -> PathBuf {
    let default = layout.file(POOLS_FILE);
    let configured = config
        .and_then(|c| c.get("PROVIDER_POOLS_FILE_PATH"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(|s| layout.resolve(s));
    match configured {
        Some(p) if p == default || p.is_file() => p,
        Some(p) => {
            tracing::warn!(
                configured = %p.display(),
                using = %default.display(),
                "PROVIDER_POOLS_FILE_PATH names no file; using the default pools file"
            );
            default
        }
        None => default,
    }
}

/// Reads the config dir. Any malformed file fails the whole load, naming it; nothing is
/// written here.
pub(crate) fn load(layout: &Layout) -> Result<(Store, PathBuf), PluginError> {
    let mut st = Store {
        config: read_object(&layout.file(CONFIG_FILE))?,
        ..Store::default()
    };
    let pools_file = pools_path(layout, st.config.as_ref());
    if let Some(doc) = read_object(&pools_file)? {
        load_pools(layout, &mut st, doc);
    }
    let token_files: Vec<PathBuf> = st
        .accounts()
        .filter_map(|(_, _, s)| s.token.clone())
        .collect();
    for p in token_files {
        st.load_token(&p)?;
    }
    // The original trims the file and treats an empty one as "no password".
    st.pwd = read_text(&layout.file(PWD_FILE))?
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    st.sessions = read_object(&layout.file(SESSIONS_FILE))?;
    check_member(&layout.file(SESSIONS_FILE), st.sessions.as_ref(), "tokens")?;
    st.usage = read_object(&layout.file(USAGE_FILE))?;
    st.plugins = read_object(&layout.file(PLUGINS_FILE))?;
    check_member(&layout.file(PLUGINS_FILE), st.plugins.as_ref(), "plugins")?;
    st.meta = read_object(&layout.file(META_FILE))?;
    Ok((st, pools_file))
}

/// A document's main member must be an object if present; anything else would be replaced on
/// the next write, so it is refused like a malformed file.
fn check_member(
    path: &Path,
    doc: Option<&Map<String, Value>>,
    member: &str,
) -> Result<(), PluginError> {
    match doc.and_then(|d| d.get(member)) {
        None | Some(Value::Object(_)) => Ok(()),
        Some(other) => Err(PluginError::invalid_input(format!(
            "{}: \"{member}\" must be an object, found {}",
            path.display(),
            kind_of(other)
        ))),
    }
}

fn load_pools(layout: &Layout, st: &mut Store, doc: Map<String, Value>) {
    for (t, v) in doc {
        let Value::Array(items) = v else {
            tracing::warn!(provider_type = %t, "provider_pools.json: not an array; kept as it is, not served");
            st.pools.insert(t, Top::Other(v));
            continue;
        };
        let mut pool = IndexMap::new();
        for (i, item) in items.into_iter().enumerate() {
            let Value::Object(obj) = item else {
                tracing::warn!(provider_type = %t, index = i, "provider_pools.json: an entry is not an object; kept, not served");
                pool.insert(st.opaque_key(), Entry::Opaque(item));
                continue;
            };
            let order: Arc<[String]> = obj.keys().cloned().collect();
            let token = credential_field(&t, &obj).map(|(_, v)| layout.resolve(&v));
            match split_account(&t, obj.clone()) {
                Ok(acct) if !pool.contains_key(acct.uuid.as_str()) => {
                    let slot = Slot {
                        config: acct.config.into_string(),
                        state: acct.state,
                        token,
                        order: Some(order),
                    };
                    pool.insert(acct.uuid.into_string(), Entry::Account(slot));
                }
                Ok(acct) => {
                    tracing::warn!(provider_type = %t, uuid = %acct.uuid, "provider_pools.json: duplicate uuid; the later entry is kept, not served");
                    pool.insert(st.opaque_key(), Entry::Opaque(Value::Object(obj)));
                }
                Err(e) => {
                    tracing::warn!(provider_type = %t, index = i, error = %e, "provider_pools.json: entry kept, not served");
                    pool.insert(st.opaque_key(), Entry::Opaque(Value::Object(obj)));
                }
            }
        }
        st.pools.insert(t, Top::Pool(pool));
    }
}

/// What a write pass does to one file.
pub(crate) struct Job {
    pub target: Target,
    pub path: PathBuf,
    pub body: Body,
}

/// What to mark dirty again if the job fails.
pub(crate) enum Target {
    Doc(u32),
    Token(PathBuf),
}

pub(crate) enum Body {
    Json(Value),
    Pools(Vec<(String, SnapTop)>),
    Text(String),
    Token(String),
    Delete,
}

pub(crate) enum SnapTop {
    Pool(Vec<SnapEntry>),
    Other(Value),
}

pub(crate) enum SnapEntry {
    Account(Box<Account>, Option<Arc<[String]>>),
    Opaque(Value),
}

/// Paths of the documents (the pools file may live elsewhere).
pub(crate) struct Paths {
    pub pools: PathBuf,
    pub dir: PathBuf,
}

impl Store {
    /// Takes what is dirty as a list of jobs, in the order they must run: new token files
    /// before the pools file that references them, token deletions after the pools file that
    /// stopped referencing them. Copies the contents, so rendering and I/O happen outside the
    /// lock.
    pub fn take_jobs(&mut self, paths: &Paths, now: i64) -> Vec<Job> {
        let mut writes = Vec::new();
        let mut deletes = Vec::new();
        let mut dirty_tokens: Vec<PathBuf> = self.dirty_tokens.drain().collect();
        dirty_tokens.sort();
        for p in dirty_tokens {
            match self.tokens.get(&p) {
                Some(Some(t)) => writes.push(Job {
                    target: Target::Token(p.clone()),
                    path: p,
                    body: Body::Token(t.clone()),
                }),
                _ => deletes.push(Job {
                    target: Target::Token(p.clone()),
                    path: p,
                    body: Body::Delete,
                }),
            }
        }
        let d = std::mem::take(&mut self.dirty);
        let mut jobs = writes;
        let file = |name: &str| paths.dir.join(name);
        if d & doc::POOLS != 0 {
            jobs.push(Job {
                target: Target::Doc(doc::POOLS),
                path: paths.pools.clone(),
                body: Body::Pools(self.snapshot_pools()),
            });
        }
        jobs.extend(deletes);
        let object = |m: &Option<Map<String, Value>>| m.clone().map(Value::Object);
        if d & doc::CONFIG != 0
            && let Some(v) = object(&self.config)
        {
            jobs.push(Job {
                target: Target::Doc(doc::CONFIG),
                path: file(CONFIG_FILE),
                body: Body::Json(v),
            });
        }
        if d & doc::PWD != 0
            && let Some(p) = &self.pwd
        {
            jobs.push(Job {
                target: Target::Doc(doc::PWD),
                path: file(PWD_FILE),
                body: Body::Text(p.clone()),
            });
        }
        if d & doc::SESSIONS != 0
            && let Some(s) = &mut self.sessions
        {
            // Expired sessions are pruned on every write of the file.
            session_tokens(s).retain(|_, v| session_expiry(v).is_some_and(|e| e > now));
            jobs.push(Job {
                target: Target::Doc(doc::SESSIONS),
                path: file(SESSIONS_FILE),
                body: Body::Json(Value::Object(s.clone())),
            });
        }
        if d & doc::USAGE != 0
            && let Some(v) = object(&self.usage)
        {
            jobs.push(Job {
                target: Target::Doc(doc::USAGE),
                path: file(USAGE_FILE),
                body: Body::Json(v),
            });
        }
        if d & doc::PLUGINS != 0
            && let Some(v) = object(&self.plugins)
        {
            jobs.push(Job {
                target: Target::Doc(doc::PLUGINS),
                path: file(PLUGINS_FILE),
                body: Body::Json(v),
            });
        }
        if d & doc::META != 0
            && let Some(v) = object(&self.meta)
        {
            jobs.push(Job {
                target: Target::Doc(doc::META),
                path: file(META_FILE),
                body: Body::Json(v),
            });
        }
        jobs
    }

    /// Marks a failed job's file dirty again, so the next pass retries it with the then
    /// current content.
    pub fn redirty(&mut self, target: Target) {
        match target {
            Target::Doc(bit) => self.dirty |= bit,
            Target::Token(p) => {
                self.dirty_tokens.insert(p);
            }
        }
    }

    fn snapshot_pools(&self) -> Vec<(String, SnapTop)> {
        self.pools
            .iter()
            .map(|(t, top)| {
                let snap = match top {
                    Top::Other(v) => SnapTop::Other(v.clone()),
                    Top::Pool(p) => SnapTop::Pool(
                        p.iter()
                            .map(|(u, e)| match e {
                                Entry::Account(s) => SnapEntry::Account(
                                    Box::new(Account {
                                        provider_type: t.as_str().into(),
                                        uuid: u.as_str().into(),
                                        config: s.config.as_str().into(),
                                        state: s.state.clone(),
                                    }),
                                    s.order.clone(),
                                ),
                                Entry::Opaque(v) => SnapEntry::Opaque(v.clone()),
                            })
                            .collect(),
                    ),
                };
                (t.clone(), snap)
            })
            .collect()
    }
}

/// The pools snapshot as the file's JSON: each account merged back into one flat object, in
/// its original key order where it had one. The reference [`render_pools_text`] is checked
/// against.
#[cfg(test)]
pub(crate) fn render_pools(snap: Vec<(String, SnapTop)>) -> Result<Value, String> {
    let mut top = Map::new();
    for (t, st) in snap {
        let v = match st {
            SnapTop::Other(v) => v,
            SnapTop::Pool(entries) => {
                let mut arr = Vec::with_capacity(entries.len());
                for e in entries {
                    arr.push(match e {
                        SnapEntry::Opaque(v) => v,
                        SnapEntry::Account(a, order) => {
                            let obj = merge_account(&a)
                                .map_err(|e| format!("account {} of {t}: {e}", a.uuid))?;
                            Value::Object(match order {
                                Some(o) => reorder(obj, &o),
                                None => obj,
                            })
                        }
                    });
                }
                Value::Array(arr)
            }
        };
        top.insert(t, v);
    }
    Ok(Value::Object(top))
}

/// The rendered text of one account as it stands in the pools file, with the content it was
/// rendered from: the next write pass reuses the text while config, state and key order are
/// unchanged. With large pools and moderate traffic most accounts are unchanged between passes,
/// and rendering (parse the config, merge the state, format) is most of a pass's cost.
pub(crate) struct Rendered {
    config: String,
    state: AccountState,
    order: Option<Arc<[String]>>,
    /// Pretty JSON at the depth of a pool element (continuation lines indented 4 spaces).
    text: Arc<str>,
}

/// Rendered accounts by (provider type, uuid).
pub(crate) type RenderCache = HashMap<(String, String), Rendered>;

/// Pretty JSON of `v` as it appears nested `depth` levels deep (two spaces per level), the
/// first line unindented: byte-identical to that part of `serde_json::to_vec_pretty` of the
/// whole document (a JSON string never holds a raw newline, so every newline is a line break).
fn nested_pretty(v: &Value, depth: usize) -> String {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    if depth == 0 || !text.contains('\n') {
        return text;
    }
    text.replace('\n', &format!("\n{}", "  ".repeat(depth)))
}

/// The pools file's bytes: exactly `files::pretty(&render_pools(snap))`, with each account's
/// text taken from `cache` when its config, state and key order are unchanged. The cache is left
/// holding exactly the accounts of `snap`.
pub(crate) fn render_pools_text(
    snap: Vec<(String, SnapTop)>,
    cache: &mut RenderCache,
) -> Result<Vec<u8>, String> {
    let mut next: RenderCache = HashMap::with_capacity(cache.len());
    let mut out = String::new();
    if snap.is_empty() {
        return Ok(b"{}".to_vec());
    }
    out.push('{');
    for (i, (t, st)) in snap.into_iter().enumerate() {
        out.push_str(if i == 0 { "\n  " } else { ",\n  " });
        out.push_str(&serde_json::to_string(&t).map_err(|e| e.to_string())?);
        out.push_str(": ");
        match st {
            SnapTop::Other(v) => out.push_str(&nested_pretty(&v, 1)),
            SnapTop::Pool(entries) if entries.is_empty() => out.push_str("[]"),
            SnapTop::Pool(entries) => {
                out.push('[');
                for (j, e) in entries.into_iter().enumerate() {
                    out.push_str(if j == 0 { "\n    " } else { ",\n    " });
                    match e {
                        SnapEntry::Opaque(v) => out.push_str(&nested_pretty(&v, 2)),
                        SnapEntry::Account(a, order) => {
                            let a = *a;
                            let key = (t.clone(), a.uuid.to_string());
                            let hit = cache.remove(&key).filter(|r| {
                                r.config == a.config.as_str()
                                    && r.state == a.state
                                    && r.order == order
                            });
                            let r = match hit {
                                Some(r) => r,
                                None => {
                                    let obj = merge_account(&a)
                                        .map_err(|e| format!("account {} of {t}: {e}", a.uuid))?;
                                    let obj = match &order {
                                        Some(o) => reorder(obj, o),
                                        None => obj,
                                    };
                                    Rendered {
                                        text: nested_pretty(&Value::Object(obj), 2).into(),
                                        config: a.config.to_string(),
                                        state: a.state,
                                        order,
                                    }
                                }
                            };
                            out.push_str(&r.text);
                            next.insert(key, r);
                        }
                    }
                }
                out.push_str("\n  ]");
            }
        }
    }
    out.push_str("\n}");
    *cache = next;
    Ok(out.into_bytes())
}

/// `obj` with the keys listed in `order` first, in that order, then the rest as they were.
fn reorder(obj: Map<String, Value>, order: &[String]) -> Map<String, Value> {
    // Entries in their current order, taken out as `order` names them (no shifting removals).
    let mut entries: Vec<Option<(String, Value)>> = obj.into_iter().map(Some).collect();
    let mut out = Map::with_capacity(entries.len());
    for k in order {
        if let Some(slot) = entries
            .iter_mut()
            .find(|e| e.as_ref().is_some_and(|(key, _)| key == k))
            && let Some((key, v)) = slot.take()
        {
            out.insert(key, v);
        }
    }
    out.extend(entries.into_iter().flatten());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_pools_path_follows_config_json_only_to_an_existing_file() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("configs");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let layout = Layout::new(dir.clone());
        let cfg = |v: &str| json!({"PROVIDER_POOLS_FILE_PATH": v}).as_object().cloned();
        assert_eq!(pools_path(&layout, None), dir.join(POOLS_FILE));
        assert_eq!(
            pools_path(&layout, cfg("configs/provider_pools.json").as_ref()),
            dir.join(POOLS_FILE)
        );
        assert_eq!(
            pools_path(&layout, cfg("configs/missing.json").as_ref()),
            dir.join(POOLS_FILE)
        );
        std::fs::write(dir.join("prod-pools.json"), "{}").expect("write");
        assert_eq!(
            pools_path(&layout, cfg("./configs/prod-pools.json").as_ref()),
            dir.join("prod-pools.json")
        );
    }

    #[test]
    fn a_rewrite_keeps_the_original_key_order() {
        let src = json!({"customName": "a", "uuid": "u", "isHealthy": true, "checkHealth": false,
                         "usageCount": 3, "lastUsed": null, "zz": []});
        let obj = src.as_object().cloned().unwrap_or_default();
        let order: Arc<[String]> = obj.keys().cloned().collect();
        let acct = split_account("t", obj).expect("split");
        let snap = vec![(
            "t".to_string(),
            SnapTop::Pool(vec![SnapEntry::Account(Box::new(acct), Some(order))]),
        )];
        let out = render_pools(snap).expect("render");
        let keys: Vec<&String> = out["t"][0].as_object().expect("object").keys().collect();
        assert_eq!(
            keys,
            [
                "customName",
                "uuid",
                "isHealthy",
                "checkHealth",
                "usageCount",
                "lastUsed",
                "zz"
            ]
        );
        assert_eq!(out["t"][0], src);
    }

    fn snapshot(accounts: &[(&str, Value)], extra: bool) -> Vec<(String, SnapTop)> {
        let mut pools: Vec<(String, SnapTop)> = Vec::new();
        for (t, v) in accounts {
            let obj = v.as_object().cloned().unwrap_or_default();
            let order: Arc<[String]> = obj.keys().cloned().collect();
            let acct = split_account(t, obj).expect("split");
            let entry = SnapEntry::Account(Box::new(acct), Some(order));
            match pools.iter_mut().find(|(name, _)| name == t) {
                Some((_, SnapTop::Pool(entries))) => entries.push(entry),
                _ => pools.push((t.to_string(), SnapTop::Pool(vec![entry]))),
            }
        }
        if extra {
            pools.push(("empty-pool".into(), SnapTop::Pool(Vec::new())));
            pools.push((
                "note \"quoted\" ✓".into(),
                SnapTop::Other(json!({"a": [1, {"b": {}}, []], "s": "line\nbreak ✓"})),
            ));
            if let Some((_, SnapTop::Pool(entries))) = pools.first_mut() {
                entries.push(SnapEntry::Opaque(
                    json!({"no": "uuid", "nested": {"x": [1, 2]}}),
                ));
                entries.push(SnapEntry::Opaque(json!("just a string")));
            }
        }
        pools
    }

    #[test]
    fn the_text_renderer_writes_exactly_what_the_value_renderer_would() {
        let accounts = [
            (
                "openai-custom",
                json!({"uuid": "a", "OPENAI_API_KEY": "k", "usageCount": 3, "isHealthy": true, "lastUsed": "2026-01-01T00:00:00.000Z", "deep": {"list": [1, {"y": null}], "empty": {}}}),
            ),
            (
                "openai-custom",
                json!({"customName": "b ✓ \"q\"", "uuid": "b", "errorCount": 0, "lastErrorMessage": "multi\nline"}),
            ),
            (
                "gemini-cli-oauth",
                json!({"uuid": "c", "GEMINI_OAUTH_CREDS_FILE_PATH": "./configs/gemini/c.json", "notSupportedModels": []}),
            ),
        ];
        for extra in [false, true] {
            let want =
                crate::files::pretty(&render_pools(snapshot(&accounts, extra)).expect("render"));
            let mut cache = RenderCache::new();
            let got = render_pools_text(snapshot(&accounts, extra), &mut cache).expect("text");
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want)
            );
            assert_eq!(cache.len(), 3, "every account is cached");
            // A second pass from the cache is byte-identical too.
            let again = render_pools_text(snapshot(&accounts, extra), &mut cache).expect("text");
            assert_eq!(again, want);
        }
        assert_eq!(
            render_pools_text(Vec::new(), &mut RenderCache::new()).expect("empty"),
            b"{}"
        );
    }

    #[test]
    fn a_changed_account_is_rendered_again_and_a_removed_one_leaves_the_cache() {
        let mut accounts = vec![
            ("t", json!({"uuid": "a", "usageCount": 1})),
            ("t", json!({"uuid": "b", "usageCount": 1})),
        ];
        let mut cache = RenderCache::new();
        render_pools_text(snapshot(&accounts, false), &mut cache).expect("text");
        let before = cache[&("t".to_string(), "b".to_string())].text.clone();
        accounts[0].1["usageCount"] = json!(2);
        let out = render_pools_text(snapshot(&accounts, false), &mut cache).expect("text");
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("\"usageCount\": 2"), "{text}");
        let after = cache[&("t".to_string(), "b".to_string())].text.clone();
        assert!(
            Arc::ptr_eq(&before, &after),
            "the unchanged account's text was reused"
        );
        accounts.pop();
        render_pools_text(snapshot(&accounts, false), &mut cache).expect("text");
        assert_eq!(cache.len(), 1);
    }
}
