//! Kiro credentials: reading the token JSON (camelCase, the shape the Kiro IDE and the original
//! project write), the upstream URLs per account and region, the machine id, the token's
//! expiry, and the refresh exchange for `social` and IdC/`builder-id` accounts with the
//! write-back of its result into the same JSON shape.

use std::time::Duration;

use aiclient_provider_kit as kit;
use aiclient_sdk::account::format_time;
use aiclient_sdk::{ErrorCode, PluginError};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

pub const DEFAULT_REGION: &str = "us-east-1";
pub const DEFAULT_INFERENCE_URL: &str =
    "https://q.{{region}}.amazonaws.com/generateAssistantResponse";
pub const DEFAULT_SOCIAL_REFRESH_URL: &str =
    "https://prod.{{region}}.auth.desktop.kiro.dev/refreshToken";
pub const DEFAULT_IDC_REFRESH_URL: &str = "https://oidc.{{region}}.amazonaws.com/token";
/// The refresh exchange's timeout, as the original.
pub const REFRESH_TIMEOUT: Duration = Duration::from_secs(15);
/// `expiresIn` when the refresh answer has none.
const DEFAULT_EXPIRES_IN: i64 = 3600;
/// A year: longer lifetimes are taken as a year, so `expiresAt` stays a valid date.
const MAX_EXPIRES_IN: i64 = 366 * 86_400;
const MAX_REFRESH_BODY: usize = 1 << 20;

pub const SDK_VERSION: &str = "1.0.34";
pub const KIRO_VERSION: &str = "0.11.63";
const NODE_VERSION: &str = "22.21.1";

/// How the account logs in. Anything but `social` refreshes through AWS SSO-OIDC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    Social,
    /// `IdC`, `builder-id` or any other value (kept for logs).
    Idc(String),
}

/// The fields of a credential the plugin uses; the JSON itself is kept for the write-back.
#[derive(Clone, Debug)]
pub struct Creds {
    pub json: Map<String, Value>,
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    pub auth: AuthMethod,
    pub region: String,
    pub idc_region: String,
    pub profile_arn: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

fn str_of(m: &Map<String, Value>, k: &str) -> Option<String> {
    m.get(k)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl Creds {
    pub fn parse(token: &str) -> Result<Self, PluginError> {
        let v: Value = serde_json::from_str(token).map_err(|e| {
            PluginError::invalid_input(format!("the Kiro credential is not JSON: {e}"))
        })?;
        let Value::Object(json) = v else {
            return Err(PluginError::invalid_input(
                "the Kiro credential is not a JSON object",
            ));
        };
        let client_id = str_of(&json, "clientId");
        let client_secret = str_of(&json, "clientSecret");
        // Without `authMethod`: IdC when both client credentials are present, else social
        // (the inferred value is never written back).
        let auth = match str_of(&json, "authMethod") {
            Some(m) if m == "social" => AuthMethod::Social,
            Some(m) => AuthMethod::Idc(m),
            None if client_id.is_some() && client_secret.is_some() => AuthMethod::Idc("IdC".into()),
            None => AuthMethod::Social,
        };
        let region = str_of(&json, "region").unwrap_or_else(|| DEFAULT_REGION.to_string());
        let idc_region = str_of(&json, "idcRegion").unwrap_or_else(|| region.clone());
        Ok(Self {
            access_token: str_of(&json, "accessToken"),
            refresh_token: str_of(&json, "refreshToken"),
            profile_arn: str_of(&json, "profileArn"),
            auth,
            region,
            idc_region,
            client_id,
            client_secret,
            json,
        })
    }

    pub fn is_social(&self) -> bool {
        self.auth == AuthMethod::Social
    }
}

/// When the credential expires (ms since the epoch): `expiresAt` as ISO-8601 (or a number of
/// ms). A credential with a refresh token but no access token counts as long expired, so the
/// host refreshes it before the first call. 0 = unknown.
pub fn expiry_ms(token: &str) -> i64 {
    let Ok(Value::Object(m)) = serde_json::from_str::<Value>(token) else {
        return 0;
    };
    if str_of(&m, "accessToken").is_none() && str_of(&m, "refreshToken").is_some() {
        return 1;
    }
    match m.get("expiresAt") {
        Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s.trim())
            .map(|t| t.timestamp_millis())
            .unwrap_or(0),
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0).max(0),
        _ => 0,
    }
}

/// An endpoint: the account's override (`KIRO_BASE_URL`, `KIRO_REFRESH_URL`,
/// `KIRO_REFRESH_IDC_URL`; empty = default) or the default, with `{{region}}` filled in.
pub fn endpoint(account: &Value, key: &str, default: &str, region: &str) -> String {
    let template = kit::account_str(account, key).unwrap_or_else(|| default.to_string());
    template.trim().replace("{{region}}", region)
}

/// The inference URL. A base given without a path gets `/generateAssistantResponse`.
pub fn inference_url(account: &Value, region: &str) -> String {
    let url = endpoint(account, "KIRO_BASE_URL", DEFAULT_INFERENCE_URL, region);
    let after_scheme = url.split_once("://").map(|(_, r)| r).unwrap_or(&url);
    match after_scheme.find('/') {
        Some(i) if !after_scheme[i..].trim_end_matches('/').is_empty() => url,
        _ => kit::join_url(&url, "generateAssistantResponse"),
    }
}

/// Lower-case hex SHA-256 of the first of: the pool node's uuid, `profileArn`, `clientId`,
/// or a constant.
pub fn machine_id(node_uuid: Option<&str>, creds: &Creds) -> String {
    let seed = node_uuid
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .or_else(|| creds.profile_arn.clone())
        .or_else(|| creds.client_id.clone())
        .unwrap_or_else(|| "KIRO_DEFAULT_MACHINE".to_string());
    hex::encode(Sha256::digest(seed.as_bytes()))
}

fn os_release() -> &'static str {
    static R: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    R.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty() && s.len() < 64)
            .unwrap_or_else(|| "unknown".to_string())
    })
}

/// `x-amz-user-agent` and `user-agent` as the Kiro IDE sends them.
pub fn user_agents(machine: &str) -> (String, String) {
    // Rust's OS names are the IDE's (`macos`, `windows`, else the raw platform name).
    let platform = std::env::consts::OS;
    let short = format!("aws-sdk-js/{SDK_VERSION} KiroIDE-{KIRO_VERSION}-{machine}");
    let long = format!(
        "aws-sdk-js/{SDK_VERSION} ua/2.1 os/{platform}#{} lang/js md/nodejs#{NODE_VERSION} api/codewhispererstreaming#{SDK_VERSION} m/E KiroIDE-{KIRO_VERSION}-{machine}",
        os_release()
    );
    (short, long)
}

/// Exchanges the refresh token and returns the credential JSON with `accessToken`,
/// `refreshToken` (when rotated), `expiresAt` and, for social accounts, `profileArn` replaced;
/// every other field is kept, in its order.
pub async fn refresh(
    account: &Value,
    node_uuid: &str,
    token: &str,
    proxy: Option<&str>,
) -> Result<String, PluginError> {
    let creds = Creds::parse(token)?;
    let refresh_token = creds
        .refresh_token
        .clone()
        .ok_or_else(|| PluginError::invalid_input("the Kiro credential has no refreshToken"))?;
    let client = kit::client(proxy)?;
    let (url, body) = match &creds.auth {
        AuthMethod::Social => (
            endpoint(
                account,
                "KIRO_REFRESH_URL",
                DEFAULT_SOCIAL_REFRESH_URL,
                &creds.region,
            ),
            json!({ "refreshToken": refresh_token }),
        ),
        AuthMethod::Idc(_) => {
            let (Some(id), Some(secret)) = (&creds.client_id, &creds.client_secret) else {
                return Err(PluginError::invalid_input(
                    "an IdC/builder-id Kiro credential needs clientId and clientSecret to refresh",
                ));
            };
            (
                endpoint(
                    account,
                    "KIRO_REFRESH_IDC_URL",
                    DEFAULT_IDC_REFRESH_URL,
                    &creds.idc_region,
                ),
                json!({ "refreshToken": refresh_token, "clientId": id, "clientSecret": secret, "grantType": "refresh_token" }),
            )
        }
    };
    let mut rb = client
        .post(&url)
        .header("content-type", "application/json")
        .timeout(REFRESH_TIMEOUT)
        .body(body.to_string());
    if !creds.is_social() {
        let (short, long) = user_agents(&machine_id(Some(node_uuid), &creds));
        rb = rb
            .header("accept", "application/json")
            .header("x-amz-user-agent", short)
            .header("user-agent", long);
    }
    let resp = rb.send().await.map_err(kit::transport_error)?;
    let status = resp.status().as_u16();
    let text = read_capped(resp, MAX_REFRESH_BODY).await?;
    if !(200..300).contains(&status) {
        let detail = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                let e = v.get("error").and_then(Value::as_str).map(str::to_string);
                let d = v
                    .get("error_description")
                    .or_else(|| v.get("message"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                match (e, d) {
                    (Some(e), Some(d)) => Some(format!("{e}: {d}")),
                    (e, d) => e.or(d),
                }
            })
            .unwrap_or_else(|| text.chars().take(300).collect());
        let msg = format!("Kiro token refresh failed with HTTP {status}: {detail}");
        return Err(match status {
            429 => PluginError::new(ErrorCode::RATE_LIMITED, msg),
            s if s >= 500 => PluginError::unavailable(msg),
            _ => PluginError::new(ErrorCode::UNAUTHORIZED, msg),
        });
    }
    let answer: Value = serde_json::from_str(&text).map_err(|e| {
        PluginError::unavailable(format!(
            "the Kiro token endpoint answered with invalid JSON: {e}"
        ))
    })?;
    apply_refresh(&creds, &answer, aiclient_sdk::account::now_ms())
}

/// Merges a refresh answer into the credential JSON (see [`refresh`]).
pub fn apply_refresh(creds: &Creds, answer: &Value, now_ms: i64) -> Result<String, PluginError> {
    let access = answer
        .get("accessToken")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            PluginError::new(
                ErrorCode::UNAUTHORIZED,
                "the Kiro token endpoint's answer has no accessToken",
            )
        })?;
    let expires_in = match answer.get("expiresIn") {
        Some(Value::Number(n)) => n.as_f64().map(|f| f as i64),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok().map(|f| f as i64),
        _ => None,
    }
    .filter(|n| *n >= 0)
    .unwrap_or(DEFAULT_EXPIRES_IN)
    .min(MAX_EXPIRES_IN);
    let mut out = creds.json.clone();
    out.insert("accessToken".into(), Value::String(access.to_string()));
    if let Some(rt) = answer
        .get("refreshToken")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        out.insert("refreshToken".into(), Value::String(rt.to_string()));
    }
    out.insert(
        "expiresAt".into(),
        Value::String(format_time(
            now_ms.saturating_add(expires_in.saturating_mul(1000)),
        )),
    );
    if creds.is_social()
        && let Some(arn) = answer
            .get("profileArn")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    {
        out.insert("profileArn".into(), Value::String(arn.to_string()));
    }
    Ok(Value::Object(out).to_string())
}

/// The body of a response, at most `cap` bytes (the rest is dropped).
pub async fn read_capped(resp: reqwest::Response, cap: usize) -> Result<String, PluginError> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    let mut s = resp.bytes_stream();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(kit::transport_error)?;
        let room = cap.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= cap {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_method_and_regions() {
        let c = Creds::parse(r#"{"accessToken":"a","refreshToken":"r","clientId":"c","clientSecret":"s","region":"eu-west-1"}"#).expect("parses");
        assert_eq!(
            c.auth,
            AuthMethod::Idc("IdC".into()),
            "inferred from the client credentials"
        );
        assert_eq!(c.idc_region, "eu-west-1", "idcRegion falls back to region");
        let c = Creds::parse(
            r#"{"refreshToken":"r","authMethod":"builder-id","idcRegion":"ap-south-1"}"#,
        )
        .expect("parses");
        assert_eq!(c.auth, AuthMethod::Idc("builder-id".into()));
        assert_eq!(
            (c.region.as_str(), c.idc_region.as_str()),
            ("us-east-1", "ap-south-1")
        );
        let c = Creds::parse(r#"{"refreshToken":"r","clientId":"c"}"#).expect("parses");
        assert!(c.is_social(), "one client credential is not enough for IdC");
        assert!(Creds::parse("[]").is_err());
    }

    #[test]
    fn urls_with_overrides_and_region_placeholders() {
        let acct = json!({"KIRO_BASE_URL": "", "KIRO_REFRESH_IDC_URL": "http://127.0.0.1:9/{{region}}/token"});
        assert_eq!(
            inference_url(&acct, "eu-central-1"),
            "https://q.eu-central-1.amazonaws.com/generateAssistantResponse"
        );
        assert_eq!(
            endpoint(
                &acct,
                "KIRO_REFRESH_IDC_URL",
                DEFAULT_IDC_REFRESH_URL,
                "ap-1"
            ),
            "http://127.0.0.1:9/ap-1/token"
        );
        assert_eq!(
            endpoint(
                &acct,
                "KIRO_REFRESH_URL",
                DEFAULT_SOCIAL_REFRESH_URL,
                "us-west-2"
            ),
            "https://prod.us-west-2.auth.desktop.kiro.dev/refreshToken"
        );
        assert_eq!(
            inference_url(&json!({"KIRO_BASE_URL": "http://h:1"}), "r"),
            "http://h:1/generateAssistantResponse"
        );
        assert_eq!(
            inference_url(
                &json!({"KIRO_BASE_URL": "http://h:1/x/generateAssistantResponse"}),
                "r"
            ),
            "http://h:1/x/generateAssistantResponse"
        );
    }

    #[test]
    fn expiry_from_iso_and_missing_access_token() {
        assert_eq!(
            expiry_ms(r#"{"accessToken":"a","expiresAt":"2026-05-30T04:00:00.000Z"}"#),
            1_780_113_600_000
        );
        assert_eq!(expiry_ms(r#"{"accessToken":"a"}"#), 0, "unknown");
        assert_eq!(
            expiry_ms(r#"{"refreshToken":"r","expiresAt":"2099-01-01T00:00:00.000Z"}"#),
            1,
            "no access token: refresh first"
        );
        assert_eq!(expiry_ms("not json"), 0);
    }

    #[test]
    fn refresh_answer_merges_in_place_keeping_shape() {
        let token = r#"{"accessToken":"old","refreshToken":"r1","profileArn":"arn:1","expiresAt":"2020-01-01T00:00:00.000Z","authMethod":"social","socialProvider":"Google","region":"us-east-1","extra":{"k":1}}"#;
        let c = Creds::parse(token).expect("parses");
        let out = apply_refresh(
            &c,
            &json!({"accessToken":"new","refreshToken":"r2","profileArn":"arn:2","expiresIn":7200}),
            1_000_000,
        )
        .expect("merges");
        let v: Value = serde_json::from_str(&out).expect("json");
        let keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "accessToken",
                "refreshToken",
                "profileArn",
                "expiresAt",
                "authMethod",
                "socialProvider",
                "region",
                "extra"
            ]
        );
        assert_eq!(v["accessToken"], "new");
        assert_eq!(v["refreshToken"], "r2");
        assert_eq!(v["profileArn"], "arn:2");
        assert_eq!(v["expiresAt"], format_time(1_000_000 + 7_200_000));
        assert_eq!(v["extra"], json!({"k":1}));
        // No rotation, no expiresIn: old refresh token kept, one hour.
        let out = apply_refresh(&c, &json!({"accessToken":"n2"}), 0).expect("merges");
        let v: Value = serde_json::from_str(&out).expect("json");
        assert_eq!(v["refreshToken"], "r1");
        assert_eq!(v["expiresAt"], "1970-01-01T01:00:00.000Z");
        assert!(
            apply_refresh(&c, &json!({"refreshToken":"x"}), 0).is_err(),
            "accessToken is required"
        );
        // IdC credentials never take a profileArn from the answer and gain no authMethod.
        let idc = Creds::parse(
            r#"{"accessToken":"a","refreshToken":"r","clientId":"c","clientSecret":"s"}"#,
        )
        .expect("parses");
        let out = apply_refresh(&idc, &json!({"accessToken":"b","profileArn":"arn:x"}), 0)
            .expect("merges");
        let v: Value = serde_json::from_str(&out).expect("json");
        assert!(
            v.get("profileArn").is_none() && v.get("authMethod").is_none(),
            "{v}"
        );
    }

    #[test]
    fn machine_id_seed_order() {
        let c = Creds::parse(r#"{"profileArn":"arn","clientId":"cid"}"#).expect("parses");
        assert_eq!(
            machine_id(Some("u1"), &c),
            hex::encode(Sha256::digest(b"u1"))
        );
        assert_eq!(machine_id(None, &c), hex::encode(Sha256::digest(b"arn")));
        let c = Creds::parse("{}").expect("parses");
        assert_eq!(
            machine_id(Some(""), &c),
            hex::encode(Sha256::digest(b"KIRO_DEFAULT_MACHINE"))
        );
    }
}
