//! The one place where outcomes become exit codes and error text reaches the terminal.

use std::process::ExitCode;

/// Why corral stopped unsuccessfully.
#[derive(Debug)]
pub enum Failure {
    /// What the user typed is wrong (flags, addresses, the command): exit 2.
    Usage(anyhow::Error),
    /// The app could not run or stopped running (port taken, crash loop): exit 1.
    Runtime(anyhow::Error),
    /// clap's own rendering (help, version, or a flag error).
    Clap(clap::Error),
}

impl Failure {
    pub fn from_clap(e: clap::Error) -> Self {
        Failure::Clap(e)
    }

    pub fn report(self) -> ExitCode {
        match self {
            Failure::Clap(e) => {
                let _ = e.print();
                ExitCode::from(if e.use_stderr() { 2 } else { 0 })
            }
            Failure::Usage(e) => {
                errln!("error: {}", chain(&e));
                ExitCode::from(2)
            }
            // `corral logs | head`: the reader had enough; that is not a failure.
            Failure::Runtime(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
            Failure::Runtime(e) => {
                errln!("error: {}", chain(&e));
                ExitCode::from(1)
            }
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// "outer: inner: innermost", the way anyhow's `{:#}` prints, minus repeated text.
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.is_empty() {
            if out.ends_with(&text) {
                continue;
            }
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
