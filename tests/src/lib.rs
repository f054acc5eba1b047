//! Test support shared by aiclient's integration tests (`tests/tests/*.rs`):
//! - [`artifacts`]: builds the real binaries and plugin libraries once per test process and
//!   says where they are;
//! - [`conformance`]: the storage conformance suite every backend must pass;
//! - [`gateway`]: runs the real `aiclient` binary on a free port;
//! - [`redis_server`]: a private `redis-server` on a free loopback port.
//!
//! Conventions: tests use `expect("why")` rather than bare `unwrap()`, so a failure says what
//! was being attempted; every process a test starts is killed when its handle drops.

pub mod artifacts;
pub mod conformance;
pub mod gateway;
pub mod mock_upstream;
pub mod mocks;
pub mod redis_cluster;
pub mod redis_server;
pub mod seed;
pub mod wire;
