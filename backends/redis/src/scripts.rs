//! The Lua scripts behind every compound operation. Each runs atomically on the server, touches
//! only keys passed in `KEYS` (all of one hash slot, see [`crate::keys`]) and publishes its
//! change-feed message itself, so a write and its announcement cost one round trip.
//! `redis::Script` sends `EVALSHA` and falls back to `EVAL` (which caches the script) on
//! `NOSCRIPT`, e.g. after a server restart or `SCRIPT FLUSH`.
//!
//! Rules every script keeps:
//! - stored JSON (account config, tokens) is an opaque string: Lua never `cjson`-decodes it
//!   (the Node fork's cjson round trip turned `[]` into `{}` and rounded 16-digit integers);
//! - values that are times or counts are written from the `ARGV` strings Rust formatted, or by
//!   `HINCRBY`, never from a Lua number (Lua numbers are doubles);
//! - a missing account is reported (`false`/`-1`), never created.

use std::sync::LazyLock;

use aiclient_sdk::storage::field;
use redis::Script;

use crate::keys::ACCOUNT_FIELDS;

/// The fields `update_state` returns: every account field but `config`.
fn state_fields_lua() -> String {
    ACCOUNT_FIELDS[1..]
        .iter()
        .map(|f| format!("'{f}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn account_fields_lua() -> String {
    ACCOUNT_FIELDS
        .iter()
        .map(|f| format!("'{f}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `StateUpdate::apply`, step by step, on the account hash.
///
/// KEYS[1] account hash.
/// ARGV: 1 at, 2 usage_delta, 3 error_delta, 4 refresh_delta, 5 has error_message ('1'/'0'),
/// 6 error_message, 7 error_window_ms, 8 unhealthy_at, 9 healthy ('' = unchanged, '1', '0'),
/// 10 disabled (same), 11 needs_refresh (same), 12 has scheduled_recovery_time, 13 it,
/// 14 has health_check_model, 15 it, 16 clear_errors, 17 reset_counters, 18 touch,
/// 19 channel, 20 change message.
/// Returns `false` (nil) if the account does not exist, else the state fields after the update.
pub static UPDATE_STATE: LazyLock<Script> = LazyLock::new(|| Script::new(&update_state_src()));

fn update_state_src() -> String {
    format!(
        r#"
local k = KEYS[1]
if redis.call('EXISTS', k) == 0 then return false end
local a = ARGV
local at = a[1]
local atn = tonumber(at)
local before = tonumber(redis.call('HGET', k, 'present') or '0')
local present = before
local function mark(bits) present = bit.bor(present, bits) end
-- timestamps only move forward: keep the stored one if it is later than `at`
local function later(f)
  local cur = redis.call('HGET', k, f)
  if (not cur) or tonumber(cur) <= atn then redis.call('HSET', k, f, at) end
end
-- 1. reset_counters, then clear_errors
if a[17] == '1' then
  redis.call('HSET', k, 'usageCount', '0', 'errorCount', '0', 'refreshCount', '0')
  mark({usage} + {error} + {refresh})
end
if a[16] == '1' then
  redis.call('HSET', k, 'errorCount', '0', 'refreshCount', '0', 'needsRefresh', '0')
  redis.call('HDEL', k, 'lastErrorTime', 'lastErrorMessage')
  mark({error} + {refresh} + {lerrt} + {lem} + {needs})
end
-- 2. the error window restarts errorCount (present bits unchanged, as in apply)
local ed = tonumber(a[3])
local window = tonumber(a[7])
if window > 0 and ed > 0 then
  local t = redis.call('HGET', k, 'lastErrorTime')
  if t and atn - tonumber(t) > window then redis.call('HSET', k, 'errorCount', '0') end
end
-- 3. deltas
local ud = tonumber(a[2])
if ud ~= 0 then redis.call('HINCRBY', k, 'usageCount', a[2]); mark({usage}) end
if ud ~= 0 or a[18] == '1' then later('lastUsed'); mark({used}) end
if ed ~= 0 then redis.call('HINCRBY', k, 'errorCount', a[3]); mark({error}) end
if ed ~= 0 or a[5] == '1' then later('lastErrorTime'); mark({lerrt}) end
if a[5] == '1' then redis.call('HSET', k, 'lastErrorMessage', a[6]); mark({lem}) end
if tonumber(a[4]) ~= 0 then redis.call('HINCRBY', k, 'refreshCount', a[4]); mark({refresh}) end
-- 4. healthy (true also clears the recovery time), then the unhealthy threshold
if a[9] ~= '' then
  redis.call('HSET', k, 'isHealthy', a[9]); mark({healthy})
  if a[9] == '1' then redis.call('HDEL', k, 'scheduledRecoveryTime') end
end
local ua = tonumber(a[8])
if ua > 0 and tonumber(redis.call('HGET', k, 'errorCount') or '0') >= ua then
  redis.call('HSET', k, 'isHealthy', '0'); mark({healthy})
end
-- 5. recovery time, flags, health check
if a[12] == '1' then redis.call('HSET', k, 'scheduledRecoveryTime', a[13]); mark({srt}) end
if a[10] ~= '' then redis.call('HSET', k, 'isDisabled', a[10]); mark({disabled}) end
if a[11] ~= '' then redis.call('HSET', k, 'needsRefresh', a[11]); mark({needs}) end
if a[14] == '1' then
  redis.call('HSET', k, 'lastHealthCheckTime', at, 'lastHealthCheckModel', a[15])
  mark({hct} + {hcm})
end
if present ~= before then redis.call('HSET', k, 'present', present) end
redis.call('PUBLISH', a[19], a[20])
return redis.call('HMGET', k, {fields})
"#,
        usage = field::USAGE_COUNT,
        error = field::ERROR_COUNT,
        refresh = field::REFRESH_COUNT,
        healthy = field::IS_HEALTHY,
        disabled = field::IS_DISABLED,
        needs = field::NEEDS_REFRESH,
        used = field::LAST_USED,
        lerrt = field::LAST_ERROR_TIME,
        lem = field::LAST_ERROR_MESSAGE,
        srt = field::SCHEDULED_RECOVERY_TIME,
        hct = field::LAST_HEALTH_CHECK_TIME,
        hcm = field::LAST_HEALTH_CHECK_MODEL,
        fields = state_fields_lua(),
    )
}

/// A consistent snapshot of one pool in one round trip (the selection path reads pools).
/// KEYS[1] pool index. ARGV[1] the pool's account-key prefix (`P{pool:<t>}:account:`).
/// Returns a flat array: per account in index order, its uuid then its `ACCOUNT_FIELDS`.
///
/// The one script that builds key names: from the index's members, under the declared key's
/// own `{pool:<t>}` tag, so every key it reads is in the declared key's slot (Redis Cluster
/// accepts that; what it refuses is a script crossing slots).
pub static READ_POOL: LazyLock<Script> = LazyLock::new(|| Script::new(&read_pool_src()));

fn read_pool_src() -> String {
    format!(
        r#"
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local out = {{}}
for _, u in ipairs(ids) do
  local row = redis.call('HMGET', ARGV[1] .. u, {fields})
  out[#out + 1] = u
  for j = 1, {n} do out[#out + 1] = row[j] end
end
return out
"#,
        fields = account_fields_lua(),
        n = ACCOUNT_FIELDS.len(),
    )
}

/// Add-if-absent. KEYS: 1 account hash, 2 pool index, 3 pool seq.
/// ARGV: 1 uuid, 2 channel, 3 message, 4.. the hash's field/value pairs.
/// Returns 1 if added, 0 if the uuid exists.
pub static ADD_ACCOUNT: LazyLock<Script> = LazyLock::new(|| Script::new(ADD_ACCOUNT_SRC));

const ADD_ACCOUNT_SRC: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local seq = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], 'rev', seq, unpack(ARGV, 4))
redis.call('ZADD', KEYS[2], seq, ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"#;

/// Config compare-and-set on the revision read before the merge patch was applied in Rust.
/// KEYS: 1 account hash, 2 pool seq. ARGV: 1 expected rev, 2 new config, 3 channel, 4 message.
/// Returns `{-1}` if the account is gone, `{0}` if the config changed meanwhile (retry),
/// else `{1, <ACCOUNT_FIELDS…>}` after the write. Revisions come from the pool's seq counter,
/// so a deleted and re-added account never reuses one.
pub static UPDATE_CONFIG: LazyLock<Script> = LazyLock::new(|| Script::new(&update_config_src()));

fn update_config_src() -> String {
    format!(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {{-1}} end
if (redis.call('HGET', KEYS[1], 'rev') or '') ~= ARGV[1] then return {{0}} end
local seq = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'config', ARGV[2], 'rev', seq)
redis.call('PUBLISH', ARGV[3], ARGV[4])
local r = redis.call('HMGET', KEYS[1], {fields})
table.insert(r, 1, 1)
return r
"#,
        fields = account_fields_lua(),
    )
}

/// KEYS: 1 account hash, 2 pool index, 3 token, 4 lock. ARGV: 1 uuid, 2 channel, 3 message.
/// Returns 1 if the account existed (and publishes), else 0.
pub static DELETE_ACCOUNT: LazyLock<Script> = LazyLock::new(|| Script::new(DELETE_ACCOUNT_SRC));

const DELETE_ACCOUNT_SRC: &str = r#"
local n = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3], KEYS[4])
if n == 1 then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return n
"#;

/// Stores a token for an existing account. KEYS: 1 account hash, 2 token hash.
/// ARGV: 1 token JSON, 2 has refresh token ('1'/'0'), 3 refresh token, 4 channel, 5 message.
/// Returns -1 if the account does not exist, else 1. The token key is recreated, so it never
/// carries a TTL.
pub static SET_TOKEN: LazyLock<Script> = LazyLock::new(|| Script::new(SET_TOKEN_SRC));

const SET_TOKEN_SRC: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('DEL', KEYS[2])
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[2], 'json', ARGV[1], 'refresh', ARGV[3])
else
  redis.call('HSET', KEYS[2], 'json', ARGV[1])
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"#;

/// Token compare-and-set on the stored refresh token (a plain string compare; an absent token
/// or one without a refresh token compares as ''). KEYS: 1 account hash, 2 token hash.
/// ARGV: 1 expected refresh token, 2 new token JSON, 3 has refresh ('1'/'0'), 4 new refresh
/// token, 5 channel, 6 message. Returns `{-1}` (no account), `{1}` (swapped) or
/// `{0, <current token JSON or nil>}`.
pub static CAS_TOKEN: LazyLock<Script> = LazyLock::new(|| Script::new(CAS_TOKEN_SRC));

const CAS_TOKEN_SRC: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local cur = redis.call('HGET', KEYS[2], 'refresh') or ''
if cur ~= ARGV[1] then return {0, redis.call('HGET', KEYS[2], 'json')} end
redis.call('DEL', KEYS[2])
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[2], 'json', ARGV[2], 'refresh', ARGV[4])
else
  redis.call('HSET', KEYS[2], 'json', ARGV[2])
end
redis.call('PUBLISH', ARGV[5], ARGV[6])
return {1}
"#;

/// Acquire or extend. KEYS: 1 lock. ARGV: 1 owner, 2 ttl ms. Returns 1 if now held by owner.
/// An expired lock is a missing key (Redis drops it at its TTL).
pub static ACQUIRE_LOCK: LazyLock<Script> = LazyLock::new(|| Script::new(ACQUIRE_LOCK_SRC));

const ACQUIRE_LOCK_SRC: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

/// Compare-and-delete. KEYS: 1 lock. ARGV: 1 owner. Returns 1 if it was the owner's.
pub static RELEASE_LOCK: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE_LOCK_SRC));

const RELEASE_LOCK_SRC: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Deletes KEYS[1] (and removes ARGV[3] from the index ZSET KEYS[2], if given); publishes
/// ARGV[2] on channel ARGV[1] only if something was deleted. Returns 1 or 0.
pub static DELETE_AND_PUBLISH: LazyLock<Script> =
    LazyLock::new(|| Script::new(DELETE_AND_PUBLISH_SRC));

const DELETE_AND_PUBLISH_SRC: &str = r#"
local n = redis.call('DEL', KEYS[1])
if KEYS[2] then redis.call('ZREM', KEYS[2], ARGV[3]) end
if n == 1 then redis.call('PUBLISH', ARGV[1], ARGV[2]) end
return n
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> Vec<String> {
        let mut v = vec![update_state_src(), update_config_src(), read_pool_src()];
        v.extend(
            [
                ADD_ACCOUNT_SRC,
                DELETE_ACCOUNT_SRC,
                SET_TOKEN_SRC,
                CAS_TOKEN_SRC,
                ACQUIRE_LOCK_SRC,
                RELEASE_LOCK_SRC,
                DELETE_AND_PUBLISH_SRC,
            ]
            .map(str::to_string),
        );
        v
    }

    #[test]
    fn scripts_never_decode_json_nor_scan() {
        for src in sources() {
            for banned in ["cjson", "cmsgpack", "'KEYS'", "'SCAN'", "tostring("] {
                assert!(!src.contains(banned), "{banned} in {src}");
            }
        }
    }

    #[test]
    fn update_state_returns_the_state_fields_in_order() {
        let src = update_state_src();
        assert!(
            src.contains("'present', 'usageCount', 'errorCount'"),
            "{src}"
        );
        assert!(
            src.ends_with("'lastHealthCheckTime', 'lastHealthCheckModel')\n"),
            "{src}"
        );
        assert!(src.contains(&format!("mark({})", field::USAGE_COUNT)));
    }
}
