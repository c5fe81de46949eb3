//! `muster-master --http ADDR`: the group over HTTP (axum), for dashboards, scripts and
//! load balancers.
//!
//! | request | answer |
//! |---|---|
//! | `GET /` | the group as a live web page for people ([`page`](crate::page)), with `/page.js` and `/page.css`; it reads only the endpoints below |
//! | `GET /v1/members` | `200` [`ViewJson`]: `{"epoch", "revision", "synced", "members": [...]}`: every member the view holds unless filtered (the filter below; default: any state, draining members included). `400` on an unknown parameter or a bad filter, `503` before the first listing |
//! | `GET /v1/members/{name}` | `200` [`MemberJson`], `404` when there is no such member, `400` for an invalid name, `503` before the first listing |
//! | `GET /v1/events` | server-sent events, one per transition: `id: EPOCH-REVISION.INDEX`, `data:` [`EventJson`](crate::render::EventJson). Without a resume point only new transitions; `?from_revision=N&epoch=E` replays buffered transitions of epoch `E` from revision `N` on (`400` without the epoch), `Last-Event-ID` (sent by browsers when they reconnect) resumes after that event. `410` when the resume point is older than the buffer or of another epoch (the store was replaced; an id without an epoch counts as one): `epoch` and `oldest_revision` in the body say what can still be served; take a fresh `/v1/members` and resume from its `revision + 1` and its `epoch`. When the epoch changes every open stream ends. With the filter (default: everything), a transition is sent when its member matches the filter **before or after** it (a member that left, failed or was removed matches nothing after): a consumer sees a member enter its selection, change inside it, and the one transition that takes it out (an update that drops the label, `draining` with `draining=false`, `suspect` with `state=alive`, `left`, `failed`, `removed`). Ids stay the stream's positions, so a resume with the same filter has no gap |
//! | `GET /v1/endpoints` | `200` [`EndpointsJson`]: `{"epoch", "revision", "synced", "members": [...]}`, the members the filter selects (default: `alive` and not draining, the set to send work to), with `X-Muster-Revision` and `X-Muster-Epoch` headers; `503` before the first listing. `revision` is the last event the set reflects (it may move on without the set changing). **Long poll**: `?wait_revision=R` (the last answer's `revision`) with optional `epoch=E` (its `epoch`) and `wait=` (default 30s, at most 300s: `400` above) answers at once when the set's revision is not `R` (behind or ahead: another history, another master) or its epoch not `E` (then with `"epoch_changed": true`: the store was replaced, take the answer as the whole set, its revisions start again); otherwise it holds the request until the set's members change (a change outside the set moves `revision` silently and keeps holding) or `wait` runs out, then answers `200` with the set as it is then (after `wait`, usually the same set: poll again with its revision). **Stream**: `?watch=sse` or `Accept: text/event-stream`: server-sent events, `data:` the whole set, once at the start and after every change (a slow reader gets the latest set, never a stale one); it ends when the master stops. `400` for both forms at once, for `epoch=`/`wait=` without `wait_revision=`, and for any bad value, saying how to write it |
//! | `GET /metrics` | Prometheus text (OpenMetrics when the `Accept` header asks for it); see [`metrics`](crate::metrics) |
//! | `GET /healthz` | `200` when the master has synced and its watch is open, else `503` with the reason: `{"status", "synced", "watching", "revision", "last_error"}` (`last_error` the master's last error or `null`), plus `reason` and `unhealthy_for_ms` with `503` |
//!
//! The filter, on `/v1/members`, `/v1/events` and `/v1/endpoints` alike
//! ([`Filter`]): `state=alive` or `state=suspect` (repeatable or
//! comma-separated: any of them), `label=KEY=VALUE` or `label=KEY` (repeatable: all of
//! them), `draining=true` (draining members too) or `draining=false` (leave them out).
//! Only `/v1/endpoints` leaves draining members out unless asked (`draining=true`), as it
//! keeps `state=alive` unless asked: its default is `Filter::alive()`, and a
//! [`Filter`]'s `Display` is a query string for it.
//!
//! Held requests (long polls and both event streams) count against the server's
//! connection cap (`server::Limits`, `--http-max-connections`). Each costs one task and one
//! subscription to the master while it is held; a long poll at most `wait`.
//!
//! Every error is JSON: `{"error": "..."}` (plus `oldest_revision` for `410`), including
//! `404` for an unknown path, `405` for a method other than `GET` and `400` for a path axum
//! cannot decode.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;
use muster_core::{validate_name, MemberState, Revision};
use muster_master::{Endpoints, Filter};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;

use crate::events::{Entry, Epoch, EventLog, Position};
use crate::fatal::Fatal;
use crate::metrics::Group;
use crate::render::{EndpointsJson, MemberJson, ViewJson};

/// What the handlers share.
pub struct Api {
    /// The live group.
    pub group: Arc<dyn Group>,
    /// The group's prefix, for messages.
    pub prefix: String,
    /// Recent transitions, for `/v1/events`.
    pub events: Arc<EventLog>,
    /// What `/metrics` encodes.
    pub registry: Registry,
}

/// The API's routes.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/", get(page))
        .route(crate::page::SCRIPT_PATH, get(crate::page::script))
        .route(crate::page::STYLE_PATH, get(crate::page::style))
        .route("/v1/members", get(members))
        .route("/v1/members/{name}", get(member))
        .route("/v1/events", get(events))
        .route("/v1/endpoints", get(endpoints))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(api)
}

/// Binds the API's listener. `:8080` means every interface, port 8080. Fails with a
/// one-line error naming the address (e.g. when the port is in use).
pub async fn bind(addr: &str) -> Result<TcpListener, Fatal> {
    let spec = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_owned()
    };
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host(spec.as_str()).await {
        Ok(addrs) => addrs.collect(),
        Err(error) => {
            return Err(Fatal::usage(format!(
                "invalid --http address {addr:?} ({error}); use HOST:PORT, e.g. 127.0.0.1:8080 or :8080"
            )))
        }
    };
    let mut last = None;
    for socket in addrs {
        match TcpListener::bind(socket).await {
            Ok(listener) => return Ok(listener),
            Err(error) => last = Some(error),
        }
    }
    let why = last.map_or_else(|| "no address".to_owned(), |e| e.to_string());
    Err(Fatal::failure(format!(
        "cannot listen on {addr} for --http: {why}; pick another address or port"
    )))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn not_synced(api: &Api) -> Response {
    let mut response = error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "not synced yet: the first listing of {} has not completed; retry shortly (see /healthz)",
            api.prefix
        ),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    response
}

/// The endpoints, for the messages of `404` and `405`.
const ENDPOINTS: &str =
    "GET / (the web page), /v1/members, /v1/members/{name}, /v1/events, /v1/endpoints, /metrics or /healthz";

async fn page(State(api): State<Arc<Api>>) -> Response {
    crate::page::page(&api.prefix)
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no such endpoint; try {ENDPOINTS}"),
    )
}

/// A known path with another method than `GET` (axum's own answer has an empty body).
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not allowed on {}: this API is read-only; use {ENDPOINTS}",
            uri.path()
        ),
    )
}

/// The filter parameters, which every listing endpoint takes.
const FILTER: &[&str] = &["state", "label", "draining"];

/// The query string as key/value pairs, keys checked against `allowed`; the error is the
/// message for a `400`.
fn query_pairs(query: Option<&str>, allowed: &[&str]) -> Result<Vec<(String, String)>, String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| format!("bad query string: {e}"))?;
    for (key, _) in &pairs {
        if !allowed.contains(&key.as_str()) {
            return Err(format!(
                "unknown query parameter {key:?}; this endpoint takes: {}",
                allowed.join(", ")
            ));
        }
    }
    Ok(pairs)
}

/// The filter parameters (`state=`, `label=`, `draining=`) among `pairs`, on top of `base`
/// (the endpoint's default), as the master's [`Filter`]: one rule for the library and the
/// API. Other keys are left to the caller. `None` when no filter parameter is given.
fn parse_filter(pairs: &[(String, String)], base: Filter) -> Result<Option<Filter>, String> {
    let mut states = Vec::new();
    let mut filter = base;
    let mut given = false;
    let mut draining = None;
    for (key, value) in pairs {
        match key.as_str() {
            "state" => {
                for state in value.split(',').map(str::trim) {
                    states.push(match state {
                        "alive" => MemberState::Alive,
                        "suspect" => MemberState::Suspect,
                        "left" | "failed" | "removed" => return Err(format!(
                            "state={state}: members that left, failed or were removed are no longer in the group; follow /v1/events to see them go"
                        )),
                        other => return Err(format!(
                            "state={other:?} is not a state; use alive or suspect"
                        )),
                    });
                }
            }
            "label" => {
                filter = filter
                    .label_rule(value)
                    .map_err(|e| format!("label={value:?}: {e}"))?
            }
            "draining" => {
                let keep = match value.trim() {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(format!(
                            "draining={other:?}: use draining=true (draining members too) or draining=false (leave them out)"
                        ))
                    }
                };
                if draining.is_some_and(|d| d != keep) {
                    return Err("draining= is given twice with different values; give it once, true or false".to_owned());
                }
                draining = Some(keep);
                filter = filter.draining(keep);
            }
            _ => continue,
        }
        given = true;
    }
    Ok(given.then(|| filter.states(states)))
}

async fn members(State(api): State<Arc<Api>>, RawQuery(query): RawQuery) -> Response {
    let pairs = match query_pairs(query.as_deref(), FILTER) {
        Ok(pairs) => pairs,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let filter = match parse_filter(&pairs, Filter::any_state()) {
        Ok(filter) => filter.unwrap_or_else(Filter::any_state),
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let view = api.group.view();
    if !view.synced {
        return not_synced(&api);
    }
    Json(ViewJson::new(&view, |m| filter.matches(m))).into_response()
}

async fn member(
    State(api): State<Arc<Api>>,
    name: Result<Path<String>, PathRejection>,
) -> Response {
    // axum's own rejection (e.g. a name that is not UTF-8 once percent-decoded) is plain
    // text: answer it in the API's JSON like every other error.
    let name = match name {
        Ok(Path(name)) => name,
        Err(rejection) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the member name in the path cannot be read ({}); use /v1/members/{{name}} with a UTF-8 name, percent-encoded",
                    rejection.body_text()
                ),
            )
        }
    };
    if let Err(e) = validate_name(&name) {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    let view = api.group.view();
    if !view.synced {
        return not_synced(&api);
    }
    match view.get(&name) {
        Some(member) => Json(MemberJson::from(member)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!(
                "no member named {name:?} under {}: it never joined, or it left or failed",
                api.prefix
            ),
        ),
    }
}

fn sse_event(entry: &Entry) -> Event {
    Event::default()
        .id(entry.position.to_string())
        .data(entry.json.as_str())
}

async fn events(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let pairs = match query_pairs(
        query.as_deref(),
        &["from_revision", "epoch", "state", "label", "draining"],
    ) {
        Ok(pairs) => pairs,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    // No filter parameter: every transition (even one of a member this log never saw
    // before it went).
    let filter = match parse_filter(&pairs, Filter::any_state()) {
        Ok(filter) => filter,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let (mut from, mut epoch) = (None, None);
    for (key, value) in pairs {
        if FILTER.contains(&key.as_str()) {
            continue;
        }
        if key == "epoch" {
            match value.parse::<Epoch>() {
                Ok(e) => epoch = Some(e),
                Err(message) => return error(StatusCode::BAD_REQUEST, format!("epoch: {message}")),
            }
            continue;
        }
        match value.trim().parse::<i64>() {
            // 0 means "from the very start", like `Last-Event-ID: EPOCH-0.0`: both are
            // served only if the buffer holds everything since then.
            Ok(revision) if revision >= 0 => from = Some(revision),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("from_revision={value:?} is not a revision (a whole number >= 0)"),
                )
            }
        }
    }
    // A revision means something only in its store's history: a resume point names both.
    let mut after = match (from, epoch) {
        (Some(revision), Some(epoch)) => Some(Position::before(epoch, revision)),
        (None, None) => None,
        (Some(_), None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "from_revision needs epoch= as well (both from GET /v1/members: resume with \
                 from_revision = its revision + 1 and its epoch), so that a resume never spans \
                 two histories of the store",
            )
        }
        (None, Some(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "epoch= only makes sense with from_revision=",
            )
        }
    };
    // A reconnecting client's Last-Event-ID takes precedence over the URL it reconnects to.
    if let Some(last) = headers.get("last-event-id") {
        match last.to_str().map_err(|e| e.to_string()).and_then(|id| {
            if !id.contains('-') && id.trim().split('.').all(|part| part.parse::<u64>().is_ok()) {
                // An id without an epoch (from a master before epochs): it names a
                // revision of an unknown history, so it cannot be resumed safely.
                Ok(Position::before(Epoch(0), 0))
            } else {
                id.parse()
            }
        }) {
            Ok(position) => after = Some(position),
            Err(message) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("bad Last-Event-ID: {message}"),
                )
            }
        }
    }
    let replay = match api.events.replay(after) {
        Ok(replay) => replay,
        Err(gone) => {
            let body = json!({
                "error": format!(
                    "the events you asked for are no longer buffered, or belong to another history of the store (this master holds transitions of epoch {} from revision {} on); take a fresh GET /v1/members and resume with from_revision = its revision + 1 and epoch = its epoch",
                    gone.epoch, gone.oldest_revision
                ),
                "epoch": gone.epoch.to_string(),
                "oldest_revision": gone.oldest_revision,
            });
            return (StatusCode::GONE, Json(body)).into_response();
        }
    };
    let selected = move |entry: &Entry| filter.as_ref().map_or(true, |f| entry.selected_by(f));
    let backlog: Vec<Arc<Entry>> = replay.backlog.into_iter().filter(|e| selected(e)).collect();
    let backlog =
        futures::stream::iter(backlog).map(|entry| Ok::<_, Infallible>(sse_event(&entry)));
    let live =
        futures::stream::unfold((replay.live, selected), |(mut live, selected)| async move {
            loop {
                match live.recv().await {
                    Ok(entry) if !selected(&entry) => continue,
                    Ok(entry) => return Some((Ok(sse_event(&entry)), (live, selected))),
                    Err(RecvError::Lagged(missed)) => {
                        // End the stream: the client reconnects with its Last-Event-ID and is
                        // served from the buffer, instead of silently missing transitions.
                        tracing::warn!(missed, "an event stream reader fell behind; closing it");
                        return None;
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        });
    Sse::new(backlog.chain(live))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// How long a `/v1/endpoints?wait_revision=` long poll is held without `wait=`.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// The longest `wait=` a long poll may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// The `/v1/endpoints` parameters besides the filter.
const ENDPOINTS_PARAMS: &[&str] = &[
    "state",
    "label",
    "draining",
    "wait_revision",
    "epoch",
    "wait",
    "watch",
];

/// How a `/v1/endpoints` request wants its answer.
enum Answer {
    /// The set now.
    Now,
    /// The set once its revision is no longer `revision` (or its epoch not `epoch`), or
    /// after `wait`.
    LongPoll {
        revision: Revision,
        epoch: Option<Epoch>,
        wait: Duration,
    },
    /// Server-sent events: the set now and after every change.
    Sse,
}

/// The non-filter parameters of `/v1/endpoints`; the error is the message for a `400`.
fn parse_answer(pairs: &[(String, String)], headers: &HeaderMap) -> Result<Answer, String> {
    let (mut revision, mut epoch, mut wait, mut sse) = (None, None, None, false);
    for (key, value) in pairs {
        match key.as_str() {
            "wait_revision" => match value.trim().parse::<Revision>() {
                Ok(r) if r >= 0 => revision = Some(r),
                _ => {
                    return Err(format!(
                        "wait_revision={value:?} is not a revision; use the whole number >= 0 from the last answer's \"revision\" (or its X-Muster-Revision header)"
                    ))
                }
            },
            "epoch" => {
                epoch = Some(
                    value
                        .parse::<Epoch>()
                        .map_err(|e| format!("epoch={value:?}: {e}; use the last answer's \"epoch\""))?,
                )
            }
            "wait" => {
                let d = crate::cli::parse_duration(value).map_err(|e| format!("wait={e}"))?;
                if d > MAX_WAIT {
                    return Err(format!(
                        "wait={value}: a long poll is held at most {}s; use e.g. wait=30s",
                        MAX_WAIT.as_secs()
                    ));
                }
                wait = Some(d);
            }
            "watch" => match value.as_str() {
                "sse" => sse = true,
                other => {
                    return Err(format!(
                        "watch={other:?}: the only watch is watch=sse (server-sent events; or send Accept: text/event-stream)"
                    ))
                }
            },
            _ => {}
        }
    }
    let accepts_sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    match revision {
        Some(_) if sse || accepts_sse => Err("wait_revision= is a long poll, watch=sse (or Accept: text/event-stream) a stream: ask for one of them".to_owned()),
        Some(revision) => Ok(Answer::LongPoll {
            revision,
            epoch,
            wait: wait.unwrap_or(DEFAULT_WAIT),
        }),
        None if epoch.is_some() || wait.is_some() => Err(
            "epoch= and wait= only make sense with wait_revision= (a long poll: wait_revision = the last answer's revision, epoch = its epoch)".to_owned(),
        ),
        None if sse || accepts_sse => Ok(Answer::Sse),
        None => Ok(Answer::Now),
    }
}

/// A set as a `200`, with its position in headers too.
fn endpoints_response(set: &Endpoints, epoch_changed: bool) -> Response {
    let mut response = Json(EndpointsJson::new(set, epoch_changed)).into_response();
    let headers = response.headers_mut();
    headers.insert("x-muster-revision", header::HeaderValue::from(set.revision));
    if let Ok(epoch) = header::HeaderValue::from_str(&set.epoch.to_string()) {
        headers.insert("x-muster-epoch", epoch);
    }
    response
}

fn endpoints_event(set: &Endpoints) -> Event {
    let json =
        serde_json::to_string(&EndpointsJson::new(set, false)).expect("sets always serialize");
    Event::default().data(json)
}

async fn endpoints(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let pairs = match query_pairs(query.as_deref(), ENDPOINTS_PARAMS) {
        Ok(pairs) => pairs,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let filter = match parse_filter(&pairs, Filter::alive()) {
        Ok(filter) => filter.unwrap_or_else(Filter::alive),
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let answer = match parse_answer(&pairs, &headers) {
        Ok(answer) => answer,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let mut set = api.group.endpoints(filter);
    let current = set.borrow_and_update().clone();
    if !current.synced {
        return not_synced(&api);
    }
    match answer {
        Answer::Now => endpoints_response(&current, false),
        Answer::LongPoll {
            revision,
            epoch,
            wait,
        } => {
            let moved =
                |set: &Endpoints| set.revision != revision || epoch.is_some_and(|e| e != set.epoch);
            if !moved(&current) {
                // Held until the set changes, the master stops, or `wait` passes: all three
                // answer with the set as it is then.
                let _ = tokio::time::timeout(wait, set.changed()).await;
            }
            let now = set.borrow().clone();
            endpoints_response(&now, epoch.is_some_and(|e| e != now.epoch))
        }
        Answer::Sse => {
            let first = futures::stream::once(std::future::ready(Ok::<_, Infallible>(
                endpoints_event(&current),
            )));
            let changes = futures::stream::unfold(set, |mut set| async move {
                set.changed().await.ok()?;
                let now = set.borrow_and_update().clone();
                Some((Ok(endpoints_event(&now)), set))
            });
            Sse::new(first.chain(changes))
                .keep_alive(KeepAlive::default())
                .into_response()
        }
    }
}

async fn metrics(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    if wants_openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            crate::metrics::openmetrics_text(&api.registry),
        )
            .into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            crate::metrics::prometheus_text(&api.registry),
        )
            .into_response()
    }
}

async fn healthz(State(api): State<Arc<Api>>) -> Response {
    let health = api.group.health();
    let reason = if !health.synced {
        Some(format!(
            "not synced: the first listing of {} has not completed",
            api.prefix
        ))
    } else if !health.watching {
        Some(format!("not watching {}", api.prefix))
    } else {
        None
    };
    let mut body = json!({
        "status": if reason.is_none() { "ok" } else { "unavailable" },
        "synced": health.synced,
        "watching": health.watching,
        "revision": health.revision,
        "last_error": health.last_error,
    });
    match reason {
        None => (StatusCode::OK, Json(body)).into_response(),
        Some(reason) => {
            let reason = match &health.last_error {
                Some(last) => format!("{reason}: {last}"),
                None => reason,
            };
            body["reason"] = json!(reason);
            if let Some(since) = health.unhealthy_since {
                body["unhealthy_for_ms"] = json!(since.elapsed().as_millis() as u64);
            }
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}
