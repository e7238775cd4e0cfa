//! One file per request kind, as mini-redis's `cmd/`: each adds to `Daemon` what its
//! request does. (`ping`, `reset`, `reloadLogs` and `send` are a line each, in
//! `Daemon::request`.)

pub(super) mod describe;
pub(super) mod env;
pub(super) mod flush;
pub(super) mod hold;
pub(super) mod input;
pub(super) mod kill;
pub(super) mod ls;
pub(super) mod reload;
pub(super) mod resurrect;
pub(super) mod save;
pub(super) mod scale;
pub(super) mod signal;
pub(super) mod start;
pub(super) mod stop;
pub(super) mod update;
