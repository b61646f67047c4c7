//! Alertmanager's time intervals (`time_intervals`, and the older `mute_time_intervals` block):
//! times of day, weekdays, days of the month (negative: from the end), months and years, in a
//! time zone. A route mutes its notifications inside its `mute_time_intervals` and sends only
//! inside its `active_time_intervals`.

use crate::diag::Diagnostic;
use crate::service::Checker;
use crate::yaml::Node;

/// One interval: every list that is given must hold the instant (an empty list holds every instant).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimeInterval {
    /// Minutes of the day, `[start, end)`.
    pub times: Vec<(u32, u32)>,
    /// 0 = Sunday … 6 = Saturday, inclusive ranges.
    pub weekdays: Vec<(u8, u8)>,
    /// 1…31, or −1 for the last day; inclusive ranges.
    pub days_of_month: Vec<(i8, i8)>,
    /// 1…12, inclusive ranges.
    pub months: Vec<(u8, u8)>,
    pub years: Vec<(i16, i16)>,
    /// An IANA time zone; UTC when absent.
    pub location: Option<String>,
}

const WEEKDAYS: [&str; 7] = ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"];
const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

impl TimeInterval {
    /// Whether the instant (Unix ms) lies in the interval.
    pub fn contains(&self, ms: i64) -> bool {
        let Ok(instant) = jiff::Timestamp::from_millisecond(ms) else { return false };
        let zone = match &self.location {
            Some(name) => jiff::tz::TimeZone::get(name).unwrap_or(jiff::tz::TimeZone::UTC),
            None => jiff::tz::TimeZone::UTC,
        };
        let t = instant.to_zoned(zone);
        let minute = t.hour() as u32 * 60 + t.minute() as u32;
        let weekday = t.weekday().to_sunday_zero_offset() as u8;
        let days_in_month = t.days_in_month();
        let day = |d: i8| if d < 0 { days_in_month + 1 + d } else { d };
        let within = |ranges: &[(i64, i64)], value: i64| {
            ranges.is_empty() || ranges.iter().any(|(a, b)| *a <= value && value <= *b)
        };
        (self.times.is_empty() || self.times.iter().any(|(a, b)| *a <= minute && minute < *b))
            && within(&self.weekdays.iter().map(|(a, b)| (*a as i64, *b as i64)).collect::<Vec<_>>(), weekday as i64)
            && within(
                &self.days_of_month.iter().map(|(a, b)| (day(*a) as i64, day(*b) as i64)).collect::<Vec<_>>(),
                t.day() as i64,
            )
            && within(&self.months.iter().map(|(a, b)| (*a as i64, *b as i64)).collect::<Vec<_>>(), t.month() as i64)
            && within(&self.years.iter().map(|(a, b)| (*a as i64, *b as i64)).collect::<Vec<_>>(), t.year() as i64)
    }
}

/// `HH:MM` → minutes; `24:00` is the end of the day.
fn clock(text: &str) -> Option<u32> {
    let (h, m) = text.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

/// `a:b` or `a`, each side read by `one`; `None` when unreadable or reversed.
fn range<T: PartialOrd + Copy>(text: &str, one: impl Fn(&str) -> Option<T>) -> Option<(T, T)> {
    let (a, b) = match text.split_once(':') {
        Some((a, b)) => (one(a.trim())?, one(b.trim())?),
        None => {
            let v = one(text.trim())?;
            (v, v)
        }
    };
    (a <= b).then_some((a, b))
}

fn named(names: &[&str], text: &str) -> Option<u8> {
    names.iter().position(|n| n.eq_ignore_ascii_case(text)).map(|i| i as u8)
}

impl Checker {
    /// A named list of intervals: `- name: … time_intervals: [...]`.
    pub(super) fn time_intervals(&mut self, node: &Node) -> Vec<(String, Vec<TimeInterval>)> {
        let mut out = Vec::new();
        for item in node.as_seq().unwrap_or_default() {
            let entries = self.entries(item, "a time interval", &["name", "time_intervals"]);
            let field = |key: &str| entries.iter().find(|(k, ..)| *k == key).map(|(_, v, _)| *v);
            let Some(name) = field("name").and_then(|n| self.string(n, "a time interval's `name`")) else {
                self.push(Diagnostic::error("missing-key", item.span, "a time interval has no `name`"));
                continue;
            };
            let intervals = field("time_intervals")
                .and_then(Node::as_seq)
                .unwrap_or_default()
                .iter()
                .map(|i| self.interval(i))
                .collect();
            out.push((name, intervals));
        }
        out
    }

    fn interval(&mut self, node: &Node) -> TimeInterval {
        let known = ["times", "weekdays", "days_of_month", "months", "years", "location"];
        let mut interval = TimeInterval::default();
        for (key, value, _) in self.entries(node, "a time interval", &known) {
            if key == "location" {
                let zone = value.as_scalar().unwrap_or_default();
                if zone != "Local" && jiff::tz::TimeZone::get(zone).is_err() {
                    self.push(
                        Diagnostic::error("bad-value", value.span, format!("`{zone}` is not a known time zone"))
                            .expected("an IANA name such as Europe/Berlin or UTC"),
                    );
                }
                interval.location = Some(zone.to_string()).filter(|z| z != "Local");
                continue;
            }
            if key == "times" {
                for time in value.as_seq().unwrap_or_default() {
                    let entries = self.entries(time, "a time range", &["start_time", "end_time"]);
                    let get = |k: &str| entries.iter().find(|(key, ..)| *key == k).and_then(|(_, v, _)| v.as_scalar());
                    match (get("start_time").and_then(clock), get("end_time").and_then(clock)) {
                        (Some(a), Some(b)) if a < b => interval.times.push((a, b)),
                        _ => self.push(
                            Diagnostic::error(
                                "bad-value",
                                time.span,
                                "a time range needs `start_time` before `end_time`",
                            )
                            .expected("HH:MM between 00:00 and 24:00, e.g. start_time: '09:00', end_time: '17:00'"),
                        ),
                    }
                }
                continue;
            }
            for item in value.as_seq().unwrap_or_default() {
                let text = item.as_scalar().unwrap_or_default();
                let ok = match key {
                    "weekdays" => range(text, |t| named(&WEEKDAYS, t)).map(|r| interval.weekdays.push(r)),
                    "days_of_month" => {
                        range(text, |t| t.parse::<i8>().ok().filter(|d| *d != 0 && (-31..=31).contains(d)))
                            .map(|r| interval.days_of_month.push(r))
                    }
                    "months" => range(text, |t| {
                        named(&MONTHS, t)
                            .map(|m| m + 1)
                            .or_else(|| t.parse::<u8>().ok().filter(|m| (1..=12).contains(m)))
                    })
                    .map(|r| interval.months.push(r)),
                    _ => range(text, |t| t.parse::<i16>().ok()).map(|r| interval.years.push(r)),
                };
                if ok.is_none() {
                    let expected = match key {
                        "weekdays" => "a weekday or a range of them, e.g. monday:friday",
                        "days_of_month" => "a day or range, 1 to 31 or -31 to -1 from the end, e.g. 1:7 or -1",
                        "months" => "a month or range, by name or 1 to 12, e.g. january:march",
                        _ => "a year or range, e.g. 2026:2027",
                    };
                    self.push(
                        Diagnostic::error("bad-value", item.span, format!("`{text}` is not valid in `{key}`"))
                            .expected(expected),
                    );
                }
            }
        }
        interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        text.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn business_hours_in_a_time_zone_and_the_last_day_of_the_month() {
        let hours = TimeInterval {
            times: vec![(9 * 60, 17 * 60)],
            weekdays: vec![(1, 5)],
            location: Some("Europe/Berlin".into()),
            ..Default::default()
        };
        // 2026-12-01 is a Tuesday; 08:30 UTC is 09:30 in Berlin.
        assert!(hours.contains(at("2026-12-01T08:30:00Z")));
        assert!(!hours.contains(at("2026-12-01T07:30:00Z")), "08:30 in Berlin is before nine");
        assert!(!hours.contains(at("2026-12-05T10:00:00Z")), "a Saturday");
        assert!(!hours.contains(at("2026-12-01T16:00:00Z")), "17:00 is the end, excluded");
        let last_day = TimeInterval { days_of_month: vec![(-1, -1)], ..Default::default() };
        assert!(last_day.contains(at("2027-02-28T12:00:00Z")));
        assert!(!last_day.contains(at("2028-02-28T12:00:00Z")), "2028 is a leap year");
    }
}
