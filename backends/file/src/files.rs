//! Reading the original files strictly and replacing them atomically.
//!
//! A write never leaves a half-written file: the bytes go to a temporary file in the same
//! directory, which is fsynced, renamed over the target (atomic on POSIX file systems), and the
//! directory is fsynced so the rename itself survives a power cut. A reader sees the old or the
//! new file, never a mixture.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aiclient_sdk::PluginError;
use serde_json::{Map, Value};

/// Reads a JSON file. `Ok(None)` if it does not exist; a malformed file is an error naming the
/// path, line and column (the file is left exactly as it is).
pub(crate) fn read_json(path: &Path) -> Result<Option<Value>, PluginError> {
    let Some(text) = read_text(path)? else {
        return Ok(None);
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    match serde_json::from_str(text) {
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            // serde_json appends " at line L column C" to its message; say it once.
            let msg = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            let what = msg.strip_suffix(&suffix).unwrap_or(&msg);
            Err(PluginError::invalid_input(format!(
                "{}: malformed JSON at line {}, column {}: {what}",
                path.display(),
                e.line(),
                e.column()
            )))
        }
    }
}

/// Reads a JSON file that must hold an object.
pub(crate) fn read_object(path: &Path) -> Result<Option<Map<String, Value>>, PluginError> {
    match read_json(path)? {
        None => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(other) => Err(PluginError::invalid_input(format!(
            "{}: expected a JSON object, found {}",
            path.display(),
            kind_of(&other)
        ))),
    }
}

/// Reads a UTF-8 text file; `Ok(None)` if it does not exist.
pub(crate) fn read_text(path: &Path) -> Result<Option<String>, PluginError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(PluginError::unavailable(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    String::from_utf8(bytes).map(Some).map_err(|e| {
        PluginError::invalid_input(format!(
            "{}: not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// JSON as the original writes it: `JSON.stringify(value, null, 2)`, no trailing newline.
pub(crate) fn pretty(v: &Value) -> Vec<u8> {
    // Serialising a `Value` cannot fail (its map keys are strings).
    serde_json::to_vec_pretty(v).unwrap_or_default()
}

/// Replaces `path` with `bytes` atomically (see the module docs). An existing file keeps its
/// permission bits; a new one gets 0600, as the upstream original writes its secrets. A symlink
/// is followed, so an operator's link keeps pointing at the (updated) file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let target = match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => fs::canonicalize(path)?,
        _ => path.to_path_buf(),
    };
    let dir = target
        .parent()
        .ok_or_else(|| io::Error::other("the file has no parent directory"))?;
    let created = create_dirs(dir)?;
    let mode = fs::metadata(&target)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o600);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // One writer per process and file (the backend serialises its writes), so pid + name is
    // unique; the leading dot keeps it out of `*.json` globs such as the Kiro loader's.
    let tmp = dir.join(format!(".{name}.aiclient-tmp-{}", std::process::id()));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &target)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    sync_dir(dir)?;
    for d in created.iter().rev() {
        if let Some(parent) = d.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Creates `dir` and its missing ancestors; returns the ones it created, outermost first.
fn create_dirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut d = Some(dir);
    while let Some(p) = d {
        if p.exists() {
            break;
        }
        missing.push(p.to_path_buf());
        d = p.parent();
    }
    missing.reverse();
    if !missing.is_empty() {
        fs::create_dir_all(dir)?;
    }
    Ok(missing)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Deletes a token file inside `config_dir` (a missing file is fine), then the folders this
/// backend makes per account (`kiro/<uuid>/`) if that left them empty. Directories directly
/// under the config dir (`kiro/`, `tokens/`) are never removed.
pub(crate) fn remove_file(path: &Path, config_dir: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    sync_dir(dir)?;
    let mut d = dir;
    while d.starts_with(config_dir) && d != config_dir && d.parent() != Some(config_dir) {
        if fs::remove_dir(d).is_err() {
            break; // not empty (or not ours to remove): stop climbing
        }
        match d.parent() {
            Some(p) => {
                sync_dir(p)?;
                d = p;
            }
            None => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_json_names_path_line_and_column() {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("provider_pools.json");
        fs::write(
            &p,
            "{\n  \"a\": [\n    {\"uuid\": \"x\"}\n    {\"uuid\": \"y\"}\n  ]\n}",
        )
        .expect("write");
        let e = read_object(&p).expect_err("malformed");
        let msg = e.message().to_string();
        assert!(msg.contains(&p.display().to_string()), "{msg}");
        assert!(msg.contains("line 4, column 5"), "{msg}");
        assert_eq!(msg.matches("line").count(), 1, "position said once: {msg}");
        fs::write(&p, "[1]").expect("write");
        assert!(
            read_object(&p)
                .expect_err("not an object")
                .message()
                .contains("found an array")
        );
        assert_eq!(
            read_object(&dir.path().join("missing.json")).expect("missing is fine"),
            None
        );
    }

    #[test]
    fn atomic_write_keeps_mode_follows_symlinks_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("a/b/new.json");
        write_atomic(&p, b"{}").expect("write new");
        assert_eq!(
            fs::metadata(&p).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        fs::set_permissions(&p, Permissions::from_mode(0o640)).expect("chmod");
        write_atomic(&p, b"{\"x\":1}").expect("rewrite");
        assert_eq!(fs::read_to_string(&p).expect("read"), "{\"x\":1}");
        assert_eq!(
            fs::metadata(&p).expect("meta").permissions().mode() & 0o777,
            0o640
        );

        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&p, &link).expect("symlink");
        write_atomic(&link, b"[]").expect("write through link");
        assert!(
            fs::symlink_metadata(&link)
                .expect("meta")
                .file_type()
                .is_symlink(),
            "the link stays a link"
        );
        assert_eq!(fs::read_to_string(&p).expect("read"), "[]");

        let names: Vec<String> = fs::read_dir(dir.path().join("a/b"))
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["new.json"]);
    }

    #[test]
    fn remove_file_cleans_per_account_folders_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cfg = dir.path();
        let p = cfg.join("kiro/u1/u1.json");
        write_atomic(&p, b"{}").expect("write");
        remove_file(&p, cfg).expect("remove");
        assert!(!cfg.join("kiro/u1").exists(), "the per-account folder goes");
        assert!(cfg.join("kiro").exists(), "the provider dir stays");
        remove_file(&p, cfg).expect("removing a missing file is fine");
    }
}
