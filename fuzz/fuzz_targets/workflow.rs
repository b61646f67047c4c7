//! Fuzz target: any bytes through the whole workflow check (YAML, spec, graph, matrix) and the
//! service-file check, as an action's metadata file and as a gitleaks configuration.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let (_, diagnostics) = ci::check::validate(text);
        for diagnostic in &diagnostics {
            let _ = diagnostic.render("fuzz.yml", text);
        }
        let _ = spec::service::parse(text);
        let _ = spec::workflow::parse_action(text);
        if let Ok(config) = spec::gitleaks::parse_config(text) {
            let _ = config.scan("fuzz.txt", text, &[]);
        }
    }
});
