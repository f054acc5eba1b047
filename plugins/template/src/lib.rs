//! A template provider plugin: the provider type `echo-template` answers every OpenAI Chat
//! Completions request with the text of its last user message, unary or streamed. It shows the
//! whole shape of a plugin — `describe`, `call` with unary and streaming replies, reading the
//! account's config, errors that don't penalise the account — in one file. See
//! `docs/plugin-guide.md`.

#![allow(non_local_definitions)]

use aiclient_sdk::PluginError;
use aiclient_sdk::provider::{
    AccountAction, Operation, Provider, ProviderRequest, Reply, StreamEvent,
};
use serde_json::{Value, json};

struct Echo {
    /// From the plugin's config (`{"prefix": "..."}`), to show how config reaches a plugin.
    prefix: String,
}

fn last_user_text(body: &Value) -> Option<String> {
    let msgs = body.get("messages")?.as_array()?;
    let last = msgs
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))?;
    match last.get("content")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(""),
        ),
        _ => None,
    }
}

impl Provider for Echo {
    fn describe(&self) -> Value {
        json!({
            "providerTypes": ["echo-template"],
            "protocol": "openai",
            "checkModel": "echo-1",
            "models": { "echo-template": ["echo-1"] },
        })
    }

    async fn call(&self, req: ProviderRequest) -> Result<Reply, PluginError> {
        if req.operation != Operation::GENERATE {
            return Err(PluginError::unsupported("echo-template only generates"));
        }
        let body: Value = serde_json::from_str(&req.body)?;
        let Some(text) = last_user_text(&body) else {
            // The client's fault: a 400 the host passes on without penalising the account.
            let mut r = Reply::status(400, json!({"error": {"message": "no user message to echo", "type": "invalid_request_error"}}).to_string());
            r.action = AccountAction::CLIENT_ERROR;
            return Ok(r);
        };
        // Per-account settings arrive as the account's JSON object.
        let account: Value = serde_json::from_str(&req.account)?;
        let who = account
            .get("customName")
            .and_then(Value::as_str)
            .unwrap_or("echo");
        let answer = format!("{}{text}", self.prefix);
        let model = req.model.as_str();
        if !req.stream {
            return Ok(Reply::ok(
                json!({
                    "id": "chatcmpl-echo", "object": "chat.completion", "created": 0, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": text.len(), "completion_tokens": answer.len(), "total_tokens": text.len() + answer.len()},
                    "system_fingerprint": who,
                })
                .to_string(),
            ));
        }
        let chunk = |delta: Value, finish: Value| {
            StreamEvent::new("", json!({"id": "chatcmpl-echo", "object": "chat.completion.chunk", "created": 0, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}).to_string())
        };
        let mut events = vec![Ok(chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        ))];
        events.extend(
            answer
                .split_inclusive(' ')
                .map(|w| Ok(chunk(json!({"content": w}), Value::Null))),
        );
        events.push(Ok(chunk(json!({}), json!("stop"))));
        Ok(Reply::stream(Box::pin(futures_util::stream::iter(events))))
    }
}

aiclient_sdk::export_provider! {
    name: "echo-template",
    description: "Template plugin: echoes the last user message (OpenAI protocol)",
    create: |config: Value| {
        let prefix = config.get("prefix").and_then(Value::as_str).unwrap_or("echo: ").to_string();
        async move { Ok(Echo { prefix }) }
    },
}
