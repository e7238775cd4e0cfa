//! The app model below the command line, the config files and the daemon: options,
//! their value parsers and serde forms, and naming rules.

pub mod facts;
pub mod kinds;
pub mod names;
pub mod options;
pub mod parse;
pub mod values;

pub use kinds::LogFormat;
pub use options::{AppOptions, ObserveArgs};

/// A request of the control protocol, with this binary's app options.
pub type Request = corral_proto::control::Request<AppOptions>;
/// An app to start, as the CLI sends it and the daemon keeps and dumps it.
pub type StartApp = corral_proto::control::StartApp<AppOptions>;
