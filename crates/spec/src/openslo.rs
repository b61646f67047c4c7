//! OpenSLO documents (`openslo/v1`, `openslo/v1alpha`, `openslo.com/v2alpha`): SLOs become
//! Tandem SLOs, SLIs are resolved by reference, and what Tandem does not use is named with its
//! place as a warning — never silently dropped.
//!
//! Translation: a ratio SLI of Prometheus counters becomes `sum(increase((QUERY)[$window:1m]))`
//! for good (or total − bad) and total; of gauges, `sum_over_time`; a threshold SLI counts the
//! minutes its query met the objective's `op value`. Each objective is one SLO (named
//! `SLO/objective` when there are several). Timeslice budgeting and calendar windows are
//! evaluated as occurrences over a rolling window of the same length, and said so; OpenSLO alert
//! policies are read but Tandem alerts with its multi-window burn rates.

use crate::diag::{Diagnostic, Span};
use crate::monitors::{Sli, SloSpec};
use crate::rules::prometheus_duration;
use crate::yaml::{self, Node};

/// An SLO of the documents; `slo` is `None` when it cannot be evaluated here (the diagnostics say why).
#[derive(Debug, Clone, PartialEq)]
pub struct OpenSlo {
    pub name: String,
    pub service: Option<String>,
    pub slo: Option<SloSpec>,
}

/// Reads every document of a file (one object or a list); SLIs may be defined in the same file.
pub fn parse(source: &str) -> (Vec<OpenSlo>, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let root = match yaml::parse(source) {
        Ok(Some(root)) => root,
        Ok(None) => return (Vec::new(), diagnostics),
        Err(diagnostic) => return (Vec::new(), vec![diagnostic]),
    };
    let documents: Vec<&Node> = match root.as_seq() {
        Some(items) => items.iter().collect(),
        None => vec![&root],
    };
    let slis: Vec<(&str, &Node)> = documents
        .iter()
        .filter(|d| scalar(d, &["kind"]) == Some("SLI"))
        .filter_map(|d| Some((scalar(d, &["metadata", "name"])?, d.get("spec")?)))
        .collect();
    let mut out = Vec::new();
    for document in documents {
        let version = scalar(document, &["apiVersion"]).unwrap_or_default();
        if !["openslo/v1", "openslo/v1alpha", "openslo.com/v2alpha"].contains(&version) {
            diagnostics.push(
                Diagnostic::error(
                    "openslo-version",
                    document.span,
                    format!("`{version}` is not an OpenSLO version Tandem reads"),
                )
                .expected("openslo/v1, openslo/v1alpha or openslo.com/v2alpha"),
            );
            continue;
        }
        match scalar(document, &["kind"]) {
            Some("SLO") => out.extend(slo(document, &slis, &mut diagnostics)),
            Some("SLI") => {}
            Some(kind @ ("Service" | "DataSource" | "AlertPolicy" | "AlertCondition" | "AlertNotificationTarget")) => {
                diagnostics.push(Diagnostic::warning(
                    "openslo-unused",
                    document.span,
                    format!("{kind} `{}` is read but not used: Tandem alerts with its own multi-window burn rates and routes alerts itself", scalar(document, &["metadata", "name"]).unwrap_or("?")),
                ));
            }
            other => diagnostics.push(Diagnostic::error(
                "openslo-kind",
                document.span,
                format!("unknown OpenSLO kind `{}`", other.unwrap_or("(none)")),
            )),
        }
    }
    (out, diagnostics)
}

fn scalar<'n>(node: &'n Node, path: &[&str]) -> Option<&'n str> {
    let mut node = node;
    for key in path {
        node = node.get(key)?;
    }
    node.as_scalar()
}

fn slo(document: &Node, slis: &[(&str, &Node)], diagnostics: &mut Vec<Diagnostic>) -> Vec<OpenSlo> {
    let name = scalar(document, &["metadata", "name"]).unwrap_or("slo").to_string();
    let Some(spec) = document.get("spec") else {
        diagnostics.push(Diagnostic::error("missing-key", document.span, format!("SLO `{name}` has no `spec`")));
        return Vec::new();
    };
    let service = scalar(spec, &["service"]).or(scalar(spec, &["serviceRef"])).map(str::to_string);
    let warn = |diagnostics: &mut Vec<Diagnostic>, span: Span, message: String| {
        diagnostics.push(Diagnostic::warning("openslo-approximated", span, message));
    };
    // The window: v1 `timeWindow[0].duration`, v1alpha `timeWindows[0].{unit,count}`.
    let window_ms = if let Some(window) = spec.get("timeWindow").and_then(|w| w.as_seq()).and_then(|w| w.first()) {
        if window.get("calendar").is_some() || scalar(window, &["isRolling"]) == Some("false") {
            warn(
                diagnostics,
                window.span,
                format!("SLO `{name}`: its calendar window is evaluated as a rolling window of the same length"),
            );
        }
        scalar(window, &["duration"]).and_then(prometheus_duration)
    } else if let Some(window) = spec.get("timeWindows").and_then(|w| w.as_seq()).and_then(|w| w.first()) {
        if window.get("calendar").is_some() || scalar(window, &["isRolling"]) == Some("false") {
            warn(
                diagnostics,
                window.span,
                format!("SLO `{name}`: its calendar window is evaluated as a rolling window of the same length"),
            );
        }
        let count: u64 = scalar(window, &["count"]).and_then(|c| c.parse().ok()).unwrap_or(1);
        let unit = match scalar(window, &["unit"]).unwrap_or("Day") {
            "Second" => 1_000,
            "Minute" => 60_000,
            "Hour" => 3_600_000,
            "Week" => 7 * 86_400_000,
            "Month" => 30 * 86_400_000,
            "Quarter" => 90 * 86_400_000,
            "Year" => 365 * 86_400_000,
            _ => 86_400_000,
        };
        Some(count * unit)
    } else {
        None
    };
    let Some(window_ms) = window_ms else {
        diagnostics.push(Diagnostic::error(
            "openslo-window",
            spec.span,
            format!("SLO `{name}` has no readable `timeWindow`"),
        ));
        return Vec::new();
    };
    match scalar(spec, &["budgetingMethod"]) {
        Some("Occurrences") | None => {}
        Some(method @ ("Timeslices" | "RatioTimeslices")) => warn(
            diagnostics,
            spec.get("budgetingMethod").map_or(spec.span, |n| n.span),
            format!("SLO `{name}`: {method} budgeting is evaluated as occurrences (good events over all events)"),
        ),
        Some(other) => diagnostics.push(Diagnostic::error(
            "openslo-budgeting",
            spec.get("budgetingMethod").map_or(spec.span, |n| n.span),
            format!("unknown budgeting method `{other}`"),
        )),
    }
    if let Some(policies) = spec.get("alertPolicies").filter(|p| !p.is_null()) {
        warn(
            diagnostics,
            policies.span,
            format!(
                "SLO `{name}`: its alert policies are not used; Tandem alerts with multi-window burn rates (page 14.4× over 1h and 5m, 6× over 6h and 30m; ticket 1× over 3d and 6h, scaled to the window)"
            ),
        );
    }
    // The indicator: inline (`indicator`, `sli`) or by reference (`indicatorRef`).
    let indicator = spec.get("indicator").or(spec.get("sli")).and_then(|i| i.get("spec").or(Some(i))).or_else(|| {
        let wanted = scalar(spec, &["indicatorRef"]).or(scalar(spec, &["sliRef"]))?;
        slis.iter().find(|(n, _)| *n == wanted).map(|(_, s)| *s)
    });
    // v1alpha puts ratio metrics on each objective instead.
    let per_objective = spec
        .get("objectives")
        .and_then(|o| o.as_seq())
        .is_some_and(|o| o.iter().all(|objective| objective.get("ratioMetrics").is_some()));
    if indicator.is_none() && !per_objective {
        diagnostics.push(Diagnostic::error(
            "openslo-sli",
            spec.span,
            format!("SLO `{name}` has no indicator Tandem can find (inline, or an SLI of the same file)"),
        ));
        return Vec::new();
    }
    let objectives: Vec<&Node> =
        spec.get("objectives").and_then(|o| o.as_seq()).map(|o| o.iter().collect()).unwrap_or_default();
    if objectives.is_empty() {
        diagnostics.push(Diagnostic::error("missing-key", spec.span, format!("SLO `{name}` has no `objectives`")));
        return Vec::new();
    }
    let several = objectives.len() > 1;
    let mut out = Vec::new();
    for (i, objective) in objectives.into_iter().enumerate() {
        let target = scalar(objective, &["target"])
            .and_then(|t| t.parse::<f64>().ok())
            .or_else(|| scalar(objective, &["targetPercent"]).and_then(|t| t.parse::<f64>().ok()).map(|p| p / 100.0));
        let label = scalar(objective, &["displayName"])
            .or(scalar(objective, &["name"]))
            .map_or_else(|| (i + 1).to_string(), str::to_string);
        let slo_name = if several { format!("{name}/{label}") } else { name.clone() };
        let Some(target) = target.filter(|t| *t > 0.0 && *t < 1.0) else {
            diagnostics.push(Diagnostic::error(
                "openslo-target",
                objective.span,
                format!("objective `{label}` of SLO `{name}` has no target between 0 and 1"),
            ));
            continue;
        };
        let sli = translate(indicator, objective, &slo_name, diagnostics);
        out.push(OpenSlo {
            name: slo_name.clone(),
            service: service.clone(),
            slo: sli.map(|sli| SloSpec {
                name: slo_name,
                span: document.span,
                objective: target,
                window_ms,
                sli,
                min_events: 10.0,
            }),
        });
    }
    out
}

/// The Prometheus query of a metric source, or why there is none.
fn prometheus_query(source: &Node) -> Result<String, String> {
    let source = source.get("metricSource").unwrap_or(source);
    let kind = scalar(source, &["type"]).or(scalar(source, &["source"]));
    let query = scalar(source, &["spec", "query"]).or(scalar(source, &["query"]));
    let prometheus = kind.is_none_or(|k| k.eq_ignore_ascii_case("prometheus"));
    match (prometheus, kind, query) {
        // Without a type (a `dataSourceRef`), the query is taken as PromQL.
        (true, _, Some(query)) => Ok(query.to_string()),
        (false, Some(other), _) => {
            Err(format!("its metric source is `{other}`; Tandem evaluates Prometheus queries only"))
        }
        _ => Err("its metric source has no query".into()),
    }
}

fn translate(indicator: Option<&Node>, objective: &Node, name: &str, diagnostics: &mut Vec<Diagnostic>) -> Option<Sli> {
    let unsupported = |diagnostics: &mut Vec<Diagnostic>, span: Span, why: String| {
        diagnostics.push(Diagnostic::warning(
            "openslo-unsupported",
            span,
            format!("SLO `{name}` loads but is not evaluated: {why}"),
        ));
        None
    };
    let ratio = objective.get("ratioMetrics").or_else(|| indicator?.get("ratioMetric"));
    let threshold = indicator.and_then(|i| i.get("thresholdMetric"));
    if let Some(ratio) = ratio {
        let counter = scalar(ratio, &["counter"]).or(scalar(ratio, &["incremental"])) != Some("false");
        let over = |query: &str| {
            if counter {
                format!("sum(increase(({query})[$window:1m]))")
            } else {
                format!("sum(sum_over_time(({query})[$window:1m]))")
            }
        };
        let total = match ratio.get("total").map(prometheus_query) {
            Some(Ok(q)) => q,
            Some(Err(why)) => return unsupported(diagnostics, ratio.span, why),
            None => return unsupported(diagnostics, ratio.span, "its ratio has no `total`".into()),
        };
        return match (ratio.get("good").map(prometheus_query), ratio.get("bad").map(prometheus_query)) {
            (Some(Ok(good)), _) => Some(Sli::Ratio { good: over(&good), total: over(&total) }),
            (None, Some(Ok(bad))) => {
                Some(Sli::Ratio { good: format!("({}) - ({})", over(&total), over(&bad)), total: over(&total) })
            }
            (Some(Err(why)), _) | (None, Some(Err(why))) => unsupported(diagnostics, ratio.span, why),
            (None, None) => unsupported(diagnostics, ratio.span, "its ratio has neither `good` nor `bad`".into()),
        };
    }
    if let Some(threshold) = threshold {
        let query = match prometheus_query(threshold) {
            Ok(q) => q,
            Err(why) => return unsupported(diagnostics, threshold.span, why),
        };
        let op = match scalar(objective, &["op"]) {
            Some("lt") => "<",
            Some("lte") => "<=",
            Some("gt") => ">",
            Some("gte") => ">=",
            other => {
                return unsupported(
                    diagnostics,
                    objective.span,
                    format!("a threshold objective needs `op` (lt, lte, gt, gte), found {other:?}"),
                );
            }
        };
        let Some(value) = scalar(objective, &["value"]).and_then(|v| v.parse::<f64>().ok()) else {
            return unsupported(diagnostics, objective.span, "a threshold objective needs a numeric `value`".into());
        };
        return Some(Sli::Ratio {
            good: format!("sum(count_over_time((({query}) {op} {value})[$window:1m]))"),
            total: format!("sum(count_over_time(({query})[$window:1m]))"),
        });
    }
    unsupported(diagnostics, objective.span, "its indicator is neither a ratioMetric nor a thresholdMetric".into())
}
