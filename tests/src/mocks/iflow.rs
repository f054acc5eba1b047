//! Mock upstream for the iflow provider (being written).
