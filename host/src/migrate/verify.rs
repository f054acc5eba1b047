//! Reading the target back after a commit and comparing it, item by item, with what the plan
//! expected. Mismatches name the item and the differing keys, never values.

use aiclient_sdk::account::{merge_account, now_ms};
use aiclient_sdk::storage::{Account, AccountState};
use serde_json::{Map, Value};

use super::copy::{Cat, Expect, Item, Outcome, Password, diff_paths, differs, session_data};
use super::report::Progress;
use super::snapshot::{self, Key, Snapshot, Tokens};
use crate::admin::auth::verify_password;
use crate::storage::Storage;

/// One item whose stored content is not what was migrated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub cat: Cat,
    pub name: String,
    pub what: String,
}

/// Reads `target` and checks every item that should now be there.
pub async fn verify(
    target: &Storage,
    items: &[Item],
    bar: &Progress,
) -> Result<(usize, Vec<Mismatch>), String> {
    let keys: Vec<Key> = items
        .iter()
        .filter(|i| checkable(i))
        .filter_map(|i| match &i.expect {
            Some(Expect::Token { t, u, .. }) => Some((t.clone(), u.clone())),
            _ => None,
        })
        .collect();
    let snap = snapshot::read(target, "target", Tokens::Of(&keys), bar).await?;
    Ok(check(items, &snap))
}

fn checkable(i: &Item) -> bool {
    matches!(
        i.outcome,
        Outcome::Create | Outcome::Update | Outcome::Unchanged
    ) && i.expect.is_some()
}

/// The state fields as JSON, for naming the ones that differ.
fn state_json(s: &AccountState) -> Value {
    let a = Account {
        provider_type: "".into(),
        uuid: "".into(),
        config: "{}".into(),
        state: s.clone(),
    };
    Value::Object(merge_account(&a).unwrap_or_default())
}

fn doc(want: &Map<String, Value>, have: Option<&Map<String, Value>>) -> Option<String> {
    match have {
        None => Some("missing".into()),
        Some(h) if h == want => None,
        Some(h) => Some(differs(want, h)),
    }
}

/// Compares `snap` (the target as read back) with every checkable item. Returns how many
/// items were compared and the mismatches.
pub fn check(items: &[Item], snap: &Snapshot) -> (usize, Vec<Mismatch>) {
    let now = now_ms();
    let mut checked = 0;
    let mut out = Vec::new();
    for it in items.iter().filter(|i| checkable(i)) {
        let Some(e) = &it.expect else { continue };
        let problem = match e {
            Expect::Config(c) => doc(c, snap.config.as_ref()),
            Expect::Usage(u) => doc(u, snap.usage.as_ref()),
            Expect::Account {
                t,
                u,
                config,
                state,
            } => match snap.account(t, u) {
                None => Some("missing".into()),
                Some(a) if &a.config != config => {
                    Some(format!("config {}", differs(config, &a.config)))
                }
                Some(a) => match state {
                    Some(s) if *s != a.account.state => {
                        let p = diff_paths(&state_json(s), &state_json(&a.account.state), 6);
                        Some(format!("state differs at {}", p.join(", ")))
                    }
                    _ => None,
                },
            },
            Expect::Token { t, u, value } => match snap.token(t, u) {
                None => Some("missing".into()),
                Some(tok) if &tok.value == value => None,
                Some(tok) => Some(format!(
                    "differs at {}",
                    diff_paths(value, &tok.value, 5).join(", ")
                )),
            },
            Expect::Password(p) => match (&snap.password, p) {
                (None, _) => Some("missing".into()),
                (Some(h), Password::Plain(plain)) => {
                    if !h.starts_with("pbkdf2:") {
                        Some("stored as plaintext, not as a hash".into())
                    } else if !verify_password(plain, h) {
                        Some("the stored hash does not match the source's password".into())
                    } else {
                        None
                    }
                }
                (Some(h), Password::Hash(want)) => {
                    (h != want).then(|| "the stored hash differs from the source's".into())
                }
            },
            Expect::Session {
                key,
                data,
                expires_at,
            } => {
                if *expires_at <= now {
                    // Expired during the run: gone from the target as it should be.
                    continue;
                }
                match snap.session(key) {
                    None => Some("missing".into()),
                    Some(s) if s.expires_at != *expires_at => Some("expiry differs".into()),
                    Some(s) => {
                        let have = session_data(&s.data, s.expires_at);
                        (have != *data).then(|| format!("data {}", differs(data, &have)))
                    }
                }
            }
            Expect::Plugin {
                name,
                enabled,
                extra,
            } => match snap.plugin(name) {
                None => Some("missing".into()),
                Some(p) if p.enabled != *enabled => Some("enabled flag differs".into()),
                Some(p) => {
                    let have: Value = serde_json::from_str(&p.extra).unwrap_or(Value::Null);
                    (have != *extra).then(|| {
                        format!(
                            "entry differs at {}",
                            diff_paths(extra, &have, 5).join(", ")
                        )
                    })
                }
            },
        };
        checked += 1;
        if let Some(what) = problem {
            out.push(Mismatch {
                cat: it.cat,
                name: it.name.clone(),
                what,
            });
        }
    }
    (checked, out)
}

#[cfg(test)]
mod tests {
    use super::super::copy::{Ctx, plan};
    use super::super::snapshot::Token;
    use super::*;
    use aiclient_sdk::storage::{PluginState, Session};
    use serde_json::json;

    fn snapshot() -> Snapshot {
        let mut s = Snapshot::default();
        s.config = json!({"REQUIRED_API_KEY": "k"}).as_object().cloned();
        s.push_account(Account {
            provider_type: "claude-kiro-oauth".into(),
            uuid: "k1".into(),
            config:
                json!({"uuid": "k1", "KIRO_OAUTH_CREDS_FILE_PATH": "./configs/kiro/k1/k1.json"})
                    .to_string()
                    .into(),
            state: AccountState::default(),
        })
        .unwrap();
        s.tokens.insert(
            ("claude-kiro-oauth".into(), "k1".into()),
            Token {
                text: r#"{"refreshToken":"r"}"#.into(),
                value: json!({"refreshToken": "r"}),
            },
        );
        s.password = Some("pbkdf2:00:11".into());
        s.sessions.push(Session {
            token_hash: "h".into(),
            data: r#"{"username":"admin"}"#.into(),
            expires_at: now_ms() + 3_600_000,
        });
        s.usage = json!({"providers": {}}).as_object().cloned();
        s.plugins.push(PluginState {
            name: "default-auth".into(),
            enabled: true,
            extra: "{}".into(),
        });
        s
    }

    fn items() -> Vec<Item> {
        let ctx = Ctx {
            force: false,
            allow_missing_tokens: false,
            hash_session_keys: false,
            file_target: None,
            source_file_dir: None,
        };
        plan(&snapshot(), &Snapshot::default(), &ctx)
    }

    #[test]
    fn an_exact_copy_verifies() {
        let (checked, bad) = check(&items(), &snapshot());
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(
            checked, 7,
            "config, account, token, password, session, usage, plugin (a type is its accounts)"
        );
    }

    #[test]
    fn every_kind_of_difference_is_found() {
        let mut s = snapshot();
        s.tokens.clear();
        s.tokens.insert(
            ("claude-kiro-oauth".into(), "k1".into()),
            Token {
                text: r#"{"refreshToken":"stale"}"#.into(),
                value: json!({"refreshToken": "stale"}),
            },
        );
        s.password = Some("pbkdf2:00:22".into());
        s.sessions.clear();
        s.plugins[0].enabled = false;
        s.usage = None;
        let (_, bad) = check(&items(), &s);
        let cats: Vec<Cat> = bad.iter().map(|m| m.cat).collect();
        assert_eq!(
            cats,
            [
                Cat::Tokens,
                Cat::Password,
                Cat::Sessions,
                Cat::Usage,
                Cat::Plugins
            ],
            "{bad:?}"
        );
        assert!(bad.iter().all(|m| !m.what.contains("stale")), "{bad:?}");

        let mut s = snapshot();
        s = {
            let mut t = Snapshot::default();
            t.config = json!({"REQUIRED_API_KEY": "other"}).as_object().cloned();
            t.tokens = std::mem::take(&mut s.tokens);
            t
        };
        let (_, bad) = check(&items(), &s);
        assert!(
            bad.iter()
                .any(|m| m.cat == Cat::Config && m.what.contains("/REQUIRED_API_KEY")),
            "{bad:?}"
        );
        assert!(
            bad.iter()
                .any(|m| m.cat == Cat::Accounts && m.what == "missing"),
            "{bad:?}"
        );
    }
}
