//! The `corral` command: parses the command line and hands over to [`app::main`].
//!
//! Layers, each using only the ones below it (`tests/layers.rs` checks there is no cycle):
//! `app` → `pm2` → `client`, `daemon`, `run` → `cli` → `config` → `model`, `home`, `log_layout`,
//! `render`, `chatter`, `line_format`, `triggers`, `secrets`, `exit`, `upgrade`.

#[macro_use]
mod print;
mod app;
mod bind_shim;
mod chatter;
mod cli;
mod client;
mod config;
mod daemon;
mod exit;
mod home;
mod line_format;
mod log_layout;
mod model;
mod pm2;
mod render;
mod run;
mod secrets;
mod triggers;
mod upgrade;

fn main() -> std::process::ExitCode {
    app::main()
}
