//! Finding and loading plugin libraries.
//!
//! Every library goes through [`open`]: dlopen via `lib_header_from_path`, a look at the root
//! module's constants (which kind of plugin, which SDK version) *before* anything in the
//! library runs, then `init_root_module` (abi_stable's layout check). `RootModule::load_from_file`
//! is never used: it caches the first module loaded per type, so loading the redis backend
//! after the memory one silently returned the memory one (measured in the prototype).
//!
//! Every failure is one line naming the file and the cause. abi_stable's layout mismatch
//! reports run to 1,100–5,900 lines; [`summarize_abi_error`] keeps the last `Error:` block and
//! the field path, and the whole dump goes to the debug log.

use std::path::{Path, PathBuf};

use abi_stable::library::{LibHeader, LibraryError, RootModule, lib_header_from_path};
use abi_stable::sabi_types::VersionNumber;
use aiclient_sdk::provider::ProviderModRef;
use aiclient_sdk::storage::StorageModRef;
use aiclient_sdk::{PROVIDER_BASE_NAME, PluginInfo, SDK_VERSION, STORAGE_BASE_NAME};

/// The two plugin kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Storage,
    Provider,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Storage => "storage",
            Kind::Provider => "provider",
        }
    }
    fn noun(self) -> &'static str {
        match self {
            Kind::Storage => "a storage backend",
            Kind::Provider => "a provider plugin",
        }
    }
    /// File-name prefix of the in-tree plugins of this kind (`libaiclient_backend_redis.so`).
    fn crate_prefix(self) -> &'static str {
        match self {
            Kind::Storage => "aiclient_backend_",
            Kind::Provider => "aiclient_provider_",
        }
    }
    fn from_base_name(name: &str) -> Option<Self> {
        match name {
            STORAGE_BASE_NAME => Some(Kind::Storage),
            PROVIDER_BASE_NAME => Some(Kind::Provider),
            _ => None,
        }
    }
}

/// Why a plugin could not be loaded. `Display` is the one line operators see.
#[derive(Debug, thiserror::Error)]
#[error("cannot load plugin {}: {cause}", path.display())]
pub struct LoadError {
    pub path: PathBuf,
    pub cause: String,
}

fn fail(path: &Path, cause: impl Into<String>) -> LoadError {
    LoadError {
        path: path.to_path_buf(),
        cause: cause.into(),
    }
}

/// What a library says about itself before it is initialised.
#[derive(Debug, Clone)]
pub struct Inspected {
    pub path: PathBuf,
    pub kind: Kind,
    pub sdk_version: String,
}

/// The candidate files for a plugin name, in the order they are tried: `<dir>/lib<name>.so`,
/// then the in-tree naming `<dir>/libaiclient_backend_<name>.so` (or `_provider_`). A value
/// containing a `/` or ending in the library suffix is a path and used as is.
pub fn candidates(dir: &Path, name_or_path: &str, kind: Kind) -> Vec<PathBuf> {
    let (pre, suf) = (std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    if name_or_path.contains(std::path::MAIN_SEPARATOR) || name_or_path.ends_with(suf) {
        return vec![PathBuf::from(name_or_path)];
    }
    let name = name_or_path.replace('-', "_");
    let mut v = vec![dir.join(format!("{pre}{name}{suf}"))];
    if !name.starts_with(kind.crate_prefix()) {
        v.push(dir.join(format!("{pre}{}{name}{suf}", kind.crate_prefix())));
    }
    v
}

/// The first existing candidate, or an error listing what was tried.
pub fn resolve(dir: &Path, name_or_path: &str, kind: Kind) -> Result<PathBuf, LoadError> {
    let c = candidates(dir, name_or_path, kind);
    if let Some(p) = c.iter().find(|p| p.is_file()) {
        return Ok(p.clone());
    }
    let tried: Vec<String> = c.iter().map(|p| p.display().to_string()).collect();
    Err(fail(
        &c[0],
        format!("file not found (tried {})", tried.join(", ")),
    ))
}

/// Opens the library and reads its root module's constants, without running its code.
pub fn open(path: &Path) -> Result<(&'static LibHeader, Inspected), LoadError> {
    if !path.exists() {
        return Err(fail(path, "file not found"));
    }
    let header = lib_header_from_path(path).map_err(|e| match e {
        LibraryError::OpenError { err, .. } => {
            fail(path, format!("not a loadable library ({err})"))
        }
        LibraryError::GetSymbolError { .. } => fail(
            path,
            "not an aiclient plugin (the library exports no abi_stable root module)",
        ),
        other => fail(
            path,
            format!(
                "incompatible abi_stable library header: {}",
                one_line(&other)
            ),
        ),
    })?;
    let consts = header.root_mod_consts();
    let base = consts.base_name().as_str();
    let Some(kind) = Kind::from_base_name(base) else {
        return Err(fail(
            path,
            format!("not an aiclient plugin (its root module is {base:?})"),
        ));
    };
    let v = consts.version_strings();
    let sdk_version = v.version.as_str().to_string();
    Ok((
        header,
        Inspected {
            path: path.to_path_buf(),
            kind,
            sdk_version,
        },
    ))
}

/// A plugin may load if its SDK has this host's major version and, while in 0.x, its minor.
pub fn check_sdk_version(path: &Path, plugin: &str) -> Result<(), LoadError> {
    let parse = |s: &str| -> Option<VersionNumber> {
        let mut it = s.split('.').map(|p| p.parse::<u32>().ok());
        Some(VersionNumber {
            major: it.next()??,
            minor: it.next()??,
            patch: it.next()??,
        })
    };
    let host = parse(SDK_VERSION).expect("the SDK's own version parses");
    let Some(p) = parse(plugin) else {
        return Err(fail(path, format!("unreadable SDK version {plugin:?}")));
    };
    let compatible = host.major == p.major && (host.major != 0 || host.minor == p.minor);
    if compatible {
        Ok(())
    } else {
        let series = if host.major == 0 {
            format!("0.{}.x", host.minor)
        } else {
            format!("{}.x", host.major)
        };
        Err(fail(
            path,
            format!(
                "incompatible SDK version: built against aiclient-sdk {plugin}, this host needs {series}; rebuild the plugin against aiclient-sdk {SDK_VERSION}"
            ),
        ))
    }
}

fn init<M: RootModule>(
    header: &'static LibHeader,
    info: &Inspected,
    want: Kind,
) -> Result<M, LoadError> {
    if info.kind != want {
        return Err(fail(
            &info.path,
            format!(
                "wrong plugin kind: it is {}, expected {}",
                info.kind.noun(),
                want.noun()
            ),
        ));
    }
    check_sdk_version(&info.path, &info.sdk_version)?;
    header.init_root_module::<M>().map_err(|e| {
        let full = e.to_string();
        tracing::debug!(path = %info.path.display(), "abi_stable report:\n{full}");
        let cause = match e {
            LibraryError::AbiInstability(_) => {
                format!(
                    "incompatible plugin interface: {}",
                    summarize_abi_error(&full)
                )
            }
            other => one_line(&other),
        };
        fail(&info.path, cause)
    })
}

/// A storage backend library, checked and initialised.
pub struct LoadedStorage {
    pub module: StorageModRef,
    pub info: PluginInfo,
    pub inspected: Inspected,
}

/// A provider plugin library, checked and initialised.
pub struct LoadedProvider {
    pub module: ProviderModRef,
    pub info: PluginInfo,
    pub inspected: Inspected,
}

/// Loads a storage backend library and installs the log bridge in it.
pub fn load_storage(path: &Path) -> Result<LoadedStorage, LoadError> {
    let (header, inspected) = open(path)?;
    let module: StorageModRef = init(header, &inspected, Kind::Storage)?;
    let info = (module.info())();
    (module.init())(super::logsink::host_context(info.name.as_str()));
    Ok(LoadedStorage {
        module,
        info,
        inspected,
    })
}

/// Loads a provider plugin library and installs the log bridge in it.
pub fn load_provider(path: &Path) -> Result<LoadedProvider, LoadError> {
    let (header, inspected) = open(path)?;
    let module: ProviderModRef = init(header, &inspected, Kind::Provider)?;
    let info = (module.info())();
    (module.init())(super::logsink::host_context(info.name.as_str()));
    Ok(LoadedProvider {
        module,
        info,
        inspected,
    })
}

/// Every `lib*.so` in `dir`, sorted by file name.
pub fn scan(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let (pre, suf) = (std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(pre) && n.ends_with(suf))
        })
        .collect();
    v.sort();
    Ok(v)
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The gist of an abi_stable layout-mismatch report: the field path leading to the mismatch
/// and its last `Error:` block (`Error:too many fields / Expected: 9 / Found: 8`), one line.
pub fn summarize_abi_error(report: &str) -> String {
    let lines: Vec<&str> = report.lines().map(str::trim).collect();
    let Some(last_err) = lines.iter().rposition(|l| l.starts_with("Error:")) else {
        return lines
            .iter()
            .rev()
            .find(|l| !l.is_empty())
            .unwrap_or(&"")
            .to_string();
    };
    let mut block = vec![
        lines[last_err]
            .trim_start_matches("Error:")
            .trim()
            .to_string(),
    ];
    for l in &lines[last_err + 1..] {
        if l.is_empty() || l.starts_with("Error:") {
            break;
        }
        // abi_stable puts a label and its value on separate lines ("Expected:" / "u64").
        match block.last_mut() {
            Some(prev) if prev.ends_with(':') => {
                prev.push(' ');
                prev.push_str(l);
            }
            _ => block.push(l.to_string()),
        }
    }
    let mut path: Vec<&str> = Vec::new();
    for f in lines[..last_err]
        .iter()
        .filter_map(|l| l.strip_prefix("field_name:"))
        .map(str::trim)
    {
        if !f.is_empty() && !f.chars().all(|c| c.is_ascii_digit()) && !path.contains(&f) {
            path.push(f);
        }
    }
    let mut out = block.join(" / ");
    if !path.is_empty() {
        out = format!("{out} (at {})", path.join(" → "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_report_is_summarized_to_its_last_error() {
        let report = "lots of layout\nfield_name: create\n  field_name: vtable\nfield_name:incr\n\
                      field_name: 0\nfield_name: vtable\n\
                      Error:mismatched type\nExpected:\nu64\nFound: i64\n\nmore noise";
        assert_eq!(
            summarize_abi_error(report),
            "mismatched type / Expected: u64 / Found: i64 (at create → vtable → incr)"
        );
    }

    #[test]
    fn names_resolve_to_lib_files_and_paths_stay_paths() {
        let dir = Path::new("/plugins");
        let c = candidates(dir, "redis", Kind::Storage);
        assert_eq!(c[0], Path::new("/plugins/libredis.so"));
        assert_eq!(c[1], Path::new("/plugins/libaiclient_backend_redis.so"));
        assert_eq!(
            candidates(dir, "./x/libfoo.so", Kind::Provider),
            vec![PathBuf::from("./x/libfoo.so")]
        );
    }

    #[test]
    fn sdk_versions_follow_the_0_minor_rule() {
        let p = Path::new("x");
        assert!(check_sdk_version(p, SDK_VERSION).is_ok());
        let err = check_sdk_version(p, "0.0.7").unwrap_err().to_string();
        assert!(err.contains("built against aiclient-sdk 0.0.7"), "{err}");
        assert!(!err.contains('\n'));
    }
}
