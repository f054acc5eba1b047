//! # aiclient host
//!
//! The gateway process: configuration, plugin loading, the HTTP server and the CLI. Behaviour
//! lives here, in library code tests can call; `main.rs` only hands over to [`cli::main`].
//!
//! ## Layout
//! - [`cli`]: the clap command line and what each command does;
//! - [`config`]: `aiclient.toml` + environment + flags → one validated [`config::Config`];
//! - [`plugins`]: finding, checking and loading plugin libraries, and the host end of the log
//!   bridge;
//! - [`storage`]: the host-side handle on the active storage backend;
//! - [`admin`]: the management API (`/api/*`) and web-UI sessions;
//! - [`gateway`]: routing, account pools and provider calls; [`api`]: the client endpoints;
//! - [`server`]: the axum application and its graceful shutdown.

#![allow(non_local_definitions)]

pub mod admin;
pub mod api;
pub mod cli;
pub mod config;
pub mod gateway;
pub mod metrics;
pub mod migrate;
pub mod plugins;
pub mod server;
pub mod startup;
pub mod storage;
pub mod ui;
