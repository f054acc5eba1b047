//! The codex provider plugin (being written).
