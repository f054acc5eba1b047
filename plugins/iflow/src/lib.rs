//! The iflow provider plugin (being written).
