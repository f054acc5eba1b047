//! The plan (what each source item means for the target) and the commit (the writes).
//!
//! [`plan`] is pure: it compares two [`Snapshot`]s and decides per item. [`commit`] runs the
//! planned writes in a fixed order. What was planned for each item is also what verification
//! later expects to read back ([`Expect`]).

use std::collections::HashSet;
use std::path::Path;

use aiclient_sdk::account::{STATE_FIELDS, merge_patch};
use aiclient_sdk::storage::{Account, AccountState, PluginState, Session};
use aiclient_sdk::{ErrorCode, PluginError};
use futures_util::stream::{self, StreamExt};
use serde_json::{Map, Value};

use super::paths::{self, CredRef, Layout, Placed};
use super::report::Progress;
use super::snapshot::{Acct, CONCURRENCY, Snapshot, object};
use crate::admin::auth::{hash_password, token_hash, verify_password};
use crate::storage::Storage;

/// What kind of thing an item is (the rows of the summary).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cat {
    Types,
    Accounts,
    Tokens,
    Config,
    Password,
    Sessions,
    Usage,
    Plugins,
}

impl Cat {
    pub const ALL: [Cat; 8] = [
        Cat::Types,
        Cat::Accounts,
        Cat::Tokens,
        Cat::Config,
        Cat::Password,
        Cat::Sessions,
        Cat::Usage,
        Cat::Plugins,
    ];

    /// Plural, for the summary.
    pub fn label(self) -> &'static str {
        match self {
            Cat::Types => "provider types",
            Cat::Accounts => "accounts",
            Cat::Tokens => "tokens",
            Cat::Config => "config",
            Cat::Password => "password",
            Cat::Sessions => "sessions",
            Cat::Usage => "usage cache",
            Cat::Plugins => "plugins",
        }
    }

    /// Singular, for item lines.
    pub fn noun(self) -> &'static str {
        match self {
            Cat::Types => "provider type",
            Cat::Accounts => "account",
            Cat::Tokens => "token",
            Cat::Config => "config",
            Cat::Password => "password",
            Cat::Sessions => "session",
            Cat::Usage => "usage cache",
            Cat::Plugins => "plugin",
        }
    }
}

/// What happens to an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Missing in the target: written.
    Create,
    /// Differs, `--force`: overwritten.
    Update,
    /// Equal in the target: nothing to do.
    Unchanged,
    /// Differs, no `--force`: the target's version stays.
    Keep,
    /// Cannot be carried (not a failure).
    Skip,
    /// Could not be migrated.
    Fail,
}

/// The admin password to store: a hash as it is, or a legacy plaintext to hash. Never printed.
#[derive(Clone)]
pub enum Password {
    Hash(String),
    Plain(String),
}

/// One write.
pub enum Op {
    SetConfig(String),
    AddAccount(Account),
    PatchAccount {
        t: String,
        u: String,
        patch: Value,
    },
    /// `--force` with a config change a merge patch cannot express (a value set to `null`):
    /// delete, add again with the target's live state, put the token back.
    ReplaceAccount {
        account: Account,
        token: Option<String>,
    },
    SetToken {
        t: String,
        u: String,
        json: String,
    },
    SetPassword(Password),
    CreateSession(Session),
    SetUsage(String),
    SetPlugin(PluginState),
}

/// What verification expects to read back for an item.
pub enum Expect {
    Config(Map<String, Value>),
    Account {
        t: String,
        u: String,
        config: Map<String, Value>,
        /// For new accounts; an existing account's state is live and not compared.
        state: Option<AccountState>,
    },
    Token {
        t: String,
        u: String,
        value: Value,
    },
    Password(Password),
    Session {
        key: String,
        data: Map<String, Value>,
        expires_at: i64,
    },
    Usage(Map<String, Value>),
    Plugin {
        name: String,
        enabled: bool,
        extra: Value,
    },
}

/// One line of the plan.
pub struct Item {
    pub cat: Cat,
    pub name: String,
    pub outcome: Outcome,
    pub note: Option<String>,
    pub op: Option<Op>,
    pub expect: Option<Expect>,
}

impl Item {
    pub fn new(cat: Cat, name: impl Into<String>, outcome: Outcome, note: Option<String>) -> Self {
        Self {
            cat,
            name: name.into(),
            outcome,
            note,
            op: None,
            expect: None,
        }
    }

    fn with(mut self, op: Option<Op>, expect: Option<Expect>) -> Self {
        self.op = op;
        self.expect = expect;
        self
    }

    fn fail(&mut self, why: String) {
        self.outcome = Outcome::Fail;
        self.note = Some(why);
        self.expect = None;
    }
}

/// What the plan needs besides the two snapshots.
pub struct Ctx<'a> {
    pub force: bool,
    pub allow_missing_tokens: bool,
    /// The source's session keys are raw bearer tokens: store them under their hash.
    pub hash_session_keys: bool,
    /// The target is a file backend on this dir: token references must stay inside it.
    pub file_target: Option<&'a Layout>,
    /// The source is a file backend on this dir (to name missing token files).
    pub source_file_dir: Option<&'a Path>,
}

/// JSON pointers at which `a` and `b` differ (at most `limit`), for messages that must not
/// show values (configs hold API keys, tokens are secrets).
pub fn diff_paths(a: &Value, b: &Value, limit: usize) -> Vec<String> {
    fn esc(k: &str) -> String {
        k.replace('~', "~0").replace('/', "~1")
    }
    fn walk(a: &Value, b: &Value, path: &str, out: &mut Vec<String>, limit: usize) {
        if out.len() >= limit || a == b {
            return;
        }
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                    let p = format!("{path}/{}", esc(k));
                    match (x.get(k), y.get(k)) {
                        (Some(v), Some(w)) => walk(v, w, &p, out, limit),
                        _ => out.push(p),
                    }
                    if out.len() >= limit {
                        return;
                    }
                }
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                for (i, (v, w)) in x.iter().zip(y).enumerate() {
                    walk(v, w, &format!("{path}/{i}"), out, limit);
                }
            }
            _ => out.push(if path.is_empty() {
                "/".into()
            } else {
                path.into()
            }),
        }
    }
    let mut out = Vec::new();
    walk(a, b, "", &mut out, limit);
    out
}

/// "differs at /a, /b (and more)", naming keys only.
pub fn differs(a: &Map<String, Value>, b: &Map<String, Value>) -> String {
    let (a, b) = (Value::Object(a.clone()), Value::Object(b.clone()));
    let mut p = diff_paths(&a, &b, 6);
    let more = p.len() > 5;
    p.truncate(5);
    format!(
        "differs at {}{}",
        p.join(", "),
        if more { " and more" } else { "" }
    )
}

const KEEP: &str = "the target's version is kept (--force overwrites it)";

/// A whole-document item (config, usage cache).
fn document(
    cat: Cat,
    name: &str,
    want: &Map<String, Value>,
    have: Option<&Map<String, Value>>,
    force: bool,
    op: fn(String) -> Op,
    expect: fn(Map<String, Value>) -> Expect,
) -> Item {
    let text = Value::Object(want.clone()).to_string();
    match have {
        None => Item::new(cat, name, Outcome::Create, None)
            .with(Some(op(text)), Some(expect(want.clone()))),
        Some(h) if h == want => {
            Item::new(cat, name, Outcome::Unchanged, None).with(None, Some(expect(want.clone())))
        }
        Some(h) if force => Item::new(cat, name, Outcome::Update, Some(differs(h, want)))
            .with(Some(op(text)), Some(expect(want.clone()))),
        Some(h) => Item::new(
            cat,
            name,
            Outcome::Keep,
            Some(format!("{}; {KEEP}", differs(h, want))),
        ),
    }
}

/// A merge patch turning `from` into `to`, if one can (a patch cannot set `null`, and may not
/// touch state fields or the uuid).
pub fn patch_for(from: &Map<String, Value>, to: &Map<String, Value>) -> Option<Value> {
    fn diff(from: &Map<String, Value>, to: &Map<String, Value>) -> Map<String, Value> {
        let mut p = Map::new();
        for k in from.keys().filter(|k| !to.contains_key(*k)) {
            p.insert(k.clone(), Value::Null);
        }
        for (k, v) in to {
            match (from.get(k), v) {
                (Some(old), _) if old == v => {}
                (Some(Value::Object(o)), Value::Object(n)) => {
                    p.insert(k.clone(), Value::Object(diff(o, n)));
                }
                _ => {
                    p.insert(k.clone(), v.clone());
                }
            }
        }
        p
    }
    let p = diff(from, to);
    if p.contains_key("uuid") || STATE_FIELDS.iter().any(|(n, _)| p.contains_key(*n)) {
        return None;
    }
    let patch = Value::Object(p);
    let mut t = Value::Object(from.clone());
    merge_patch(&mut t, &patch);
    (t == Value::Object(to.clone())).then_some(patch)
}

/// A session's data as backends return it: the object with `expiryTime` = the enforced expiry
/// (what the file backend stores, and what the host writes anyway).
pub fn session_data(data: &str, expires_at: i64) -> Map<String, Value> {
    let mut m = object("session data", data).unwrap_or_default();
    m.insert("expiryTime".into(), Value::from(expires_at));
    m
}

/// The file backend keeps top-level usage-cache keys other than these when the document is
/// replaced without them.
const USAGE_KNOWN_KEYS: [&str; 2] = ["timestamp", "providers"];

/// Decides every source item. Items come out in display order: provider types, config,
/// accounts (source order), tokens, password, sessions, usage cache, plugins.
pub fn plan(src: &Snapshot, dst: &Snapshot, ctx: &Ctx) -> Vec<Item> {
    let mut items = Vec::new();
    let dst_types: HashSet<String> = dst.types().into_iter().collect();
    for t in src.types() {
        let o = if dst_types.contains(&t) {
            Outcome::Unchanged
        } else {
            Outcome::Create
        };
        items.push(Item::new(Cat::Types, t, o, None));
    }
    if let Some(c) = &src.config {
        items.push(document(
            Cat::Config,
            "config.json",
            c,
            dst.config.as_ref(),
            ctx.force,
            Op::SetConfig,
            Expect::Config,
        ));
    }
    let mut placed = Placed::new();
    let mut tokens = Vec::new();
    for a in &src.accounts {
        let (acct, tok) = plan_account(a, src, dst, ctx, &mut placed);
        items.push(acct);
        tokens.extend(tok);
    }
    items.extend(tokens);
    if let Some(p) = &src.password {
        items.push(plan_password(p, dst.password.as_deref(), ctx.force));
    }
    for s in &src.sessions {
        items.push(plan_session(s, dst, ctx));
    }
    if let Some(u) = &src.usage {
        let mut want = u.clone();
        if ctx.file_target.is_some()
            && let Some(h) = &dst.usage
        {
            for (k, v) in h {
                if !USAGE_KNOWN_KEYS.contains(&k.as_str()) && !want.contains_key(k) {
                    want.insert(k.clone(), v.clone());
                }
            }
        }
        items.push(document(
            Cat::Usage,
            "usage-cache.json",
            &want,
            dst.usage.as_ref(),
            ctx.force,
            Op::SetUsage,
            Expect::Usage,
        ));
    }
    for p in &src.plugins {
        items.push(plan_plugin(p, dst, ctx.force));
    }
    items
}

fn join(notes: Vec<String>) -> Option<String> {
    (!notes.is_empty()).then(|| notes.join("; "))
}

fn plan_account(
    a: &Acct,
    src: &Snapshot,
    dst: &Snapshot,
    ctx: &Ctx,
    placed: &mut Placed,
) -> (Item, Option<Item>) {
    let (t, u) = (a.t(), a.u());
    let name = format!("{t}/{u}");
    let src_token = src.token(t, u);
    let mut cfg = a.config.clone();
    let mut notes = Vec::new();
    if let Some(layout) = ctx.file_target {
        if !cfg.contains_key("uuid") {
            cfg.shift_insert(0, "uuid".into(), Value::from(u));
        }
        if src_token.is_some()
            && let Some(n) = paths::place(layout, t, u, &mut cfg, placed)
        {
            notes.push(n);
        }
    }
    let text = Value::Object(cfg.clone()).to_string();
    let existing = dst.account(t, u);
    let dst_token = existing.and_then(|_| dst.token(t, u));

    let mut tok = match src_token {
        Some(tok) => {
            let expect = Expect::Token {
                t: t.into(),
                u: u.into(),
                value: tok.value.clone(),
            };
            let set = Op::SetToken {
                t: t.into(),
                u: u.into(),
                json: tok.text.clone(),
            };
            Some(match dst_token {
                None => Item::new(Cat::Tokens, &name, Outcome::Create, None)
                    .with(Some(set), Some(expect)),
                Some(h) if h.value == tok.value => {
                    Item::new(Cat::Tokens, &name, Outcome::Unchanged, None).with(None, Some(expect))
                }
                Some(_) if ctx.force => Item::new(
                    Cat::Tokens,
                    &name,
                    Outcome::Update,
                    Some("differs; replaced by the source's".into()),
                )
                .with(Some(set), Some(expect)),
                Some(_) => Item::new(
                    Cat::Tokens,
                    &name,
                    Outcome::Keep,
                    Some(format!("differs (refreshed since?); {KEEP}")),
                ),
            })
        }
        None => missing_token(a, &name, dst_token.is_some(), ctx),
    };

    let acct = match existing {
        None => Item::new(Cat::Accounts, &name, Outcome::Create, join(notes)).with(
            Some(Op::AddAccount(Account {
                provider_type: t.into(),
                uuid: u.into(),
                config: text.into(),
                state: a.account.state.clone(),
            })),
            Some(Expect::Account {
                t: t.into(),
                u: u.into(),
                config: cfg,
                state: Some(a.account.state.clone()),
            }),
        ),
        Some(d) => {
            if d.account.state != a.account.state {
                notes.push("the target's live state is kept".into());
            }
            let expect = Expect::Account {
                t: t.into(),
                u: u.into(),
                config: cfg.clone(),
                state: None,
            };
            if d.config == cfg {
                Item::new(Cat::Accounts, &name, Outcome::Unchanged, join(notes))
                    .with(None, Some(expect))
            } else if ctx.force {
                notes.insert(0, differs(&d.config, &cfg));
                let op = match patch_for(&d.config, &cfg) {
                    Some(patch) => Op::PatchAccount {
                        t: t.into(),
                        u: u.into(),
                        patch,
                    },
                    None => {
                        notes.push(
                            "replaced (removed and added again, so it moves to the end of its pool)"
                                .into(),
                        );
                        // The replacement writes the token itself.
                        let token = match tok.as_mut() {
                            Some(ti) if src_token.is_some() => {
                                ti.op = None;
                                src_token.map(|t| t.text.clone())
                            }
                            _ => dst_token.map(|t| t.text.clone()),
                        };
                        Op::ReplaceAccount {
                            account: Account {
                                provider_type: t.into(),
                                uuid: u.into(),
                                config: text.into(),
                                state: d.account.state.clone(),
                            },
                            token,
                        }
                    }
                };
                Item::new(Cat::Accounts, &name, Outcome::Update, join(notes))
                    .with(Some(op), Some(expect))
            } else {
                notes.insert(0, format!("{}; {KEEP}", differs(&d.config, &cfg)));
                Item::new(Cat::Accounts, &name, Outcome::Keep, join(notes))
            }
        }
    };
    (acct, tok)
}

/// An account that references a credential file the source has no token for.
fn missing_token(a: &Acct, name: &str, target_has_one: bool, ctx: &Ctx) -> Option<Item> {
    let what = match paths::credential_ref(a.t(), &a.config)? {
        CredRef::File(field, v) => {
            let shown = match ctx.source_file_dir {
                Some(d) => Layout::new(d.to_path_buf())
                    .resolve(&v)
                    .display()
                    .to_string(),
                None => v,
            };
            format!("token file {shown} ({field}) is missing")
        }
        CredRef::Pseudo(field, _) => {
            format!("{field} holds a Redis pseudo-path (redis:…): there is no token file to read")
        }
    };
    Some(if target_has_one {
        Item::new(
            Cat::Tokens,
            name,
            Outcome::Keep,
            Some(format!("{what}; the target's token is kept")),
        )
    } else if ctx.allow_missing_tokens {
        Item::new(
            Cat::Tokens,
            name,
            Outcome::Skip,
            Some(format!("{what}; the account is migrated without a token")),
        )
    } else {
        Item::new(
            Cat::Tokens,
            name,
            Outcome::Fail,
            Some(format!(
                "{what}; the account is migrated without a token (--allow-missing-tokens accepts this)"
            )),
        )
    })
}

fn plan_password(p: &str, have: Option<&str>, force: bool) -> Item {
    let plain = !p.starts_with("pbkdf2:");
    let pw = || {
        if plain {
            Password::Plain(p.to_string())
        } else {
            Password::Hash(p.to_string())
        }
    };
    let name = "admin password";
    let hashed = plain.then(|| "a legacy plaintext password, stored as a PBKDF2 hash".to_string());
    let set = |o: Outcome, note: Option<String>| {
        Item::new(Cat::Password, name, o, note)
            .with(Some(Op::SetPassword(pw())), Some(Expect::Password(pw())))
    };
    match have {
        None => set(Outcome::Create, hashed),
        Some(d) => {
            let same = if plain { verify_password(p, d) } else { d == p };
            let d_plain = !d.starts_with("pbkdf2:");
            if same && !d_plain {
                // Verified against the source once; read back, it must be this very hash.
                Item::new(Cat::Password, name, Outcome::Unchanged, None)
                    .with(None, Some(Expect::Password(Password::Hash(d.to_string()))))
            } else if same {
                set(
                    Outcome::Update,
                    Some("the target's plaintext password is replaced by its hash".into()),
                )
            } else if force {
                set(Outcome::Update, Some("differs; replaced".into()))
            } else {
                Item::new(
                    Cat::Password,
                    name,
                    Outcome::Keep,
                    Some(format!("differs; {KEEP}")),
                )
            }
        }
    }
}

fn plan_session(s: &Session, dst: &Snapshot, ctx: &Ctx) -> Item {
    let key = if ctx.hash_session_keys {
        token_hash(&s.token_hash)
    } else {
        s.token_hash.to_string()
    };
    let data = session_data(&s.data, s.expires_at);
    let user = data
        .get("username")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string();
    // A prefix of the stored key (a hash): enough to tell sessions apart, useless as a login.
    let name = format!("{}… of {user}", key.chars().take(8).collect::<String>());
    let session = Session {
        token_hash: key.clone().into(),
        data: Value::Object(data.clone()).to_string().into(),
        expires_at: s.expires_at,
    };
    let note = ctx
        .hash_session_keys
        .then(|| "re-keyed by the token's SHA-256".to_string());
    let expect = Expect::Session {
        key: key.clone(),
        data: data.clone(),
        expires_at: s.expires_at,
    };
    match dst.session(&key) {
        None => Item::new(Cat::Sessions, name, Outcome::Create, note)
            .with(Some(Op::CreateSession(session)), Some(expect)),
        Some(d) if session_data(&d.data, d.expires_at) == data && d.expires_at == s.expires_at => {
            Item::new(Cat::Sessions, name, Outcome::Unchanged, None).with(None, Some(expect))
        }
        Some(_) if ctx.force => Item::new(
            Cat::Sessions,
            name,
            Outcome::Update,
            Some("differs; replaced".into()),
        )
        .with(Some(Op::CreateSession(session)), Some(expect)),
        Some(_) => Item::new(
            Cat::Sessions,
            name,
            Outcome::Keep,
            Some(format!("differs; {KEEP}")),
        ),
    }
}

fn plan_plugin(p: &PluginState, dst: &Snapshot, force: bool) -> Item {
    let extra = Value::Object(object("plugin entry", &p.extra).unwrap_or_default());
    let name = p.name.to_string();
    let expect = Expect::Plugin {
        name: name.clone(),
        enabled: p.enabled,
        extra: extra.clone(),
    };
    let state = if p.enabled { "enabled" } else { "disabled" };
    match dst.plugin(&name) {
        None => Item::new(Cat::Plugins, name, Outcome::Create, Some(state.into()))
            .with(Some(Op::SetPlugin(p.clone())), Some(expect)),
        Some(d)
            if d.enabled == p.enabled
                && serde_json::from_str::<Value>(&d.extra).ok() == Some(extra.clone()) =>
        {
            Item::new(Cat::Plugins, name, Outcome::Unchanged, None).with(None, Some(expect))
        }
        Some(_) if force => Item::new(
            Cat::Plugins,
            name,
            Outcome::Update,
            Some(format!("differs; replaced ({state})")),
        )
        .with(Some(Op::SetPlugin(p.clone())), Some(expect)),
        Some(_) => Item::new(
            Cat::Plugins,
            name,
            Outcome::Keep,
            Some(format!("differs; {KEEP}")),
        ),
    }
}

/// Items the target holds and the source does not (left as they are).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TargetOnly {
    pub accounts: usize,
    pub plugins: usize,
}

pub fn target_only(src: &Snapshot, dst: &Snapshot) -> TargetOnly {
    TargetOnly {
        accounts: dst
            .accounts
            .iter()
            .filter(|a| src.account(a.t(), a.u()).is_none())
            .count(),
        plugins: dst
            .plugins
            .iter()
            .filter(|p| src.plugin(&p.name).is_none())
            .count(),
    }
}

/// The order writes run in: config, accounts, tokens (after their accounts), password,
/// sessions, usage cache, plugin states.
fn phase(op: &Op) -> u8 {
    match op {
        Op::SetConfig(_) => 0,
        Op::AddAccount(_) | Op::PatchAccount { .. } | Op::ReplaceAccount { .. } => 1,
        Op::SetToken { .. } => 2,
        Op::SetPassword(_) => 3,
        Op::CreateSession(_) => 4,
        Op::SetUsage(_) => 5,
        Op::SetPlugin(_) => 6,
    }
}

/// Writes whose order does not matter run concurrently; accounts run one by one so each pool
/// keeps the source's order.
fn concurrent(phase: u8) -> bool {
    matches!(phase, 2 | 4)
}

/// Errors that mean the target itself is gone: stop instead of failing every item.
fn fatal(e: &PluginError) -> bool {
    matches!(
        e.code,
        ErrorCode::UNAVAILABLE
            | ErrorCode::TIMEOUT
            | ErrorCode::UNAUTHORIZED
            | ErrorCode::RESOURCE_EXHAUSTED
    )
}

/// Runs one write. A password hashed here is returned: verification then expects exactly
/// that hash (one PBKDF2 derivation per run is enough).
async fn run(target: &Storage, op: Op) -> Result<Option<Expect>, PluginError> {
    if let Op::SetPassword(Password::Plain(p)) = op {
        let h = tokio::task::spawn_blocking(move || hash_password(&p))
            .await
            .map_err(|e| PluginError::internal(format!("hashing the password: {e}")))?;
        target.set_password_hash(&h).await?;
        return Ok(Some(Expect::Password(Password::Hash(h))));
    }
    run_plain(target, op).await.map(|()| None)
}

async fn run_plain(target: &Storage, op: Op) -> Result<(), PluginError> {
    match op {
        Op::SetConfig(t) => target.set_config(&t).await,
        Op::AddAccount(a) => target.add_account(a).await,
        Op::PatchAccount { t, u, patch } => target.update_account(&t, &u, &patch).await.map(|_| ()),
        Op::ReplaceAccount { account, token } => {
            let (t, u) = (account.provider_type.to_string(), account.uuid.to_string());
            target.delete_account(&t, &u).await?;
            target.add_account(account).await?;
            match token {
                Some(j) => target.set_token(&t, &u, &j).await,
                None => Ok(()),
            }
        }
        Op::SetToken { t, u, json } => target.set_token(&t, &u, &json).await,
        Op::SetPassword(Password::Hash(h) | Password::Plain(h)) => {
            // (A plaintext never gets here: `run` hashes it.)
            target.set_password_hash(&h).await
        }
        Op::CreateSession(s) => target.create_session(s).await,
        Op::SetUsage(t) => target.set_usage_cache(&t).await,
        Op::SetPlugin(p) => target.set_plugin_state(p).await,
    }
}

/// Runs every planned write. A failed write fails its item; a target that is gone (down,
/// refusing credentials, out of memory) stops the commit and the rest fail as not written.
/// Returns why it stopped, if it did.
pub async fn commit(target: &Storage, items: &mut [Item], bar: &Progress) -> Option<String> {
    let mut ops: Vec<(usize, Op)> = items
        .iter_mut()
        .enumerate()
        .filter_map(|(i, it)| it.op.take().map(|op| (i, op)))
        .collect();
    ops.sort_by_key(|(_, op)| phase(op));
    bar.set_len(ops.len() as u64);
    let mut stopped: Option<String> = None;
    let mut queue = ops.into_iter().peekable();
    while let Some(first) = queue.next() {
        let ph = phase(&first.1);
        let mut group = vec![first];
        while let Some(next) = queue.next_if(|(_, op)| phase(op) == ph) {
            group.push(next);
        }
        let mut results: Vec<(usize, Result<Option<Expect>, String>)> =
            Vec::with_capacity(group.len());
        if concurrent(ph) && stopped.is_none() {
            let done: Vec<(usize, Result<Option<Expect>, PluginError>)> = stream::iter(group)
                .map(|(i, op)| async move { (i, run(target, op).await) })
                .buffer_unordered(CONCURRENCY)
                .inspect(|_| bar.inc(1))
                .collect()
                .await;
            for (i, r) in done {
                if let Err(e) = &r
                    && fatal(e)
                    && stopped.is_none()
                {
                    stopped = Some(format!("the target failed: {e}"));
                }
                results.push((i, r.map_err(|e| format!("write failed: {e}"))));
            }
        } else {
            for (i, op) in group {
                if let Some(why) = &stopped {
                    results.push((i, Err(format!("not written: {why}"))));
                    continue;
                }
                let r = run(target, op).await;
                bar.inc(1);
                if let Err(e) = &r
                    && fatal(e)
                {
                    stopped = Some(format!("the target failed: {e}"));
                }
                results.push((i, r.map_err(|e| format!("write failed: {e}"))));
            }
        }
        for (i, r) in results {
            match r {
                Err(why) => items[i].fail(why),
                Ok(Some(expect)) => items[i].expect = Some(expect),
                Ok(None) => {}
            }
        }
    }
    stopped
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi_stable::std_types::RString;
    use serde_json::json;

    fn acct(t: &str, u: &str, cfg: Value, usage: i64) -> Account {
        Account {
            provider_type: t.into(),
            uuid: u.into(),
            config: cfg.to_string().into(),
            state: AccountState {
                usage_count: usage,
                ..AccountState::default()
            },
        }
    }

    fn ctx() -> Ctx<'static> {
        Ctx {
            force: false,
            allow_missing_tokens: false,
            hash_session_keys: false,
            file_target: None,
            source_file_dir: None,
        }
    }

    fn source() -> Snapshot {
        let mut s = Snapshot::default();
        s.config = json!({"REQUIRED_API_KEY": "k", "x": [1]})
            .as_object()
            .cloned();
        s.push_account(acct(
            "openai-qwen-oauth",
            "q1",
            json!({"uuid": "q1", "QWEN_OAUTH_CREDS_FILE_PATH": "./configs/qwen/q1.json", "customName": null}),
            5,
        ))
        .unwrap();
        s.push_account(acct(
            "openai-qwen-oauth",
            "q2",
            json!({"uuid": "q2", "QWEN_OAUTH_CREDS_FILE_PATH": "./configs/qwen/q2.json"}),
            0,
        ))
        .unwrap();
        s.tokens.insert(
            ("openai-qwen-oauth".into(), "q1".into()),
            super::super::snapshot::Token {
                text: r#"{"refresh_token":"r1"}"#.into(),
                value: json!({"refresh_token": "r1"}),
            },
        );
        s.password = Some("legacy-plain".into());
        s.sessions.push(Session {
            token_hash: "raw-token".into(),
            data: json!({"username": "admin", "expiryTime": 4102444800000i64})
                .to_string()
                .into(),
            expires_at: 4102444800000,
        });
        s
    }

    fn outcomes(items: &[Item], cat: Cat) -> Vec<Outcome> {
        items
            .iter()
            .filter(|i| i.cat == cat)
            .map(|i| i.outcome)
            .collect()
    }

    #[test]
    fn everything_is_created_in_an_empty_target_and_a_missing_token_fails() {
        let items = plan(&source(), &Snapshot::default(), &ctx());
        assert_eq!(outcomes(&items, Cat::Accounts), [Outcome::Create; 2]);
        assert_eq!(
            outcomes(&items, Cat::Tokens),
            [Outcome::Create, Outcome::Fail]
        );
        let fail = items.iter().find(|i| i.outcome == Outcome::Fail).unwrap();
        assert!(fail.name.ends_with("/q2"), "{}", fail.name);
        assert!(
            fail.note
                .as_deref()
                .unwrap()
                .contains("./configs/qwen/q2.json"),
            "{:?}",
            fail.note
        );
        let allowed = Ctx {
            allow_missing_tokens: true,
            ..ctx()
        };
        let items = plan(&source(), &Snapshot::default(), &allowed);
        assert_eq!(
            outcomes(&items, Cat::Tokens),
            [Outcome::Create, Outcome::Skip]
        );
        assert_eq!(outcomes(&items, Cat::Password), [Outcome::Create]);
    }

    #[test]
    fn an_equal_target_is_unchanged_and_live_state_is_never_overwritten() {
        let src = source();
        // The target has counted requests since, and its config was edited.
        let mut dst = Snapshot::default();
        dst.config = src.config.clone();
        dst.push_account(acct(
            "openai-qwen-oauth",
            "q1",
            json!({"uuid": "q1", "QWEN_OAUTH_CREDS_FILE_PATH": "./configs/qwen/q1.json", "customName": "renamed"}),
            99,
        ))
        .unwrap();
        dst.tokens = source().tokens;
        dst.password = Some(hash_password("legacy-plain"));
        let items = plan(&src, &dst, &ctx());
        assert_eq!(outcomes(&items, Cat::Config), [Outcome::Unchanged]);
        assert_eq!(
            outcomes(&items, Cat::Accounts),
            [Outcome::Keep, Outcome::Create]
        );
        assert_eq!(outcomes(&items, Cat::Password), [Outcome::Unchanged]);
        let kept = &items
            .iter()
            .find(|i| i.cat == Cat::Accounts && i.outcome == Outcome::Keep)
            .unwrap();
        assert!(kept.op.is_none());
        let note = kept.note.as_deref().unwrap();
        assert!(note.contains("/customName"), "{note}");
        assert!(!note.contains("renamed"), "values are never shown: {note}");

        let forced = Ctx {
            force: true,
            ..ctx()
        };
        let items = plan(&src, &dst, &forced);
        let upd = items
            .iter()
            .find(|i| i.cat == Cat::Accounts && i.outcome == Outcome::Update)
            .unwrap();
        // `customName: null` cannot be set by a merge patch: the account is replaced, with the
        // target's live state.
        match &upd.op {
            Some(Op::ReplaceAccount { account, token }) => {
                assert_eq!(
                    account.state.usage_count, 99,
                    "live counters survive --force"
                );
                assert!(token.is_some(), "the token is put back");
            }
            _ => panic!("expected a replacement"),
        }
        let tok = items
            .iter()
            .find(|i| i.cat == Cat::Tokens && i.name.ends_with("/q1"))
            .unwrap();
        assert!(tok.op.is_none(), "the replacement writes the token");
    }

    #[test]
    fn sessions_are_rekeyed_when_the_source_holds_raw_tokens() {
        let c = Ctx {
            hash_session_keys: true,
            ..ctx()
        };
        let items = plan(&source(), &Snapshot::default(), &c);
        let s = items.iter().find(|i| i.cat == Cat::Sessions).unwrap();
        match &s.op {
            Some(Op::CreateSession(sess)) => {
                assert_eq!(sess.token_hash, RString::from(token_hash("raw-token")))
            }
            _ => panic!("a session is created"),
        }
        assert!(!s.name.contains("raw-token"));
    }

    #[test]
    fn merge_patches_are_used_only_when_exact() {
        let from = json!({"a": 1, "b": {"c": 1, "d": 2}, "gone": true});
        let to = json!({"a": 2, "b": {"c": 1}, "new": []});
        let p = patch_for(from.as_object().unwrap(), to.as_object().unwrap()).unwrap();
        assert_eq!(
            p,
            json!({"gone": null, "a": 2, "b": {"d": null}, "new": []})
        );
        let to_null = json!({"a": null});
        assert_eq!(
            patch_for(
                json!({"a": 1}).as_object().unwrap(),
                to_null.as_object().unwrap()
            ),
            None
        );
        assert_eq!(
            patch_for(
                json!({"lastUsed": "x"}).as_object().unwrap(),
                json!({"lastUsed": "y"}).as_object().unwrap()
            ),
            None,
            "state field names go through update_state only"
        );
    }

    #[test]
    fn diff_paths_name_keys_not_values() {
        let a = json!({"k": "secret-1", "n": {"x": [1, 2]}, "same": 1});
        let b = json!({"k": "secret-2", "n": {"x": [1, 3]}, "same": 1, "a/b": 0});
        assert_eq!(diff_paths(&a, &b, 10), ["/k", "/n/x/1", "/a~1b"]);
    }
}
