//! The kiro provider plugin (being written).
