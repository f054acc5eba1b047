//! Credential-path fields and where a file-backend target keeps each account's token.
//!
//! The field rules and the placement of new token files mirror the file backend's
//! (`backends/file/src/layout.rs`), which the storage contract does not expose: the migration
//! must know them to report a missing token file per account and to make sure a copy into a
//! file directory never writes outside it.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};

/// A config dir and the directory its relative references resolve against (its parent: the
/// original resolves `./configs/…` against its working directory, where `configs/` lives).
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
    pub base: PathBuf,
}

impl Layout {
    pub fn new(dir: PathBuf) -> Self {
        let base = dir.parent().map_or_else(|| dir.clone(), Path::to_path_buf);
        Self { dir, base }
    }

    pub fn resolve(&self, value: &str) -> PathBuf {
        let p = Path::new(value);
        if p.is_absolute() {
            normalize(p)
        } else {
            normalize(&self.base.join(p))
        }
    }

    pub fn inside(&self, p: &Path) -> bool {
        p != self.dir && p.starts_with(&self.dir)
    }

    /// How an account refers to a file inside the dir: `./<dir name>/<rest>`.
    pub fn reference(&self, p: &Path) -> String {
        match p.strip_prefix(&self.base) {
            Ok(rel) => {
                let parts: Vec<_> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect();
                format!("./{}", parts.join("/"))
            }
            Err(_) => p.display().to_string(),
        }
    }
}

/// Removes `.` and resolves `..` lexically.
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

struct Kind {
    base: &'static str,
    dir: &'static str,
    fields: &'static [&'static str],
    own_folder: bool,
}

const KINDS: [Kind; 6] = [
    Kind {
        base: "claude-kiro-oauth",
        dir: "kiro",
        fields: &["KIRO_OAUTH_CREDS_FILE_PATH"],
        own_folder: true,
    },
    Kind {
        base: "gemini-cli-oauth",
        dir: "gemini",
        fields: &["GEMINI_OAUTH_CREDS_FILE_PATH"],
        own_folder: false,
    },
    Kind {
        base: "gemini-antigravity",
        dir: "antigravity",
        fields: &["ANTIGRAVITY_OAUTH_CREDS_FILE_PATH"],
        own_folder: false,
    },
    Kind {
        base: "openai-qwen-oauth",
        dir: "qwen",
        fields: &["QWEN_OAUTH_CREDS_FILE_PATH"],
        own_folder: false,
    },
    Kind {
        base: "openai-iflow",
        dir: "iflow",
        fields: &["IFLOW_TOKEN_FILE_PATH", "IFLOW_OAUTH_CREDS_FILE_PATH"],
        own_folder: false,
    },
    Kind {
        base: "openai-codex-oauth",
        dir: "codex",
        fields: &["CODEX_OAUTH_CREDS_FILE_PATH"],
        own_folder: false,
    },
];

fn kind(t: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| {
        t == k.base
            || t.strip_prefix(k.base)
                .is_some_and(|rest| rest.starts_with('-'))
    })
}

/// What an account's credential-path field says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredRef {
    /// A file path (field, value).
    File(String, String),
    /// The Node Redis fork's `redis:tokens:…` pseudo-path: no file to read.
    Pseudo(String, String),
}

/// The account's credential reference. Known types use their own fields; other types the
/// first `*_CREDS_FILE_PATH` / `*_TOKEN_FILE_PATH` field. Empty values are no reference.
pub fn credential_ref(t: &str, cfg: &Map<String, Value>) -> Option<CredRef> {
    let classify = |f: &str, v: &Value| {
        let s = v.as_str().filter(|s| !s.is_empty())?;
        Some(if s.starts_with("redis:") {
            CredRef::Pseudo(f.to_string(), s.to_string())
        } else {
            CredRef::File(f.to_string(), s.to_string())
        })
    };
    let found: Vec<CredRef> = match kind(t) {
        Some(k) => k
            .fields
            .iter()
            .filter_map(|f| cfg.get(*f).and_then(|v| classify(f, v)))
            .collect(),
        None => cfg
            .iter()
            .filter(|(k, _)| k.ends_with("_CREDS_FILE_PATH") || k.ends_with("_TOKEN_FILE_PATH"))
            .filter_map(|(k, v)| classify(k, v))
            .collect(),
    };
    // A real file path wins over a pseudo-path, as in the file backend (which skips those).
    found
        .iter()
        .find(|r| matches!(r, CredRef::File(..)))
        .or_else(|| found.first())
        .cloned()
}

/// The field a new token file is recorded under.
pub fn new_field(t: &str) -> String {
    match kind(t) {
        Some(k) => k.fields[0].to_string(),
        None => {
            let upper: String = t
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("{upper}_TOKEN_FILE_PATH")
        }
    }
}

/// Where a new token file goes, relative to the config dir (the file backend's rule).
pub fn new_token_rel(t: &str, uuid: &str, attempt: u32) -> PathBuf {
    let mut stem = sanitize(uuid);
    if attempt > 0 {
        stem = format!("{stem}-{attempt}");
    }
    let file = format!("{stem}.json");
    match kind(t) {
        Some(k) if k.own_folder => [k.dir, stem.as_str(), file.as_str()].iter().collect(),
        Some(k) => Path::new(k.dir).join(file),
        None => Path::new("tokens").join(sanitize(t)).join(file),
    }
}

fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    if out.is_empty() || out.starts_with('.') {
        out.insert(0, '_');
    }
    out
}

/// `./configs/<rest>` or `configs/<rest>` (the original's convention) → `<rest>`.
fn configs_rest(value: &str) -> Option<PathBuf> {
    let p = normalize(Path::new(value));
    if p.is_absolute() {
        return None;
    }
    let mut comps = p.components();
    match comps.next() {
        Some(Component::Normal(first)) if first == "configs" => {
            let rest: PathBuf = comps.collect();
            (!rest.as_os_str().is_empty()).then_some(rest)
        }
        _ => None,
    }
}

/// Token files already placed in a file target during one plan: path → who owns it (the
/// source reference, so accounts that shared a file in the source share it in the target).
pub type Placed = HashMap<PathBuf, String>;

/// Makes sure the token of account `(t, u)` lands inside the file target `layout`: keeps a
/// reference that resolves inside it, rewrites any other to a place inside it, and gives an
/// account without one a reference. Returns a note if `cfg` was changed.
pub fn place(
    layout: &Layout,
    t: &str,
    u: &str,
    cfg: &mut Map<String, Value>,
    placed: &mut Placed,
) -> Option<String> {
    let current = match credential_ref(t, cfg) {
        Some(CredRef::File(f, v)) => Some((f, v)),
        _ => None,
    };
    let (field, want, owner, why) = match &current {
        Some((f, v)) => {
            let p = layout.resolve(v);
            if layout.inside(&p) {
                let owner = p.display().to_string();
                if placed.get(&p).is_none_or(|o| *o == owner) {
                    placed.insert(p, owner);
                    return None;
                }
                let why = format!("{f} {v:?} is another source file's place in the target");
                (f.clone(), p, owner, why)
            } else {
                let rel = configs_rest(v).unwrap_or_else(|| new_token_rel(t, u, 0));
                let why = format!("{f} {v:?} leads outside {}", layout.dir.display());
                (f.clone(), layout.dir.join(rel), format!("ref:{v}"), why)
            }
        }
        None => (
            new_field(t),
            layout.dir.join(new_token_rel(t, u, 0)),
            format!("account:{t}/{u}"),
            "no credential path".to_string(),
        ),
    };
    let mut want = want;
    let mut attempt = 0;
    while placed.get(&want).is_some_and(|o| *o != owner) {
        attempt += 1;
        want = layout.dir.join(new_token_rel(t, u, attempt));
    }
    placed.insert(want.clone(), owner);
    let value = layout.reference(&want);
    let note = format!("{why}; the token is written to {value:?} ({field})");
    cfg.insert(field, Value::String(value));
    Some(note)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn credential_refs_follow_the_file_backend() {
        assert_eq!(
            credential_ref(
                "openai-iflow",
                &obj(json!({"IFLOW_OAUTH_CREDS_FILE_PATH": "./configs/iflow/a.json"}))
            ),
            Some(CredRef::File(
                "IFLOW_OAUTH_CREDS_FILE_PATH".into(),
                "./configs/iflow/a.json".into()
            ))
        );
        assert_eq!(
            credential_ref(
                "claude-kiro-oauth",
                &obj(json!({"KIRO_OAUTH_CREDS_FILE_PATH": "redis:tokens:k:u"}))
            ),
            Some(CredRef::Pseudo(
                "KIRO_OAUTH_CREDS_FILE_PATH".into(),
                "redis:tokens:k:u".into()
            ))
        );
        assert_eq!(
            credential_ref(
                "gemini-cli-oauth",
                &obj(json!({"GEMINI_OAUTH_CREDS_FILE_PATH": ""}))
            ),
            None
        );
        assert!(matches!(
            credential_ref("grok-web", &obj(json!({"GROK_TOKEN_FILE_PATH": "t.json"}))),
            Some(CredRef::File(f, _)) if f == "GROK_TOKEN_FILE_PATH"
        ));
        assert_eq!(credential_ref("openai-custom", &obj(json!({"x": 1}))), None);
    }

    #[test]
    fn placement_keeps_inside_references_and_rewrites_the_rest() {
        let l = Layout::new(PathBuf::from("/srv/out/configs"));
        let mut placed = Placed::new();
        let mut a =
            obj(json!({"uuid": "a", "KIRO_OAUTH_CREDS_FILE_PATH": "./configs/kiro/a/a.json"}));
        assert_eq!(
            place(&l, "claude-kiro-oauth", "a", &mut a, &mut placed),
            None
        );
        assert_eq!(a["KIRO_OAUTH_CREDS_FILE_PATH"], "./configs/kiro/a/a.json");

        let mut b = obj(
            json!({"GEMINI_OAUTH_CREDS_FILE_PATH": "/home/me/.gemini/oauth_creds.json", "z": 1}),
        );
        assert!(place(&l, "gemini-cli-oauth", "b", &mut b, &mut placed).is_some());
        assert_eq!(b["GEMINI_OAUTH_CREDS_FILE_PATH"], "./configs/gemini/b.json");
        assert_eq!(
            b.keys().collect::<Vec<_>>(),
            ["GEMINI_OAUTH_CREDS_FILE_PATH", "z"],
            "rewritten in place"
        );

        let mut c = obj(json!({"uuid": "c"}));
        assert!(place(&l, "openai-qwen-oauth", "c", &mut c, &mut placed).is_some());
        assert_eq!(c["QWEN_OAUTH_CREDS_FILE_PATH"], "./configs/qwen/c.json");

        // In a dir not named configs, ./configs/… leads outside and keeps its rest inside.
        let l2 = Layout::new(PathBuf::from("/srv/backup"));
        let mut d = obj(json!({"QWEN_OAUTH_CREDS_FILE_PATH": "configs/qwen/x.json"}));
        assert!(place(&l2, "openai-qwen-oauth", "d", &mut d, &mut Placed::new()).is_some());
        assert_eq!(d["QWEN_OAUTH_CREDS_FILE_PATH"], "./backup/qwen/x.json");

        // Two different source files never end up in one target file.
        let mut placed = Placed::new();
        let mut e = obj(json!({"QWEN_OAUTH_CREDS_FILE_PATH": "/a/configs/qwen/q.json"}));
        let mut f = obj(json!({"QWEN_OAUTH_CREDS_FILE_PATH": "./configs/qwen/e.json"}));
        place(&l, "openai-qwen-oauth", "e", &mut e, &mut placed);
        assert_eq!(e["QWEN_OAUTH_CREDS_FILE_PATH"], "./configs/qwen/e.json");
        assert!(place(&l, "openai-qwen-oauth", "f", &mut f, &mut placed).is_some());
        assert_eq!(f["QWEN_OAUTH_CREDS_FILE_PATH"], "./configs/qwen/f-1.json");
    }
}
