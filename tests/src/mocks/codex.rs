//! Mock upstream for the codex provider (being written).
