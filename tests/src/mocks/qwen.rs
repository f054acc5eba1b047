//! Mock upstream for the qwen provider (being written).
