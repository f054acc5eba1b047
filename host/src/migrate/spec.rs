//! Where state lives: `file:DIR`, `redis://…` / `rediss://…` (optionally `?prefix=…`),
//! `memory:`, or the backend configured by `aiclient.toml` and the environment; and the JSON
//! each backend plugin is created with (the shapes `Config::backend_config` documents).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::config::Config;

/// Bulk reads (a 10,000-account pool) may take longer than a request's command timeout.
const MIN_COMMAND_TIMEOUT_MS: u64 = 30_000;

/// A storage location as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    File(PathBuf),
    Redis {
        url: String,
        prefix: Option<String>,
    },
    Memory,
    /// The backend `aiclient.toml`, the environment and `--redis-url` select.
    Configured,
}

impl Spec {
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if let Some(dir) = t.strip_prefix("file:") {
            if dir.is_empty() {
                return Err("file: needs a directory, e.g. file:./configs".into());
            }
            return Ok(Spec::File(PathBuf::from(dir)));
        }
        if t == "memory:" || t == "memory" {
            return Ok(Spec::Memory);
        }
        if t.starts_with("redis://") || t.starts_with("rediss://") {
            let (url, prefix) = split_prefix(t)?;
            return Ok(Spec::Redis { url, prefix });
        }
        Err(format!(
            "unknown storage {:?}: expected file:DIR, redis://…, rediss://… (optionally ?prefix=…) or memory:",
            mask_url(t)
        ))
    }
}

/// Where an endpoint's data is, for telling two endpoints apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    File(PathBuf),
    /// Server, db and prefix, without credentials.
    Redis(String),
    Memory,
    Other(String),
}

impl Place {
    /// Whether two places hold the same data (memory never does: each open is a new store).
    pub fn same_as(&self, other: &Place) -> bool {
        match (self, other) {
            (Place::File(a), Place::File(b)) => same_dir(a, b),
            (Place::Memory, Place::Memory) => false,
            (a, b) => a == b,
        }
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| {
        std::fs::canonicalize(p)
            .or_else(|_| std::path::absolute(p))
            .map(|p| super::paths::normalize(&p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    canon(a) == canon(b)
}

/// A backend ready to open: the plugin, its JSON config, and a label safe to print.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub backend: String,
    pub config: Value,
    /// Never contains a password.
    pub label: String,
    pub place: Place,
}

/// Splits `?prefix=…` (or `key_prefix=…`) off a Redis URL; other query parameters stay.
pub fn split_prefix(url: &str) -> Result<(String, Option<String>), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), None));
    };
    let mut prefix = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "prefix" || k == "key_prefix" {
            let v = percent_decode(v)
                .ok_or_else(|| format!("{}: bad %-encoding in the prefix", mask_url(url)))?;
            if v.contains('{') || v.contains('}') {
                return Err(format!(
                    "{}: a key prefix may not contain {{ or }}",
                    mask_url(url)
                ));
            }
            prefix = Some(v);
        } else {
            rest.push(pair);
        }
    }
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, prefix))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A URL with its password (or a lone userinfo, which may be one) replaced by `***`.
pub fn mask_url(url: &str) -> String {
    let Some(s) = url.find("://") else {
        return url.to_string();
    };
    let after = &url[s + 3..];
    let end = after.find(['/', '?']).unwrap_or(after.len());
    let authority = &after[..end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let masked = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => "***".to_string(),
            };
            format!(
                "{}{masked}@{}{}",
                &url[..s + 3],
                &authority[at + 1..],
                &after[end..]
            )
        }
        None => url.to_string(),
    }
}

/// The URL without credentials, with an explicit db, for [`Place::Redis`].
fn redis_place(url: &str, prefix: &str) -> Place {
    let no_creds = match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_string(),
    };
    let (base, _) = no_creds.split_once('?').unwrap_or((&no_creds, ""));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let with_db = if base[scheme_end..].contains('/') && !base.ends_with('/') {
        base.to_string()
    } else {
        format!("{}/0", base.trim_end_matches('/'))
    };
    Place::Redis(format!("{} {prefix}", with_db.to_ascii_lowercase()))
}

fn redis_label(url: &str, prefix: &str) -> String {
    format!("{} (key prefix {prefix:?})", mask_url(url))
}

/// The redis backend's config for `url`: the configured connection settings (credentials
/// used when the URL has none, timeouts, TLS options) with this URL and prefix.
fn redis_config(config: &Config, instance: &str, url: &str, prefix: &str) -> Value {
    let r = &config.file.storage.redis;
    let mut v = json!({
        "url": url,
        "username": r.username,
        "password": r.password.as_ref().map(|p| p.0.clone()),
        "key_prefix": prefix,
        "connect_timeout_ms": r.connect_timeout_ms,
        "command_timeout_ms": r.command_timeout_ms.max(MIN_COMMAND_TIMEOUT_MS),
        "instance_id": instance,
    });
    if config.file.storage.backend == "redis"
        && let (Some(obj), Ok(Value::Object(extra))) = (
            v.as_object_mut(),
            serde_json::to_value(&config.file.storage.options),
        )
    {
        for (k, x) in extra {
            obj.entry(k).or_insert(x);
        }
    }
    v
}

/// Turns a spec into an endpoint.
pub fn resolve(spec: &Spec, config: &Config, instance: &str) -> Result<Endpoint, String> {
    let file = |dir: &Path| Endpoint {
        backend: "file".into(),
        config: json!({ "config_dir": dir, "instance_id": instance }),
        label: format!("file:{}", dir.display()),
        place: Place::File(dir.to_path_buf()),
    };
    match spec {
        Spec::File(dir) => Ok(file(dir)),
        Spec::Memory => Ok(Endpoint {
            backend: "memory".into(),
            config: json!({ "instance_id": instance }),
            label: "memory:".into(),
            place: Place::Memory,
        }),
        Spec::Redis { url, prefix } => {
            let prefix = prefix
                .clone()
                .unwrap_or_else(|| config.file.storage.redis.key_prefix.clone());
            Ok(Endpoint {
                backend: "redis".into(),
                config: redis_config(config, instance, url, &prefix),
                label: redis_label(url, &prefix),
                place: redis_place(url, &prefix),
            })
        }
        Spec::Configured => {
            let s = &config.file.storage;
            match s.backend.as_str() {
                "file" => Ok(file(&s.file.config_dir)),
                "memory" => resolve(&Spec::Memory, config, instance),
                "redis" => match &s.redis.url {
                    Some(u) => {
                        let (url, prefix) = split_prefix(&u.0)?;
                        resolve(&Spec::Redis { url, prefix }, config, instance)
                    }
                    None => {
                        let r = &s.redis;
                        let mut v = config.backend_config(instance);
                        v["command_timeout_ms"] =
                            Value::from(r.command_timeout_ms.max(MIN_COMMAND_TIMEOUT_MS));
                        let shown = format!("redis://{}:{}/{}", r.host, r.port, r.db);
                        Ok(Endpoint {
                            backend: "redis".into(),
                            config: v,
                            label: redis_label(&shown, &r.key_prefix),
                            place: redis_place(&shown, &r.key_prefix),
                        })
                    }
                },
                other => Ok(Endpoint {
                    backend: other.to_string(),
                    config: config.backend_config(instance),
                    label: format!("{other} (configured backend)"),
                    place: Place::Other(other.to_string()),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_reject_unknown_schemes() {
        assert_eq!(
            Spec::parse("file:./configs"),
            Ok(Spec::File("./configs".into()))
        );
        assert_eq!(Spec::parse("memory:"), Ok(Spec::Memory));
        assert_eq!(
            Spec::parse("redis://h:1/2?prefix=app%3Ax:"),
            Ok(Spec::Redis {
                url: "redis://h:1/2".into(),
                prefix: Some("app:x:".into())
            })
        );
        assert_eq!(
            Spec::parse("rediss://h/0?protocol=resp3&key_prefix=p:"),
            Ok(Spec::Redis {
                url: "rediss://h/0?protocol=resp3".into(),
                prefix: Some("p:".into())
            })
        );
        let err = Spec::parse("postgres://u:hunter2@h/db").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(Spec::parse("file:").is_err());
        assert!(Spec::parse("redis://h/0?prefix={x}").is_err());
    }

    #[test]
    fn urls_are_masked() {
        assert_eq!(
            mask_url("redis://:pw@h:1/0?prefix=a"),
            "redis://:***@h:1/0?prefix=a"
        );
        assert_eq!(mask_url("rediss://u:pw@h"), "rediss://u:***@h");
        assert_eq!(mask_url("redis://lonely@h/1"), "redis://***@h/1");
        assert_eq!(mask_url("redis://h:1/0"), "redis://h:1/0");
    }

    #[test]
    fn places_ignore_credentials_but_not_db_or_prefix() {
        let a = redis_place("redis://:pw@127.0.0.1:7000", "aiclient:");
        let b = redis_place("redis://127.0.0.1:7000/0", "aiclient:");
        assert!(a.same_as(&b), "{a:?} {b:?}");
        assert!(!a.same_as(&redis_place("redis://127.0.0.1:7000/1", "aiclient:")));
        assert!(!a.same_as(&redis_place("redis://127.0.0.1:7000/0", "other:")));
        assert!(!Place::Memory.same_as(&Place::Memory));
    }
}
