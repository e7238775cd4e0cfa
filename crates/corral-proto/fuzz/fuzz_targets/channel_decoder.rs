//! Feeds arbitrary bytes, split at arbitrary points, through the channel line splitter and
//! decoder: whatever a worker writes, the supervisor's side must neither panic nor hold
//! more than one line's worth of bytes.
#![no_main]

use corral_proto::channel::{decode, Lines, MAX_LINE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let cut = (split as usize).min(rest.len());
    let mut lines = Lines::new();
    for chunk in [&rest[..cut], &rest[cut..]] {
        for line in lines.push(chunk).into_iter().flatten() {
            assert!(line.len() <= MAX_LINE);
            let _ = decode(&line);
        }
        assert!(lines.pending() <= MAX_LINE);
    }
});
