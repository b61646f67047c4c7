//! Fuzz target: any text through the expression parser, templates, conditions and evaluation.
#![no_main]

use spec::expr;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(parsed) = expr::parse(text) {
            let _ = expr::evaluate(&parsed, &expr::Contexts::default());
        }
        if let Ok(template) = expr::Template::parse(text) {
            let _ = template.render(&expr::Contexts::default());
        }
        let _ = expr::parse_condition(text);
    }
});
