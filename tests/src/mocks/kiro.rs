//! Mock upstream for the kiro provider (being written).
