//! Timestamps as RFC 3339 text in UTC with milliseconds, as the store keeps them.

pub(crate) fn now() -> String {
    format(jiff::Timestamp::now())
}

/// `2026-11-26T04:02:48.123Z` for milliseconds since the Unix epoch.
pub fn rfc3339(millis: i64) -> String {
    jiff::Timestamp::from_millisecond(millis).map(format).unwrap_or_else(|_| format(jiff::Timestamp::UNIX_EPOCH))
}

fn format(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_665_768_123), "2026-11-26T04:02:48.123Z");
        assert_eq!(now().len(), "2026-11-26T04:02:48.123Z".len());
    }
}
