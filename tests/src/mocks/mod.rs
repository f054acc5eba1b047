//! Faithful mock upstreams, one per provider protocol (`../shared/reference/providers/*.md`,
//! "What a faithful mock must do"): auth checks, exact framing, scripted replies, rotating
//! refresh tokens on a controllable clock, injected errors, and counters of received calls.
//! The OpenAI/Anthropic API mock for the `*-custom` plugins is [`crate::mock_upstream`].

pub mod codex;
pub mod gemini;
pub mod iflow;
pub mod kiro;
pub mod qwen;
