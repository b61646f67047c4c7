//! Fuzz target: any bytes as a webhook body from each forge, for the events Tandem reads.
#![no_main]

use git::webhook::{Forge, parse};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for forge in ["github", "gitea", "gitlab"].into_iter().filter_map(Forge::from_name) {
        for event in ["push", "pull_request", "Push Hook", "Merge Request Hook", "ping"] {
            let _ = parse(forge, event, data);
        }
    }
});
