//! What pages show, made ready for the templates: escaped log lines with their ANSI colours as
//! classes, `::group::` folds, durations and times for people, and server-rendered SVG charts.

use std::fmt::Write;

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One log line as HTML: SGR colour codes become `<span class="fg-N">`, everything else escaped.
pub fn ansi(text: &str) -> String {
    let mut out = String::new();
    let mut open = false;
    let mut rest = text;
    while let Some(at) = rest.find("\u{1b}[") {
        out.push_str(&escape(&rest[..at]));
        let after = &rest[at + 2..];
        let Some(end) = after.find(|c: char| !(c.is_ascii_digit() || c == ';')) else {
            rest = "";
            break;
        };
        let (codes, tail) = after.split_at(end);
        rest = &tail[1..];
        if !tail.starts_with('m') {
            continue;
        }
        if open {
            out.push_str("</span>");
            open = false;
        }
        let classes: Vec<String> = codes
            .split(';')
            .filter_map(|c| c.parse::<u8>().ok())
            .filter_map(|c| match c {
                1 => Some("bold".to_string()),
                30..=37 | 90..=97 => Some(format!("fg-{c}")),
                _ => None,
            })
            .collect();
        if !classes.is_empty() {
            let _ = write!(out, "<span class=\"{}\">", classes.join(" "));
            open = true;
        }
    }
    out.push_str(&escape(rest));
    if open {
        out.push_str("</span>");
    }
    out
}

pub fn duration(seconds: f64) -> String {
    if seconds < 1.0 {
        format!("{:.0} ms", seconds * 1000.0)
    } else if seconds < 120.0 {
        format!("{seconds:.1} s")
    } else if seconds < 7200.0 {
        format!("{:.1} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

/// `2026-11-30 20:27:25` from an RFC 3339 time.
pub fn time(text: &str) -> String {
    text.get(..19).unwrap_or(text).replace('T', " ")
}

/// Bars of run durations, oldest left, coloured by outcome: (seconds, succeeded, label).
pub fn duration_bars(runs: &[(f64, bool, String)]) -> String {
    let (width, height) = (600.0, 120.0);
    let max = runs.iter().map(|r| r.0).fold(1.0_f64, f64::max);
    let bar = width / runs.len().max(1) as f64;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"Run durations, oldest first; {} runs, longest {}\">",
        runs.len(),
        duration(max)
    );
    for (i, (seconds, ok, label)) in runs.iter().enumerate() {
        let h = (seconds / max * (height - 10.0)).max(2.0);
        let class = if *ok { "ok" } else { "bad" };
        let _ = write!(
            svg,
            "<rect class=\"{class}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\"><title>{} — {}</title></rect>",
            i as f64 * bar + 1.0,
            height - h,
            (bar - 2.0).max(1.0),
            escape(label),
            duration(*seconds)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A rollout's traffic weight over its events, a step line from 0 to 100%: (seconds since start, weight).
pub fn weight_steps(points: &[(f64, f64)], rolled_back: bool) -> String {
    let (width, height) = (600.0, 120.0);
    let end = points.iter().map(|p| p.0).fold(1.0_f64, f64::max);
    let x = |t: f64| 40.0 + t / end * (width - 50.0);
    let y = |w: f64| height - 15.0 - w * (height - 25.0);
    let mut path = String::new();
    let mut last = 0.0;
    for (i, (t, w)) in points.iter().enumerate() {
        if i == 0 {
            let _ = write!(path, "M{:.1},{:.1}", x(*t), y(*w));
        } else {
            let _ = write!(path, " L{:.1},{:.1} L{:.1},{:.1}", x(*t), y(last), x(*t), y(*w));
        }
        last = *w;
    }
    let class = if rolled_back { "bad" } else { "ok" };
    format!(
        "<svg class=\"chart\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"The new release's share of traffic over {}\"><text x=\"2\" y=\"{:.0}\">100%</text><text x=\"2\" y=\"{:.0}\">0%</text><path class=\"line {class}\" d=\"{path}\"/></svg>",
        duration(end),
        y(1.0) + 4.0,
        y(0.0) + 4.0
    )
}

/// The job graph of a run from `needs`, left to right by depth: (job id, its needs, its status).
pub fn job_graph(jobs: &[(String, Vec<String>, String)]) -> String {
    let (w, h, gap_x, gap_y) = (160.0, 34.0, 56.0, 12.0);
    let mut depth: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    // Depths settle in at most as many passes as there are jobs (the workflow has no cycle).
    for _ in 0..jobs.len() {
        for (id, needs, _) in jobs {
            let d = needs.iter().filter_map(|n| depth.get(n.as_str()).map(|d| d + 1)).max().unwrap_or(0);
            depth.insert(id, d);
        }
    }
    let mut rows: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    let mut place: std::collections::HashMap<&str, (f64, f64)> = std::collections::HashMap::new();
    for (id, _, _) in jobs {
        let d = depth[id.as_str()];
        let row = rows.entry(d).or_insert(0);
        place.insert(id, (4.0 + d as f64 * (w + gap_x), 4.0 + *row as f64 * (h + gap_y)));
        *row += 1;
    }
    let width = place.values().map(|p| p.0 + w + 4.0).fold(0.0, f64::max);
    let height = place.values().map(|p| p.1 + h + 4.0).fold(0.0, f64::max);
    let mut svg = format!(
        "<svg class=\"graph\" viewBox=\"0 0 {width:.0} {height:.0}\" width=\"{width:.0}\" role=\"img\" aria-label=\"Job graph: {} jobs, each after the jobs it needs\">",
        jobs.len()
    );
    for (id, needs, _) in jobs {
        let (x, y) = place[id.as_str()];
        for need in needs {
            if let Some((nx, ny)) = place.get(need.as_str()) {
                let (x1, y1, x2, y2) = (nx + w, ny + h / 2.0, x, y + h / 2.0);
                let mid = (x1 + x2) / 2.0;
                let _ = write!(
                    svg,
                    "<path class=\"edge\" d=\"M{x1:.0},{y1:.0} C{mid:.0},{y1:.0} {mid:.0},{y2:.0} {x2:.0},{y2:.0}\"/>"
                );
            }
        }
    }
    for (id, _, status) in jobs {
        let (x, y) = place[id.as_str()];
        let label: String =
            if id.chars().count() > 20 { id.chars().take(19).collect::<String>() + "…" } else { id.clone() };
        let _ = write!(
            svg,
            "<g class=\"node {}\"><title>{} — {}</title><rect x=\"{x:.0}\" y=\"{y:.0}\" width=\"{w}\" height=\"{h}\" rx=\"6\"/><text x=\"{:.0}\" y=\"{:.0}\">{}</text></g>",
            escape(status),
            escape(id),
            escape(status),
            x + 10.0,
            y + h / 2.0 + 5.0,
            escape(&label)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Lines over time, one per series (stable and canary): (name, [(seconds since start, value)]).
pub fn lines(label: &str, series: &[(String, Vec<(f64, f64)>)], unit: impl Fn(f64) -> String) -> String {
    let (width, height) = (600.0, 140.0);
    let end = series.iter().flat_map(|(_, p)| p.iter().map(|p| p.0)).fold(1.0_f64, f64::max);
    let top = series.iter().flat_map(|(_, p)| p.iter().map(|p| p.1)).filter(|v| v.is_finite()).fold(0.0_f64, f64::max);
    let top = if top > 0.0 { top * 1.1 } else { 1.0 };
    let x = |t: f64| 50.0 + t / end * (width - 120.0);
    let y = |v: f64| height - 20.0 - v / top * (height - 30.0);
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{}\"><text x=\"2\" y=\"{:.0}\">{}</text><text x=\"2\" y=\"{:.0}\">0</text>",
        escape(label),
        y(top) + 10.0,
        escape(&unit(top)),
        y(0.0) + 4.0
    );
    for (i, (name, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .filter(|p| p.1.is_finite())
            .enumerate()
            .map(|(j, (t, v))| format!("{}{:.1},{:.1}", if j == 0 { "M" } else { "L" }, x(*t), y(*v)))
            .collect();
        if path.is_empty() {
            continue;
        }
        let class = if name == "canary" { "bad" } else { "ok" };
        let _ = write!(
            svg,
            "<path class=\"line {class}\" d=\"{}\"/><text x=\"{:.0}\" y=\"{}\">{}</text>",
            path.join(" "),
            width - 60.0,
            14 + 14 * i,
            escape(name)
        );
        // Each point shows too: a short canary may have only one.
        for (t, v) in points.iter().filter(|p| p.1.is_finite()) {
            let _ = write!(
                svg,
                "<circle class=\"dot {class}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\"><title>{name}: {}</title></circle>",
                x(*t),
                y(*v),
                escape(&unit(*v))
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// One series over a shared time axis with the deployments marked on it: (Unix seconds, value)
/// points and (Unix seconds, promoted, label) marks between `start` and `end`.
pub fn timeline(label: &str, points: &[(f64, f64)], marks: &[(f64, bool, String)], start: f64, end: f64) -> String {
    let (width, height) = (600.0, 110.0);
    let span = (end - start).max(1.0);
    let top = points.iter().map(|p| p.1).filter(|v| v.is_finite()).fold(0.0_f64, f64::max);
    let top = if top > 0.0 { top * 1.1 } else { 1.0 };
    let x = |t: f64| 40.0 + (t - start) / span * (width - 50.0);
    let y = |v: f64| height - 15.0 - v / top * (height - 25.0);
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{}, with the deployments\"><text x=\"2\" y=\"{:.0}\">{}</text><text x=\"2\" y=\"{:.0}\">0</text>",
        escape(label),
        y(top) + 10.0,
        if top >= 10.0 { format!("{top:.0}") } else { format!("{top:.3}") },
        y(0.0) + 4.0
    );
    for (t, promoted, what) in marks {
        let class = if *promoted { "ok" } else { "bad" };
        let _ = write!(
            svg,
            "<line class=\"mark {class}\" x1=\"{:.1}\" x2=\"{:.1}\" y1=\"5\" y2=\"{:.0}\"><title>{}</title></line>",
            x(*t),
            x(*t),
            height - 15.0,
            escape(what)
        );
    }
    let mut path = String::new();
    let mut pen_up = true;
    for (t, v) in points {
        if !v.is_finite() {
            pen_up = true;
            continue;
        }
        let _ = write!(path, "{}{:.1},{:.1} ", if pen_up { "M" } else { "L" }, x(*t), y(*v));
        pen_up = false;
    }
    let _ = write!(svg, "<path class=\"line ok\" d=\"{}\"/></svg>", path.trim_end());
    svg
}

/// One lane of the deployment timeline: its label, then its deployments as (Unix seconds, class
/// `ok`/`bad`/`wait`, title).
pub type Lane = (String, Vec<(f64, &'static str, String)>);

/// The deployment timeline: one lane per environment, between `start` and `end` (Unix seconds).
pub fn deploy_lanes(lanes: &[Lane], start: f64, end: f64) -> String {
    let (width, lane) = (600.0, 26.0);
    let height = lane * lanes.len() as f64 + 18.0;
    let span = (end - start).max(1.0);
    let x = |t: f64| 150.0 + (t - start) / span * (width - 160.0);
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"Deployments per environment over {}\">",
        duration(span)
    );
    for (i, (label, points)) in lanes.iter().enumerate() {
        let y = 14.0 + lane * i as f64;
        let _ = write!(
            svg,
            "<text x=\"2\" y=\"{:.0}\">{}</text><line class=\"axis\" x1=\"150\" x2=\"{width}\" y1=\"{y:.0}\" y2=\"{y:.0}\"/>",
            y + 4.0,
            escape(label)
        );
        for (t, class, title) in points {
            let _ = write!(
                svg,
                "<circle class=\"dot {class}\" cx=\"{:.1}\" cy=\"{y:.0}\" r=\"6\"><title>{}</title></circle>",
                x(*t),
                escape(title)
            );
        }
    }
    let _ = write!(
        svg,
        "<text x=\"150\" y=\"{:.0}\">{}</text><text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\">now</text></svg>",
        height - 2.0,
        jiff::Timestamp::from_second(start as i64).map(|t| time(&t.to_string())).unwrap_or_default(),
        width,
        height - 2.0
    );
    svg
}

#[cfg(test)]
mod tests {
    #[test]
    fn colours_become_classes_and_markup_is_escaped() {
        assert_eq!(super::ansi("\u{1b}[31mfail\u{1b}[0m <b>"), "<span class=\"fg-31\">fail</span> &lt;b&gt;");
        assert_eq!(super::ansi("\u{1b}[1;32mok"), "<span class=\"bold fg-32\">ok</span>");
        assert_eq!(super::ansi("plain & simple"), "plain &amp; simple");
    }
}
