//! `aiclient export`: a backend's state as the original `configs/` files.
//!
//! The same copy as `migrate`, into a file backend opened on a staging directory named
//! `configs` (so the accounts' `./configs/…` references resolve inside it) next to the output
//! directory. The staging copy is flushed, reopened from disk and verified, and only then moved
//! into place: in one rename when the output directory is missing or empty, else file by file
//! (each rename atomic). On any failure the staging directory is removed and the output
//! directory is left as it was.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use aiclient_sdk::account::{format_time, now_ms};
use serde_json::Value;

use super::copy::{Ctx, Outcome};
use super::snapshot::Snapshot;
use super::spec::{self, Endpoint, Place, Spec};
use super::{Exit, Stop, apply, file_paths, open, paths, report, stage_source, write_err};
use crate::admin::auth::random_hex;
use crate::config::Config;

/// A staging directory, removed when dropped (after a successful install nothing is left in
/// it but the empty root).
struct Staging {
    root: PathBuf,
}

impl Staging {
    fn new(parent: &Path, name: &str) -> io::Result<Self> {
        let root = parent.join(format!(
            ".{name}.aiclient-export-{}-{}",
            std::process::id(),
            random_hex(4)
        ));
        fs::DirBuilder::new().mode(0o700).create(&root)?;
        Ok(Self { root })
    }

    fn configs(&self) -> PathBuf {
        self.root.join("configs")
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn is_empty_dir(dir: &Path) -> io::Result<bool> {
    Ok(fs::read_dir(dir)?.next().is_none())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Moves every file of `from` into `to` (same file system), replacing files of the same name.
fn move_tree(from: &Path, to: &Path) -> io::Result<()> {
    for e in fs::read_dir(from)? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type()?.is_dir() {
            match fs::symlink_metadata(&dst) {
                Ok(m) if m.is_dir() => move_tree(&src, &dst)?,
                Ok(_) => {
                    return Err(io::Error::other(format!(
                        "{} exists and is not a directory",
                        dst.display()
                    )));
                }
                Err(_) => fs::rename(&src, &dst)?,
            }
        } else {
            fs::rename(&src, &dst)?;
        }
    }
    sync_dir(to)
}

/// Puts the staged `configs` directory at `dir`.
fn install(staged: &Path, dir: &Path) -> io::Result<()> {
    let whole = match is_empty_dir(dir) {
        Ok(empty) => empty,
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => return Err(e),
    };
    if whole {
        // rename(2) replaces an empty directory.
        fs::rename(staged, dir)?;
    } else {
        move_tree(staged, dir)?;
    }
    match dir.parent() {
        Some(p) => sync_dir(p),
        None => Ok(()),
    }
}

/// `aiclient export`: see the module docs.
pub async fn export(
    config: &Config,
    from: &Endpoint,
    dir: &Path,
    force: bool,
    progress: bool,
    out: &mut dyn Write,
) -> Result<Exit, Stop> {
    let abs = std::path::absolute(dir)
        .map(|p| paths::normalize(&p))
        .map_err(|e| Stop::usage(format!("{}: {e}", dir.display())))?;
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
        return Err(Stop::usage(format!(
            "{} cannot be an output directory",
            dir.display()
        )));
    };
    let name = name.to_string_lossy().to_string();
    match &from.place {
        Place::Memory => {
            return Err(Stop::usage(
                "nothing to export: the source is the memory backend (give --redis-url or --from)",
            ));
        }
        Place::File(src) if !src.is_dir() => {
            return Err(Stop::usage(format!(
                "the source config dir {} does not exist",
                src.display()
            )));
        }
        Place::File(src) if from.place.same_as(&Place::File(abs.clone())) => {
            return Err(Stop::usage(format!(
                "the output dir {} is the source itself",
                src.display()
            )));
        }
        _ => {}
    }
    if abs.exists() {
        if !abs.is_dir() {
            return Err(Stop::failed(format!(
                "{} exists and is not a directory",
                abs.display()
            )));
        }
        let empty = is_empty_dir(&abs).map_err(|e| format!("{}: {e}", abs.display()))?;
        if !empty && !force {
            return Err(Stop::failed(format!(
                "{} is not empty; nothing was written (--force writes into it, replacing the files the export contains)",
                abs.display()
            )));
        }
    }
    writeln!(out, "Exporting {} → {}", from.label, abs.display()).map_err(write_err)?;

    let plugin_dir = &config.plugin_dir;
    let source = open(plugin_dir, from).await?;
    let (src, info) = stage_source(&source, progress).await?;
    drop(source);

    fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let staging = Staging::new(parent, &name)
        .map_err(|e| format!("cannot create a staging dir in {}: {e}", parent.display()))?;
    let ep = spec::resolve(&Spec::File(staging.configs()), config, "aiclient-export")?;
    let target = open(plugin_dir, &ep).await?;
    let layout = paths::Layout::new(file_paths(&target).await?.0);
    let ctx = Ctx {
        force: false,
        // A snapshot holds what the source holds: an account without its token stays so.
        allow_missing_tokens: true,
        hash_session_keys: info.raw_session_keys,
        file_target: Some(&layout),
        source_file_dir: info.file_dir.as_deref(),
    };
    let mut items = info.lossy;
    items.extend(super::copy::plan(&src, &Snapshot::default(), &ctx));
    let facts = [
        ("exportedAt", Value::from(format_time(now_ms()))),
        ("exportedFrom", Value::from(from.label.clone())),
        (
            "exportedBy",
            Value::from(format!("aiclient {}", env!("CARGO_PKG_VERSION"))),
        ),
    ];
    let applied = apply(plugin_dir, &ep, target, &mut items, &facts, progress).await?;
    drop(applied.storage);

    report::print_items(out, &items, false).map_err(write_err)?;
    report::print_summary(out, &items, false).map_err(write_err)?;
    report::print_verification(out, applied.checked, &applied.mismatches).map_err(write_err)?;
    let failed = items.iter().filter(|i| i.outcome == Outcome::Fail).count();
    if let Some(reason) = applied.aborted {
        return Err(Stop::failed(format!(
            "export stopped: {reason}; {} was not changed",
            abs.display()
        )));
    }
    if failed > 0 || !applied.mismatches.is_empty() {
        writeln!(
            out,
            "Export failed ({failed} failed item(s), {} mismatch(es)); {} was not changed.",
            applied.mismatches.len(),
            abs.display()
        )
        .map_err(write_err)?;
        return Ok(Exit::Failure);
    }
    install(&staging.configs(), &abs)
        .map_err(|e| format!("moving the export into {}: {e}", abs.display()))?;
    drop(staging);
    writeln!(out, "Export complete: {}", abs.display()).map_err(write_err)?;
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_renames_into_a_missing_or_empty_dir_and_merges_into_a_full_one() {
        let tmp = tempfile::tempdir().expect("tmp");
        let staged = tmp.path().join("stage");
        fs::create_dir_all(staged.join("kiro/a")).expect("mkdir");
        fs::write(staged.join("config.json"), "{}").expect("write");
        fs::write(staged.join("kiro/a/a.json"), "{}").expect("write");
        let out = tmp.path().join("out");
        install(&staged, &out).expect("install into a missing dir");
        assert!(out.join("kiro/a/a.json").is_file());
        assert!(!staged.exists());

        fs::create_dir_all(staged.join("kiro/a")).expect("mkdir");
        fs::write(staged.join("config.json"), r#"{"new":1}"#).expect("write");
        fs::write(staged.join("kiro/a/a.json"), r#"{"new":1}"#).expect("write");
        fs::write(out.join("keep.txt"), "operator's").expect("write");
        install(&staged, &out).expect("install into a full dir");
        assert_eq!(
            fs::read_to_string(out.join("config.json")).expect("read"),
            r#"{"new":1}"#
        );
        assert_eq!(
            fs::read_to_string(out.join("kiro/a/a.json")).expect("read"),
            r#"{"new":1}"#
        );
        assert_eq!(
            fs::read_to_string(out.join("keep.txt")).expect("read"),
            "operator's"
        );
    }
}
