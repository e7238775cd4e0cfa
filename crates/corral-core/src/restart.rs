//! When to restart a worker that exited: exponential backoff, and giving up on a crash loop.

use std::time::Duration;

/// How crashed workers are restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Delay before a restart; it doubles with each further crash. The first crash
    /// after a stable run (or after `reset_after`) is restarted at once.
    pub delay: Duration,
    /// The doubling stops here.
    pub max_delay: Duration,
    /// A worker that exits sooner than this after it started (or before it was ready)
    /// exited *unstably*.
    pub min_uptime: Duration,
    /// After this many unstable exits in a row the slot is given up on (`errored`).
    pub max_restarts: u32,
    /// A worker that stays up this long resets the backoff to `delay`.
    pub reset_after: Duration,
    /// Restart workers that exit on their own at all (PM2's `autorestart`).
    pub autorestart: bool,
    /// Exit codes after which a worker is not restarted (PM2's `stop_exit_codes`).
    pub stop_exit_codes: ExitCodes,
}

/// A set of exit codes (0..=255), kept `Copy` like the rest of the policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExitCodes([u64; 4]);

impl ExitCodes {
    pub fn insert(&mut self, code: u8) {
        self.0[usize::from(code / 64)] |= 1 << (code % 64);
    }

    pub fn contains(&self, code: i32) -> bool {
        u8::try_from(code).is_ok_and(|c| self.0[usize::from(c / 64)] & (1 << (c % 64)) != 0)
    }
}

impl FromIterator<u8> for ExitCodes {
    fn from_iter<I: IntoIterator<Item = u8>>(codes: I) -> Self {
        let mut set = ExitCodes::default();
        for code in codes {
            set.insert(code);
        }
        set
    }
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(15),
            min_uptime: Duration::from_secs(1),
            max_restarts: 10,
            reset_after: Duration::from_secs(30),
            autorestart: true,
            stop_exit_codes: ExitCodes::default(),
        }
    }
}

/// The restart history of one slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RestartState {
    /// Unstable exits in a row.
    pub unstable: u32,
    /// How many times the delay has doubled since the last reset.
    step: u32,
    /// The one restart without delay since the last reset was used.
    restarted_at_once: bool,
}

/// What to do about a worker that exited on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    RestartIn(Duration),
    /// Too many unstable exits in a row: stop trying.
    GiveUp,
}

impl RestartState {
    /// Records an exit after `uptime` (`ready` tells whether the worker ever got ready)
    /// and decides what comes next.
    pub fn on_exit(&mut self, policy: &RestartPolicy, uptime: Duration, ready: bool) -> Decision {
        if uptime >= policy.reset_after {
            self.step = 0;
            self.restarted_at_once = false;
        }
        if ready && uptime >= policy.min_uptime {
            self.unstable = 0;
        } else {
            self.unstable += 1;
            if self.unstable > policy.max_restarts {
                return Decision::GiveUp;
            }
        }
        // The first crash after a stable run since the backoff was reset needs no
        // backoff: the slot is served again at once. The delay starts with the next one.
        let stable = self.unstable == 0;
        if stable && self.step == 0 && !self.restarted_at_once {
            self.restarted_at_once = true;
            return Decision::RestartIn(Duration::ZERO);
        }
        let factor = 1u32.checked_shl(self.step).unwrap_or(u32::MAX);
        let delay = policy
            .delay
            .checked_mul(factor)
            .unwrap_or(policy.max_delay)
            .min(policy.max_delay);
        if delay < policy.max_delay {
            self.step += 1;
        }
        Decision::RestartIn(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            min_uptime: Duration::from_secs(1),
            max_restarts: 3,
            reset_after: Duration::from_secs(30),
            autorestart: true,
            stop_exit_codes: ExitCodes::default(),
        }
    }

    #[test]
    fn exit_codes_are_a_set_of_0_to_255() {
        let codes: ExitCodes = [0, 3, 64, 255].into_iter().collect();
        for code in [0, 3, 64, 255] {
            assert!(codes.contains(code));
        }
        for code in [1, 63, 65, 254, 256, -1] {
            assert!(!codes.contains(code));
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut state = RestartState::default();
        let p = policy();
        let delays: Vec<_> = (0..7)
            .map(|_| state.on_exit(&p, Duration::from_secs(5), true))
            .collect();
        let ms = |n| Decision::RestartIn(Duration::from_millis(n));
        assert_eq!(
            delays,
            vec![
                ms(0),
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1000),
                ms(1000)
            ]
        );
    }

    #[test]
    fn a_long_run_resets_the_backoff_and_the_restart_at_once() {
        let mut state = RestartState::default();
        let p = policy();
        for _ in 0..4 {
            state.on_exit(&p, Duration::from_secs(5), true);
        }
        assert_eq!(
            state.on_exit(&p, Duration::from_secs(60), true),
            Decision::RestartIn(Duration::ZERO)
        );
        assert_eq!(
            state.on_exit(&p, Duration::from_secs(5), true),
            Decision::RestartIn(Duration::from_millis(100))
        );
    }

    #[test]
    fn issue_14_a_crash_loop_from_the_start_backs_off_from_its_first_exit() {
        let mut state = RestartState::default();
        let p = policy();
        let delays: Vec<_> = (0..3)
            .map(|_| state.on_exit(&p, Duration::from_millis(5), false))
            .collect();
        let ms = |n| Decision::RestartIn(Duration::from_millis(n));
        assert_eq!(delays, vec![ms(100), ms(200), ms(400)]);
    }

    #[test]
    fn gives_up_after_max_restarts_unstable_exits() {
        let mut state = RestartState::default();
        let p = policy();
        for _ in 0..3 {
            assert!(matches!(
                state.on_exit(&p, Duration::from_millis(5), false),
                Decision::RestartIn(_)
            ));
        }
        assert_eq!(
            state.on_exit(&p, Duration::from_millis(5), false),
            Decision::GiveUp
        );
    }

    #[test]
    fn a_stable_run_clears_the_unstable_count() {
        let mut state = RestartState::default();
        let p = policy();
        for _ in 0..3 {
            state.on_exit(&p, Duration::from_millis(5), false);
        }
        state.on_exit(&p, Duration::from_secs(2), true);
        assert_eq!(state.unstable, 0);
    }

    #[test]
    fn exit_before_ready_is_unstable_however_long_it_took() {
        let mut state = RestartState::default();
        state.on_exit(&policy(), Duration::from_secs(20), false);
        assert_eq!(state.unstable, 1);
    }
}
