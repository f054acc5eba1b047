//! Where things are: the config dir, how an account's credential path resolves, and where a
//! token file goes when an account has none yet.

use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};

/// The config dir and the directory relative paths resolve against.
pub(crate) struct Layout {
    /// The config dir, absolute and canonical.
    pub dir: PathBuf,
    /// The config dir's parent. The original resolves relative paths (`./configs/kiro/a.json`)
    /// against its working directory, which is where `configs/` lives; resolving against the
    /// parent of the config dir gives the same file there and the right one when the gateway
    /// runs from anywhere else.
    pub base: PathBuf,
}

impl Layout {
    pub fn new(dir: PathBuf) -> Self {
        let base = dir.parent().map_or_else(|| dir.clone(), Path::to_path_buf);
        Self { dir, base }
    }

    /// A file directly in the config dir.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// An account's path value → the absolute, lexically normalised path.
    pub fn resolve(&self, value: &str) -> PathBuf {
        let p = Path::new(value);
        if p.is_absolute() {
            normalize(p)
        } else {
            normalize(&self.base.join(p))
        }
    }

    /// Whether `p` (normalised) lies inside the config dir.
    pub fn inside(&self, p: &Path) -> bool {
        p != self.dir && p.starts_with(&self.dir)
    }

    /// How an account refers to a file inside the config dir, the way the original writes it:
    /// `./configs/kiro/<uuid>/<uuid>.json`.
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

    /// A short name for logs and `status()`: relative to the config dir when inside it.
    pub fn name(&self, p: &Path) -> String {
        match p.strip_prefix(&self.dir) {
            Ok(rel) => rel.to_string_lossy().into_owned(),
            Err(_) => p.display().to_string(),
        }
    }
}

/// Removes `.` and resolves `..` without touching the file system (the file may not exist, and
/// containment checks must not be fooled by `configs/../elsewhere`).
pub(crate) fn normalize(p: &Path) -> PathBuf {
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

/// A provider type whose credential files the original knows.
struct Kind {
    /// Type id; `<base>-<suffix>` groups (upstream's `openai-custom-1`) match too.
    base: &'static str,
    /// Directory under `configs/` for new token files.
    dir: &'static str,
    /// Credential-path fields, the one written for new files first.
    fields: &'static [&'static str],
    /// New files get a folder of their own: the original's Kiro loader merges every other
    /// `*.json` in the credential's directory over it, so two Kiro tokens side by side would
    /// overwrite each other's access and refresh tokens once the Node version reads them.
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
    // The runtime reads IFLOW_TOKEN_FILE_PATH; the UI form and the migration CLI write
    // IFLOW_OAUTH_CREDS_FILE_PATH. Both are read; new files are recorded under the first.
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

/// The account's credential-path field and its value. Known types use their own fields; any
/// other type uses the first `*_CREDS_FILE_PATH` / `*_TOKEN_FILE_PATH` field. Empty values and
/// the Redis fork's `redis:tokens:…` pseudo-paths are not files.
pub(crate) fn credential_field(t: &str, cfg: &Map<String, Value>) -> Option<(String, String)> {
    let usable = |v: &Value| {
        v.as_str()
            .filter(|s| !s.is_empty() && !s.starts_with("redis:"))
            .map(str::to_string)
    };
    match kind(t) {
        Some(k) => k
            .fields
            .iter()
            .find_map(|f| cfg.get(*f).and_then(usable).map(|v| (f.to_string(), v))),
        None => cfg.iter().find_map(|(k, v)| {
            let is_path = k.ends_with("_CREDS_FILE_PATH") || k.ends_with("_TOKEN_FILE_PATH");
            if is_path {
                usable(v).map(|v| (k.clone(), v))
            } else {
                None
            }
        }),
    }
}

/// The field a new token file is recorded under: the type's own, or `<TYPE>_TOKEN_FILE_PATH`.
pub(crate) fn new_field(t: &str) -> String {
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

/// Where a new token file goes, relative to the config dir: `<dir>/<uuid>.json`
/// (`kiro/<uuid>/<uuid>.json`, `tokens/<type>/<uuid>.json` for types the original has no
/// directory for). `attempt > 0` adds a suffix, for when that name is taken.
pub(crate) fn new_token_rel(t: &str, uuid: &str, attempt: u32) -> PathBuf {
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

/// A uuid or type id as one safe path segment: no separators, no leading dot, at most 100
/// bytes. A uuid is the caller's input and must not be able to climb out of the config dir.
pub(crate) fn sanitize(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn layout() -> Layout {
        Layout::new(PathBuf::from("/srv/app/configs"))
    }

    #[test]
    fn relative_paths_resolve_against_the_config_dirs_parent() {
        let l = layout();
        assert_eq!(
            l.resolve("./configs/kiro/a.json"),
            Path::new("/srv/app/configs/kiro/a.json")
        );
        assert_eq!(
            l.resolve("configs/qwen/b.json"),
            Path::new("/srv/app/configs/qwen/b.json")
        );
        assert_eq!(l.resolve("/etc/creds.json"), Path::new("/etc/creds.json"));
        assert_eq!(
            l.resolve("configs/../../etc/x.json"),
            Path::new("/srv/etc/x.json")
        );
        assert!(l.inside(&l.resolve("./configs/kiro/a.json")));
        assert!(!l.inside(&l.resolve("./configs/../secrets.json")));
        assert!(!l.inside(&l.resolve("./configs")));
        assert_eq!(
            l.reference(Path::new("/srv/app/configs/kiro/u/u.json")),
            "./configs/kiro/u/u.json"
        );
    }

    #[test]
    fn credential_fields_per_type() {
        let cfg = |v: Value| v.as_object().cloned().unwrap_or_default();
        let iflow = cfg(json!({"IFLOW_OAUTH_CREDS_FILE_PATH": "./configs/iflow/a.json"}));
        assert_eq!(
            credential_field("openai-iflow", &iflow),
            Some((
                "IFLOW_OAUTH_CREDS_FILE_PATH".into(),
                "./configs/iflow/a.json".into()
            ))
        );
        let kiro = cfg(json!({"KIRO_TOKEN_FILE_PATH": "redis:tokens:claude-kiro-oauth:u", "x": 1}));
        assert_eq!(
            credential_field("claude-kiro-oauth", &kiro),
            None,
            "a redis: pseudo-path is no file"
        );
        let other = cfg(json!({"GROK_TOKEN_FILE_PATH": "t.json"}));
        assert_eq!(
            credential_field("grok-web", &other).map(|f| f.0),
            Some("GROK_TOKEN_FILE_PATH".into())
        );
        assert_eq!(
            credential_field(
                "gemini-cli-oauth-2",
                &cfg(json!({"GEMINI_OAUTH_CREDS_FILE_PATH": ""}))
            ),
            None
        );
        assert_eq!(new_field("openai-custom"), "OPENAI_CUSTOM_TOKEN_FILE_PATH");
        assert_eq!(new_field("openai-iflow"), "IFLOW_TOKEN_FILE_PATH");
    }

    #[test]
    fn new_token_files_stay_inside_their_directory() {
        assert_eq!(
            new_token_rel("claude-kiro-oauth", "u1", 0),
            Path::new("kiro/u1/u1.json")
        );
        assert_eq!(
            new_token_rel("gemini-cli-oauth", "u1", 2),
            Path::new("gemini/u1-2.json")
        );
        assert_eq!(
            new_token_rel("my/type", "../../x", 0),
            Path::new("tokens/my_type/_.._.._x.json")
        );
        assert_eq!(sanitize(".."), "_..");
        assert_eq!(sanitize(""), "_");
    }
}
