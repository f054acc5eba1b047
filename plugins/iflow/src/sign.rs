//! iFlow's request signature (iflow.md §3): every inference call carries a fresh
//! `session-id: session-<uuid v4>`, `x-iflow-timestamp: <ms>` and
//! `x-iflow-signature: hex(HMAC-SHA256(key = API key, "iFlow-Cli:<session-id>:<timestamp>"))`.

use sha2::{Digest, Sha256};

pub const USER_AGENT: &str = "iFlow-Cli";

/// HMAC-SHA256 (RFC 2104) of `msg` under `key`, lower-case hex.
pub fn hmac_sha256_hex(key: &[u8], msg: &[u8]) -> String {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut ipad = [0x36u8; BLOCK];
    let mut opad = [0x5cu8; BLOCK];
    for i in 0..BLOCK {
        ipad[i] ^= k[i];
        opad[i] ^= k[i];
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(msg)
        .finalize();
    let outer = Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize();
    hex::encode(outer)
}

/// The signature of one call.
pub fn signature(api_key: &str, session_id: &str, timestamp_ms: i64) -> String {
    hmac_sha256_hex(
        api_key.as_bytes(),
        format!("{USER_AGENT}:{session_id}:{timestamp_ms}").as_bytes(),
    )
}

/// The signing headers of one call (new session id and timestamp each time); none without an
/// API key.
pub fn signed_headers(api_key: &str, now_ms: i64) -> Vec<(&'static str, String)> {
    let session = format!("session-{}", uuid::Uuid::new_v4());
    let mut h = vec![
        ("user-agent", USER_AGENT.to_string()),
        ("session-id", session.clone()),
        ("x-iflow-timestamp", now_ms.to_string()),
    ];
    if !api_key.is_empty() {
        h.push(("x-iflow-signature", signature(api_key, &session, now_ms)));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_vectors() {
        assert_eq!(
            hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        assert_eq!(
            hmac_sha256_hex(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn headers_are_fresh_and_signed() {
        let a = signed_headers("sk-1", 1000);
        let b = signed_headers("sk-1", 1000);
        let get = |h: &[(&str, String)], k: &str| {
            h.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        assert!(get(&a, "session-id").starts_with("session-"));
        assert_ne!(get(&a, "session-id"), get(&b, "session-id"));
        assert_eq!(
            get(&a, "x-iflow-signature"),
            signature("sk-1", &get(&a, "session-id"), 1000)
        );
        assert!(
            signed_headers("", 1)
                .iter()
                .all(|(k, _)| *k != "x-iflow-signature")
        );
    }
}
