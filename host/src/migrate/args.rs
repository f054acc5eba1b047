//! The command-line arguments of `migrate`, `export` and `init` (clap; `cli.rs` parses and
//! dispatches them).

use std::path::PathBuf;

use clap::Args;

use crate::cli::StorageArgs;
use crate::config::Overrides;

const MIGRATE_AFTER_HELP: &str = "\
Sources and targets (SPEC):
  file:DIR                     an AIClient-2-API configs/ directory (the file backend)
  redis://[user:pass@]host[:port][/db][?prefix=KEY_PREFIX]
  rediss://…                   the same over TLS
  memory:                      the memory backend; only as a --dry-run target: checks that
                               the source reads completely, writes nothing

Without --to the target is the configured backend (aiclient.toml, REDIS_URL, REDIS_* …).

What is imported: provider_pools.json (every provider type and account), each account's
token file (found through its credential-path field, relative paths resolved against the
config dir's parent, stored under the account's uuid), config.json, pwd (stored as a hash;
a legacy plaintext password is hashed), token-store.json (unexpired sessions, re-keyed by the
SHA-256 of the token, expiring when they would have), usage-cache.json and plugins.json;
then meta (schema version, time, source).

Without --force nothing that exists in the target is changed: a second run changes nothing,
and accounts new to an existing provider type are added.

--force overwrites, where the target's content differs from the source's: the service config
(config.json), each account's configuration fields (everything but its live state), tokens
(only use it when the files are newer than the target: a refreshed token in the target is
replaced), the admin password, sessions with the same key, the usage cache and plugin
states. It NEVER overwrites an existing account's live state (usageCount, errorCount,
refreshCount, isHealthy, isDisabled, needsRefresh, lastUsed, lastErrorTime,
lastErrorMessage, scheduledRecoveryTime, lastHealthCheckTime, lastHealthCheckModel), and
nothing is ever deleted from the target.

Every run reads everything back and compares it item by item; any difference is listed.
Exit codes: 0 everything migrated and verified; 1 something failed (listed); 2 bad invocation.";

/// `aiclient migrate`.
#[derive(Args, Debug)]
#[command(after_long_help = MIGRATE_AFTER_HELP)]
pub struct MigrateArgs {
    /// Source AIClient-2-API configs directory (same as --from file:DIR)
    /// [default: the configured config dir, ./configs]
    #[arg(long, value_name = "DIR", conflicts_with = "from")]
    pub config_dir: Option<PathBuf>,
    /// Target Redis URL (redis:// or rediss://, optionally ?prefix=KEY_PREFIX)
    /// [default: the configured backend]
    #[arg(long, value_name = "URL", conflicts_with = "to")]
    pub redis_url: Option<String>,
    /// Source SPEC: file:DIR, redis://… or rediss://…[?prefix=…]
    #[arg(long, value_name = "SPEC")]
    pub from: Option<String>,
    /// Target SPEC: file:DIR, redis://…, rediss://…[?prefix=…] or memory: (with --dry-run)
    #[arg(long, value_name = "SPEC")]
    pub to: Option<String>,
    /// List what would be created, changed or left alone, and write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Overwrite target items whose content differs: config, account configuration fields,
    /// tokens, admin password, sessions, usage cache, plugin states. Never an existing
    /// account's live state (counters, health, flags, times); never deletes anything
    #[arg(long)]
    pub force: bool,
    /// Migrate accounts whose token file is missing without their token, and exit 0 (they are
    /// still reported)
    #[arg(long)]
    pub allow_missing_tokens: bool,
    /// Directory plugin names are resolved in [default: the executable's directory]
    #[arg(long, value_name = "DIR")]
    pub plugin_dir: Option<PathBuf>,
}

impl MigrateArgs {
    /// What these flags change in the loaded configuration (`--redis-url` selects the
    /// configured Redis, exactly as for `serve`).
    pub fn overrides(&self) -> Overrides {
        Overrides {
            redis_url: self.redis_url.clone(),
            plugin_dir: self.plugin_dir.clone(),
            ..Overrides::default()
        }
    }
}

const EXPORT_AFTER_HELP: &str = "\
Writes config.json, provider_pools.json, every account's token file at the path its
credential-path field references (./configs/<rest> is written to DIR/<rest>; a reference that
would lead outside DIR is rewritten to a file inside it, and reported), pwd (the password hash),
token-store.json (live sessions), usage-cache.json, plugins.json and aiclient-meta.json.

The snapshot is written to a staging directory next to DIR, read back and compared, then moved
into place: an empty or missing DIR is replaced in one rename; with --force, each file is
renamed over its old version (other files already in DIR are left as they are).

Exit codes: 0 exported and verified; 1 failure (nothing is left half-written); 2 bad invocation.";

/// `aiclient export`.
#[derive(Args, Debug)]
#[command(after_long_help = EXPORT_AFTER_HELP)]
pub struct ExportArgs {
    /// Directory to write the configs/ files into (refused if not empty, unless --force)
    #[arg(long, value_name = "DIR")]
    pub output_dir: PathBuf,
    /// Source Redis URL (redis:// or rediss://, optionally ?prefix=KEY_PREFIX)
    /// [default: the configured backend]
    #[arg(long, value_name = "URL", conflicts_with = "from")]
    pub redis_url: Option<String>,
    /// Source SPEC: file:DIR, redis://…, rediss://…[?prefix=…]
    #[arg(long, value_name = "SPEC")]
    pub from: Option<String>,
    /// Write into a non-empty DIR: the exported files replace files of the same name; other
    /// files in DIR stay
    #[arg(long)]
    pub force: bool,
    /// Directory plugin names are resolved in [default: the executable's directory]
    #[arg(long, value_name = "DIR")]
    pub plugin_dir: Option<PathBuf>,
}

impl ExportArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            redis_url: self.redis_url.clone(),
            plugin_dir: self.plugin_dir.clone(),
            ..Overrides::default()
        }
    }
}

const INIT_AFTER_HELP: &str = "\
Writes a default service config with a generated client API key (REQUIRED_API_KEY), empty
provider pools, the default plugin states (default-auth enabled; api-potluck, ai-monitor,
model-usage-stats and ip-node-proxy disabled), a generated web-UI admin password (stored as a
PBKDF2 hash) and meta. The password and the API key are printed once, here, and never again.

A backend that already holds data (a config, accounts, a password, plugin states, a usage
cache or meta) is refused. --force replaces the config (with the defaults and a new API key),
the admin password and the default plugins' states, and ends every web-UI session; accounts,
tokens, counters and the usage cache are kept.

Exit codes: 0 initialised and verified; 1 refused or failed; 2 bad invocation.";

/// `aiclient init`.
#[derive(Args, Debug)]
#[command(after_long_help = INIT_AFTER_HELP)]
pub struct InitArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Re-initialise a backend that holds data: replaces the config, API key, admin password
    /// and default plugin states, ends sessions; keeps accounts, tokens and counters
    #[arg(long)]
    pub force: bool,
}
