//! The qwen provider plugin (being written).
