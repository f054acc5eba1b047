//! The original's local rate limiter (qwen.md §3): at most N calls per minute per account
//! (sliding window, every attempt counted); the next call is refused locally with 429
//! `rate_limit_exceeded` and a retry hint until the oldest call leaves the window.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

pub const WINDOW_MS: i64 = 60_000;

#[derive(Default)]
pub struct Limiter(Mutex<HashMap<String, VecDeque<i64>>>);

impl Limiter {
    /// Records a call of `account` at `now_ms` if it is allowed; otherwise the ms to wait.
    pub fn admit(&self, account: &str, limit: u32, now_ms: i64) -> Result<(), i64> {
        if limit == 0 {
            return Ok(());
        }
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 10_000 {
            // Bound memory: forget accounts without calls in the window.
            map.retain(|_, q| q.back().is_some_and(|t| now_ms - t < WINDOW_MS));
        }
        let q = map.entry(account.to_string()).or_default();
        while q.front().is_some_and(|t| now_ms - t >= WINDOW_MS) {
            q.pop_front();
        }
        if q.len() >= limit as usize {
            let oldest = q.front().copied().unwrap_or(now_ms);
            return Err((oldest + WINDOW_MS - now_ms).max(1));
        }
        q.push_back(now_ms);
        Ok(())
    }
}

/// The OpenAI-style body of a local refusal.
pub fn refusal_body(limit: u32, wait_ms: i64) -> String {
    serde_json::json!({"error": {
        "message": format!("Rate limit exceeded: at most {limit} Qwen requests per minute per account; retry in {}s", (wait_ms + 999) / 1000),
        "type": "rate_limit_exceeded",
        "code": "rate_limit_exceeded",
    }})
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window() {
        let l = Limiter::default();
        assert!(l.admit("a", 2, 0).is_ok());
        assert!(l.admit("a", 2, 10_000).is_ok());
        assert_eq!(l.admit("a", 2, 20_000), Err(40_000));
        assert!(l.admit("b", 2, 20_000).is_ok(), "per account");
        assert!(
            l.admit("a", 2, 60_000).is_ok(),
            "the oldest left the window"
        );
        assert!(l.admit("a", 0, 60_000).is_ok(), "0 disables");
    }
}
