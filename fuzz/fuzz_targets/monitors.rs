//! Fuzz target: any text as a monitors file, a Prometheus rule file and an OpenSLO file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = spec::monitors::parse(text);
    let _ = spec::rules::parse(text);
    let _ = spec::openslo::parse(text);
});
