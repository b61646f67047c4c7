//! Prometheus's HTTP query API over Tandem's time-series store (`/api/v1/query`,
//! `/query_range`, `/series`, `/labels`, `/label/{name}/values`), in Prometheus's JSON shapes, so
//! Grafana can add Tandem as a Prometheus data source (with the token as an `Authorization`
//! header). Errors are `{"status": "error", "errorType", "error"}` as Prometheus writes them.

#[allow(unused_imports)]
use super::*;
use metrics::promql::{Engine, QueryError, Value, format_value};

/// A query-API error in Prometheus's shape.
pub(super) struct PromError(StatusCode, &'static str, String);

impl IntoResponse for PromError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"status": "error", "errorType": self.1, "error": self.2});
        (self.0, Json(body)).into_response()
    }
}

impl From<AppError> for PromError {
    fn from(error: AppError) -> PromError {
        PromError(error.status, "bad_data", error.message)
    }
}

fn bad(message: impl Into<String>) -> PromError {
    PromError(StatusCode::BAD_REQUEST, "bad_data", message.into())
}

fn success(data: serde_json::Value) -> Response {
    Json(serde_json::json!({"status": "success", "data": data})).into_response()
}

/// Form fields from the query string and, for POST, the url-encoded body (Grafana posts).
fn fields(query: Option<String>, body: &[u8]) -> Vec<(String, String)> {
    let mut out = form_pairs(query.as_deref().unwrap_or(""));
    out.extend(form_pairs(&String::from_utf8_lossy(body)));
    out
}

fn form_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(text: &str) -> String {
    crate::encoding::percent_decode(text, true)
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A time as Prometheus takes it: Unix seconds (with a fraction) or RFC 3339. Milliseconds.
fn time_of(text: &str) -> Result<i64, PromError> {
    if let Ok(seconds) = text.parse::<f64>() {
        return Ok((seconds * 1000.0).round() as i64);
    }
    text.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|_| bad(format!("cannot parse \"{text}\" to a valid timestamp")))
}

/// A step or duration: seconds (`15`, `0.5`) or a PromQL duration (`15s`, `1m30s`). Milliseconds.
fn duration_of(text: &str) -> Result<i64, PromError> {
    if let Ok(seconds) = text.parse::<f64>() {
        return Ok((seconds * 1000.0).round() as i64);
    }
    promql_parser::util::parse_duration(text)
        .map(|d| d.as_millis() as i64)
        .map_err(|_| bad(format!("cannot parse \"{text}\" to a valid duration")))
}

fn query_error(error: QueryError) -> PromError {
    match error {
        QueryError::Parse(m) => bad(m),
        QueryError::TooManySeries => PromError(StatusCode::UNPROCESSABLE_ENTITY, "execution", error.to_string()),
        QueryError::Eval(m) => PromError(StatusCode::UNPROCESSABLE_ENTITY, "execution", m),
    }
}

fn metric(labels: &metrics::Labels) -> serde_json::Value {
    serde_json::Value::Object(labels.iter().map(|(n, v)| (n.to_string(), serde_json::Value::from(v))).collect())
}

/// `[unix seconds, "value"]`; whole seconds are written without a fraction, as Prometheus does.
fn point(t: i64, v: f64) -> serde_json::Value {
    serde_json::json!([seconds(t), format_value(v)])
}

/// A range vector as Prometheus answers it.
fn matrix(series: &[metrics::promql::Series]) -> serde_json::Value {
    let result: Vec<serde_json::Value> = series
        .iter()
        .map(|s| {
            let values: Vec<serde_json::Value> = s.points.iter().map(|(t, v)| point(*t, *v)).collect();
            serde_json::json!({"metric": metric(&s.labels), "values": values})
        })
        .collect();
    serde_json::json!({"resultType": "matrix", "result": result})
}

/// Runs a query off the async threads; its error in Prometheus's shape.
async fn evaluate<T: Send + 'static>(
    app: &App,
    query: impl FnOnce(&metrics::Db) -> Result<T, QueryError> + Send + 'static,
) -> Result<T, PromError> {
    let tsdb = app.tsdb.clone();
    tokio::task::spawn_blocking(move || query(&tsdb))
        .await
        .map_err(|e| PromError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(query_error)
}

fn seconds(t: i64) -> serde_json::Value {
    if t % 1000 == 0 { serde_json::json!(t / 1000) } else { serde_json::json!(t as f64 / 1000.0) }
}

#[utoipa::path(get, path = "/api/v1/query", tag = "monitoring",
    summary = "PromQL at one instant (Prometheus's HTTP API: query, time)", security(("token" = [])),
    params(("query" = String, Query), ("time" = Option<String>, Query, description = "Unix seconds or RFC 3339; now when absent")),
    responses((status = 200, description = "`{status, data: {resultType, result}}` as Prometheus answers")))]
pub(super) async fn query(
    State(app): State<Arc<App>>,
    _caller: Caller,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, PromError> {
    let fields = fields(raw, &body);
    let text = field(&fields, "query").ok_or_else(|| bad("the `query` parameter is missing"))?.to_string();
    let t = match field(&fields, "time") {
        Some(t) => time_of(t)?,
        None => jiff::Timestamp::now().as_millisecond(),
    };
    let value = evaluate(&app, move |tsdb| Engine::instant(tsdb, &text, t)).await?;
    let data = match value {
        Value::Scalar(v) => serde_json::json!({"resultType": "scalar", "result": point(t, v)}),
        Value::String(s) => serde_json::json!({"resultType": "string", "result": [seconds(t), s]}),
        Value::Vector(samples) => serde_json::json!({"resultType": "vector", "result":
            samples.iter().map(|s| serde_json::json!({"metric": metric(&s.labels), "value": point(t, s.v)})).collect::<Vec<_>>()}),
        Value::Matrix(series) => matrix(&series),
    };
    Ok(success(data))
}

#[utoipa::path(get, path = "/api/v1/query_range", tag = "monitoring",
    summary = "PromQL over a range (Prometheus's HTTP API: query, start, end, step)", security(("token" = [])),
    params(("query" = String, Query), ("start" = String, Query), ("end" = String, Query), ("step" = String, Query)),
    responses((status = 200, description = "`{status, data: {resultType: matrix, result}}` as Prometheus answers")))]
pub(super) async fn query_range(
    State(app): State<Arc<App>>,
    _caller: Caller,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, PromError> {
    let fields = fields(raw, &body);
    let need =
        |name: &'static str| field(&fields, name).ok_or_else(|| bad(format!("the `{name}` parameter is missing")));
    let text = need("query")?.to_string();
    let (start, end, step) = (time_of(need("start")?)?, time_of(need("end")?)?, duration_of(need("step")?)?);
    if end < start {
        return Err(bad("end timestamp must not be before start time"));
    }
    let series = evaluate(&app, move |tsdb| Engine::range(tsdb, &text, start, end, step)).await?;
    Ok(success(matrix(&series)))
}

#[utoipa::path(get, path = "/api/v1/series", tag = "monitoring",
    summary = "Series matching selectors (Prometheus's HTTP API: match[], start, end)", security(("token" = [])),
    params(("match[]" = Vec<String>, Query)),
    responses((status = 200, description = "`{status, data: [labels…]}`")))]
pub(super) async fn series(
    State(app): State<Arc<App>>,
    _caller: Caller,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, PromError> {
    let fields = fields(raw, &body);
    let selectors: Vec<&str> = fields.iter().filter(|(k, _)| k == "match[]").map(|(_, v)| v.as_str()).collect();
    if selectors.is_empty() {
        return Err(bad("no match[] parameter provided"));
    }
    let start = field(&fields, "start").map(time_of).transpose()?.unwrap_or(i64::MIN);
    let end = field(&fields, "end").map(time_of).transpose()?.unwrap_or(i64::MAX);
    let mut found = std::collections::BTreeSet::new();
    for selector in selectors {
        let expr = metrics::promql::parse(selector).map_err(query_error)?;
        let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
            return Err(bad(format!("`{selector}` is not a series selector")));
        };
        let matchers = metrics::promql::matchers_of(&vs);
        for s in app.tsdb.select(&matchers, start, end) {
            if !s.samples.is_empty() {
                found.insert(s.labels);
            }
        }
    }
    Ok(success(serde_json::Value::Array(found.iter().map(metric).collect())))
}

#[utoipa::path(get, path = "/api/v1/labels", tag = "monitoring", summary = "Every label name",
    security(("token" = [])), responses((status = 200, description = "`{status, data: [names…]}`")))]
pub(super) async fn labels(State(app): State<Arc<App>>, _caller: Caller) -> Response {
    success(serde_json::json!(app.tsdb.label_names()))
}

#[utoipa::path(get, path = "/api/v1/label/{name}/values", tag = "monitoring", summary = "Every value of a label",
    params(("name" = String, Path)), security(("token" = [])),
    responses((status = 200, description = "`{status, data: [values…]}`")))]
pub(super) async fn label_values(State(app): State<Arc<App>>, _caller: Caller, Path(name): Path<String>) -> Response {
    success(serde_json::json!(app.tsdb.label_values(&name)))
}
