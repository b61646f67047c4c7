//! Fuzz target: any bytes through the service-file check, then every freeze window it accepted
//! evaluated at a fixed instant (cron patterns and time zones from the input).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let (service, diagnostics) = spec::service::parse(text);
        for diagnostic in &diagnostics {
            let _ = diagnostic.render("service.yml", text);
        }
        let now = jiff::Timestamp::from_second(1_795_000_000).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        for environment in service.iter().flat_map(|s| &s.environments) {
            for freeze in &environment.gates.freezes {
                let _ = freeze.active_at(now);
            }
        }
    }
});
