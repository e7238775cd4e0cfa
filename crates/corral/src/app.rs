//! Dispatches a parsed command line to its subcommand and maps the result to an exit code.

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::exit::Failure;

pub fn main() -> ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // PM2's dialect: invoked as `pm2` (a link to this binary), or `corral pm2 ARGS`.
    let program = args
        .first()
        .map(std::path::Path::new)
        .and_then(|p| p.file_name())
        .is_some_and(|n| n == "pm2");
    if program {
        return crate::pm2::main(args);
    }
    if args.get(1).is_some_and(|a| a == "pm2") {
        args.remove(0);
        return crate::pm2::main(args);
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return Failure::from_clap(e).report(),
    };
    let result = match cli.command {
        Command::Run(args) => crate::run::run(args),
        Command::Daemon(args) => crate::home::Home::from_env()
            .and_then(|home| {
                crate::daemon::serve(
                    home,
                    args.resurrect,
                    args.observe,
                    args.log_format == crate::cli::EventFormat::Json,
                )
            })
            .map_err(Failure::Runtime),
        Command::Handover { .. } => {
            crate::upgrade::answer_check();
            Ok(())
        }
        Command::Holder => crate::home::Home::from_env()
            .and_then(|home| crate::daemon::holder::run(&home))
            .map_err(Failure::Runtime),
        other => crate::client::run(other),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}
