//! The `corral` command: parses the command line and hands over to [`app::main`].

#[macro_use]
mod print;
mod app;
mod chatter;
mod cli;
mod commands;
mod config;
mod daemon;
mod exit;
mod habits;
mod line_format;
mod monit;
mod render;
mod run;
mod secrets;
mod service;
mod triggers;
mod values;

fn main() -> std::process::ExitCode {
    app::main()
}
