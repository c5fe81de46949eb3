//! The HTTP API on a fake group (no etcd, no sockets): every status code and filter, the
//! event stream's resume rules, the metrics' names.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use futures::StreamExt;
use muster_core::{
    BadKeyReason, Incarnation, Member, MemberInfo, MemberState, Revision, Transition,
    TransitionKind,
};
use muster_master::{Endpoints, Epoch, Filter, Health, Position, View};
use muster_programs::events::EventLog;
use muster_programs::http::{router, Api};
use muster_programs::metrics::{registry, Group};
use muster_programs::render::{EndpointsJson, EventJson, MemberJson, ViewJson};
use muster_programs::timed::StoreMetrics;
use serde_json::Value;
use tokio::sync::watch;
use tower::ServiceExt;

/// A group whose view and health the test sets. Its endpoint sets follow the view as the
/// master's do: a new snapshot only when the selected members change.
#[derive(Default)]
struct Fake {
    view: Mutex<View>,
    health: Mutex<Health>,
    sets: Mutex<Vec<(Filter, watch::Sender<Arc<Endpoints>>)>>,
}

fn selected(view: &View, filter: &Filter) -> Endpoints {
    Endpoints {
        epoch: view.epoch,
        revision: view.revision,
        synced: view.synced,
        members: view
            .members
            .iter()
            .filter(|(_, m)| filter.matches(m))
            .map(|(n, m)| (n.clone(), m.clone()))
            .collect(),
    }
}

impl Fake {
    /// Sets the view and publishes every endpoint set it changes.
    fn set_view(&self, view: View) {
        for (filter, tx) in self.sets.lock().unwrap().iter() {
            let next = selected(&view, filter);
            tx.send_if_modified(|current| {
                let changed = current.synced != next.synced || current.members != next.members;
                *current = Arc::new(next);
                changed
            });
        }
        *self.view.lock().unwrap() = view;
    }

    /// How many endpoint sets requests hold open now.
    fn held(&self) -> usize {
        self.sets
            .lock()
            .unwrap()
            .iter()
            .map(|(_, tx)| tx.receiver_count())
            .sum()
    }
}

impl Group for Fake {
    fn view(&self) -> View {
        self.view.lock().unwrap().clone()
    }
    fn health(&self) -> Health {
        self.health.lock().unwrap().clone()
    }
    fn endpoints(&self, filter: Filter) -> watch::Receiver<Arc<Endpoints>> {
        let (tx, rx) = watch::channel(Arc::new(selected(&self.view(), &filter)));
        self.sets.lock().unwrap().push((filter, tx));
        rx
    }
}

fn member(name: &str, state: MemberState, zone: &str) -> Member {
    Member {
        info: Arc::new(
            MemberInfo::new(name, format!("{name}:80"))
                .cpus(2)
                .label("zone", zone),
        ),
        state,
        incarnation: Incarnation(7),
        record_revision: 3,
        since: 4,
        suspect_since: None,
    }
}

fn transition(name: &str, kind: TransitionKind, revision: Revision) -> Transition {
    Transition {
        kind,
        member: member(name, MemberState::Alive, "a"),
        revision,
        at: std::time::Instant::now(),
    }
}

/// A fake group synced at revision 10 with a (alive, zone a), b (alive, zone b), c (suspect,
/// zone a), and its router; events buffered from revision `start`, `capacity` of them.
fn setup(capacity: usize, start: Revision) -> (Arc<Fake>, Arc<EventLog>, Router) {
    let fake = Arc::new(Fake::default());
    let events = Arc::new(EventLog::new(capacity, EPOCH, start).with_members(initial()));
    let group: Arc<dyn Group> = fake.clone();
    let api = Api {
        group: group.clone(),
        prefix: "/g/".into(),
        events: events.clone(),
        registry: registry(group, &StoreMetrics::new()),
    };
    (fake, events, router(Arc::new(api)))
}

/// a (alive, zone a), b (alive, zone b), c (suspect, zone a).
fn initial() -> BTreeMap<String, Member> {
    [
        member("a", MemberState::Alive, "a"),
        member("b", MemberState::Alive, "b"),
        member("c", MemberState::Suspect, "a"),
    ]
    .into_iter()
    .map(|m| (m.name().to_owned(), m))
    .collect()
}

fn sync(fake: &Fake) {
    let members = initial();
    fake.set_view(View {
        epoch: EPOCH,
        revision: 10,
        synced: true,
        members,
    });
    let mut health = fake.health.lock().unwrap();
    health.synced = true;
    health.watching = true;
    health.revision = 10;
    health.transitions.insert(TransitionKind::Joined, 3);
    health.transitions.insert(TransitionKind::Suspect, 1);
}

async fn get(router: &Router, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let mut request = Request::get(uri);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    // An event stream that answers 200 never ends: that is a failed expectation, not a hang.
    let body = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        axum::body::to_bytes(response.into_body(), 1 << 20),
    )
    .await
    .unwrap_or_else(|_| panic!("GET {uri}: the body did not end ({status})"))
    .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn names(body: &str) -> Vec<String> {
    let view: ViewJson = serde_json::from_str(body).unwrap();
    view.members.into_iter().map(|m| m.name).collect()
}

/// The epoch of the fake group's store.
const EPOCH: Epoch = Epoch(0xab);

/// The position the master gives the `index`-th transition of `revision`.
fn at(revision: Revision, index: i64) -> Position {
    Position {
        epoch: EPOCH,
        revision,
        index,
    }
}

/// The SSE id of that position.
fn id(revision: Revision, index: i64) -> String {
    at(revision, index).to_string()
}

/// `/v1/events` from `revision` of the fake group's epoch.
fn from(revision: Revision) -> String {
    format!("/v1/events?from_revision={revision}&epoch={EPOCH}")
}

#[tokio::test]
async fn members_are_unavailable_until_synced_and_health_says_why() {
    let (fake, _, router) = setup(10, 0);
    let (status, body) = get(&router, "/v1/members", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(json(&body)["error"]
        .as_str()
        .unwrap()
        .contains("not synced"));
    let (status, body) = get(&router, "/healthz", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        json(&body)["reason"]
            .as_str()
            .unwrap()
            .contains("not synced"),
        "{body}"
    );

    sync(&fake);
    let (status, body) = get(&router, "/healthz", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(json(&body)["status"], "ok");

    fake.health.lock().unwrap().watching = false;
    fake.health.lock().unwrap().last_error = Some("etcd unavailable: boom".into());
    let (status, body) = get(&router, "/healthz", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let reason = json(&body)["reason"].as_str().unwrap().to_owned();
    assert!(
        reason.contains("not watching") && reason.contains("boom"),
        "{reason}"
    );
    // The error on its own too, for the web page's banner.
    assert_eq!(json(&body)["last_error"], "etcd unavailable: boom");
}

#[tokio::test]
async fn the_page_is_served_under_a_strict_policy_and_always_revalidated() {
    let (fake, _, router) = setup(10, 0);
    sync(&fake);
    for (uri, content_type, says) in [
        (
            "/",
            "text/html; charset=utf-8",
            r#"<code id="prefix">/g/</code>"#,
        ),
        (
            "/page.js",
            "text/javascript; charset=utf-8",
            "new EventSource(",
        ),
        ("/page.css", "text/css; charset=utf-8", "#health"),
    ] {
        let response = router
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], content_type, "{uri}");
        assert_eq!(headers["cache-control"], "no-cache", "{uri}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{uri}");
        let policy = headers["content-security-policy"].to_str().unwrap();
        for rule in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
        ] {
            assert!(policy.contains(rule), "{uri}: {policy}");
        }
        assert!(!policy.contains("unsafe"), "{uri}: {policy}");
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.contains(says), "{uri}: {body}");
    }
    // Only GET: the page is as read-only as the API.
    let (status, body) = {
        let request = Request::post("/").body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    };
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
}

#[tokio::test]
async fn members_filter_by_state_and_labels() {
    let (fake, _, router) = setup(10, 0);
    sync(&fake);
    let cases: &[(&str, &[&str])] = &[
        ("/v1/members", &["a", "b", "c"]),
        ("/v1/members?state=alive", &["a", "b"]),
        ("/v1/members?state=suspect", &["c"]),
        ("/v1/members?state=alive,suspect", &["a", "b", "c"]),
        ("/v1/members?state=alive&state=suspect", &["a", "b", "c"]),
        ("/v1/members?label=zone=a", &["a", "c"]),
        ("/v1/members?state=alive&label=zone=a", &["a"]),
        ("/v1/members?label=zone", &["a", "b", "c"]),
        ("/v1/members?label=rack", &[]),
        ("/v1/members?label=zone=a&label=zone=b", &[]),
    ];
    for (uri, expected) in cases {
        let (status, body) = get(&router, uri, &[]).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        assert_eq!(names(&body), *expected, "{uri}");
    }
    let (_, body) = get(&router, "/v1/members", &[]).await;
    let view: ViewJson = serde_json::from_str(&body).unwrap();
    assert_eq!(view.revision, 10);
    assert!(view.synced);
    assert_eq!(
        view.members[0],
        MemberJson::from(&member("a", MemberState::Alive, "a"))
    );
    for (uri, says) in [
        ("/v1/members?stat=alive", "unknown query parameter"),
        ("/v1/members?state=dead", "not a state"),
        ("/v1/members?state=left", "no longer in the group"),
        ("/v1/members?label==a", "empty key"),
        ("/v1/members?label=", "KEY=VALUE"),
    ] {
        let (status, body) = get(&router, uri, &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        let error = json(&body)["error"].as_str().unwrap().to_owned();
        assert!(error.contains(says), "{uri}: {error}");
    }
}

#[tokio::test]
async fn one_member_by_name() {
    let (fake, _, router) = setup(10, 0);
    sync(&fake);
    let (status, body) = get(&router, "/v1/members/c", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let c: MemberJson = serde_json::from_str(&body).unwrap();
    assert_eq!(c.state, "suspect");
    let (status, body) = get(&router, "/v1/members/zz", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(json(&body)["error"]
        .as_str()
        .unwrap()
        .contains("no member named \"zz\""));
    let (status, body) = get(&router, "/v1/members/a%20b", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(json(&body)["error"]
        .as_str()
        .unwrap()
        .contains("invalid member name"));
    let (status, body) = get(&router, "/v2/things", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(json(&body)["error"]
        .as_str()
        .unwrap()
        .contains("/v1/members"));
}

#[tokio::test]
async fn every_error_is_json_even_the_routers_own() {
    let (fake, _, router) = setup(10, 0);
    sync(&fake);
    let send = |method: &str, uri: &str| {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await.unwrap();
            let status = response.status();
            let content_type = response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            (
                status,
                content_type,
                String::from_utf8(body.to_vec()).unwrap(),
            )
        }
    };
    for (method, uri, status, says) in [
        // A name that is not UTF-8 once decoded: axum's rejection was plain text.
        (
            "GET",
            "/v1/members/%FF",
            StatusCode::BAD_REQUEST,
            "the member name in the path cannot be read",
        ),
        // Another method on a known path: axum's answer had an empty body.
        (
            "POST",
            "/v1/members",
            StatusCode::METHOD_NOT_ALLOWED,
            "POST is not allowed on /v1/members",
        ),
        (
            "DELETE",
            "/v1/members/a",
            StatusCode::METHOD_NOT_ALLOWED,
            "DELETE is not allowed on /v1/members/a",
        ),
        (
            "PUT",
            "/healthz",
            StatusCode::METHOD_NOT_ALLOWED,
            "read-only",
        ),
        ("GET", "/nowhere", StatusCode::NOT_FOUND, "no such endpoint"),
    ] {
        let (got, content_type, body) = send(method, uri).await;
        assert_eq!(got, status, "{method} {uri}: {body}");
        assert_eq!(content_type, "application/json", "{method} {uri}");
        let error = json(&body)["error"].as_str().unwrap().to_owned();
        assert!(error.contains(says), "{method} {uri}: {error}");
        // ... and what to do.
        assert!(error.contains("/v1/members"), "{method} {uri}: {error}");
    }
}

/// Opens the event stream at `uri`: by the time this returns, the handler has taken its
/// replay and follows the log live.
async fn open(router: &Router, uri: &str, headers: &[(&str, &str)]) -> axum::response::Response {
    let mut request = Request::get(uri);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{uri}");
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "{uri}"
    );
    response
}

/// Reads SSE events (id, data) from a stream until `count` have arrived.
async fn read(response: axum::response::Response, count: usize) -> Vec<(String, EventJson)> {
    let mut body = response.into_body().into_data_stream();
    let mut text = String::new();
    let mut events = Vec::new();
    while events.len() < count {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), body.next())
            .await
            .unwrap_or_else(|_| panic!("only {events:?} arrived"))
            .expect("the stream goes on")
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            let mut id = None;
            let mut data = None;
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_owned());
                }
                if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str::<EventJson>(v).unwrap());
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                events.push((id, data));
            }
        }
    }
    events
}

async fn read_events(
    router: &Router,
    uri: &str,
    headers: &[(&str, &str)],
    count: usize,
) -> Vec<(String, EventJson)> {
    read(open(router, uri, headers).await, count).await
}

fn summary(events: &[(String, EventJson)]) -> Vec<(String, String, String)> {
    events
        .iter()
        .map(|(id, e)| (id.clone(), e.kind.clone(), e.name.clone()))
        .collect()
}

fn triple(id: &str, kind: &str, name: &str) -> (String, String, String) {
    (id.into(), kind.into(), name.into())
}

#[tokio::test]
async fn events_replay_from_a_revision_and_resume_after_an_id() {
    let (fake, events, router) = setup(100, 10);
    sync(&fake);
    events.push(at(11, 0), &transition("d", TransitionKind::Joined, 11));
    events.push(at(11, 1), &transition("d", TransitionKind::Suspect, 11));
    events.push(at(12, 0), &transition("e", TransitionKind::Joined, 12));

    let all = read_events(&router, &from(11), &[], 3).await;
    assert_eq!(
        summary(&all),
        [
            triple(&id(11, 0), "joined", "d"),
            triple(&id(11, 1), "suspect", "d"),
            triple(&id(12, 0), "joined", "e"),
        ]
    );
    // A browser reconnecting sends the last id it saw; the header wins over the URL.
    let rest = read_events(&router, &from(11), &[("last-event-id", &id(11, 0))], 2).await;
    assert_eq!(
        summary(&rest),
        [
            triple(&id(11, 1), "suspect", "d"),
            triple(&id(12, 0), "joined", "e")
        ]
    );
    // Live: what is pushed after the replay was taken follows it, with no gap.
    let stream = open(&router, &from(12), &[]).await;
    events.push(at(13, 0), &transition("f", TransitionKind::Joined, 13));
    let live = read(stream, 2).await;
    assert_eq!(
        summary(&live),
        [
            triple(&id(12, 0), "joined", "e"),
            triple(&id(13, 0), "joined", "f")
        ]
    );
}

#[tokio::test]
async fn events_older_than_the_buffer_are_gone_not_skipped() {
    let (fake, events, router) = setup(2, 10);
    sync(&fake);
    for revision in 11..=13 {
        events.push(
            at(revision, 0),
            &transition("d", TransitionKind::Updated, revision),
        );
    }
    for uri in [from(5), from(11)] {
        let (status, body) = get(&router, &uri, &[]).await;
        assert_eq!(status, StatusCode::GONE, "{uri}: {body}");
        assert_eq!(json(&body)["oldest_revision"], 12, "{body}");
    }
    let (status, _) = get(&router, "/v1/events", &[("last-event-id", &id(10, 0))]).await;
    assert_eq!(status, StatusCode::GONE);
    // Revision 12 is still whole.
    let served = read_events(&router, &from(12), &[], 2).await;
    assert_eq!(served[0].0, id(12, 0));
    assert_eq!(served[1].0, id(13, 0));
    let (status, body) = get(&router, "/v1/events?from_revision=x", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = get(&router, "/v1/events", &[("last-event-id", "nope")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

/// Issue 13.1: a resume point names its store history. After etcd is replaced (a new
/// epoch), a resume point from the old history is refused with what to do, even one whose
/// revision the new history has reached; `from_revision` without an epoch is a clear 400;
/// an id without an epoch (the old `REVISION.INDEX` form) is refused like a stale one.
#[tokio::test]
async fn a_resume_point_from_another_epoch_is_refused_not_served_with_a_gap() {
    let (fake, events, router) = setup(100, 10);
    sync(&fake);
    events.push(at(11, 0), &transition("d", TransitionKind::Joined, 11));
    // etcd replaced: the new history's revisions start again.
    let new = Epoch(0xcd);
    let moved = |revision, index| Position {
        epoch: new,
        revision,
        index,
    };
    events.push(moved(2, 0), &transition("d", TransitionKind::Removed, 2));
    events.push(moved(11, 0), &transition("e", TransitionKind::Joined, 11));
    for (uri, headers) in [
        (from(11), vec![]),
        (from(2), vec![]),
        ("/v1/events".to_owned(), vec![("last-event-id", id(11, 0))]),
        (
            "/v1/events".to_owned(),
            vec![("last-event-id", "3.0".to_owned())],
        ),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, body) = get(&router, &uri, &headers).await;
        assert_eq!(status, StatusCode::GONE, "{uri} {headers:?}: {body}");
        let body = json(&body);
        assert_eq!(body["epoch"], new.to_string(), "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("take a fresh GET /v1/members"),
            "{body}"
        );
    }
    // The new history itself is served.
    let served = read_events(
        &router,
        &format!("/v1/events?from_revision=2&epoch={new}"),
        &[],
        2,
    )
    .await;
    assert_eq!(
        summary(&served),
        [
            triple(&moved(2, 0).to_string(), "removed", "d"),
            triple(&moved(11, 0).to_string(), "joined", "e"),
        ]
    );
    let (status, body) = get(&router, "/v1/events?from_revision=11", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("epoch"), "{body}");
    // "From the very start" is the same request either way (issue 13.7: one was 410, the
    // other 200): this buffer does not reach back that far, so both are refused.
    let start = format!("/v1/events?from_revision=0&epoch={new}");
    let (by_query, _) = get(&router, &start, &[]).await;
    let start_id = format!("{new}-0.0");
    let (by_id, _) = get(
        &router,
        "/v1/events",
        &[("last-event-id", start_id.as_str())],
    )
    .await;
    assert_eq!((by_query, by_id), (StatusCode::GONE, StatusCode::GONE));
}

/// Bad keys are exported per reason, every reason from the start; the count of undecodable
/// values keeps its own metric.
#[tokio::test]
async fn bad_keys_are_exported_by_reason() {
    let (fake, _, router) = setup(10, 0);
    sync(&fake);
    {
        let mut health = fake.health.lock().unwrap();
        health.skipped = 2;
        health.bad_keys.insert(BadKeyReason::InvalidName, 3_000);
        health
            .bad_keys
            .insert(BadKeyReason::LivenessWithoutRecord, 1);
    }
    let (status, text) = get(&router, "/metrics", &[]).await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        "muster_bad_keys_total{reason=\"unknown_kind\"} 0",
        "muster_bad_keys_total{reason=\"empty_name\"} 0",
        "muster_bad_keys_total{reason=\"name_too_long\"} 0",
        "muster_bad_keys_total{reason=\"invalid_name\"} 3000",
        "muster_bad_keys_total{reason=\"liveness_without_record\"} 1",
        "muster_decode_errors_total 2",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
}

#[tokio::test]
async fn metrics_in_prometheus_and_openmetrics_text() {
    let (fake, _, router) = setup(10, 0);
    sync(&fake);
    let (status, text) = get(&router, "/metrics", &[]).await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        "muster_members{state=\"alive\"} 2",
        "muster_members{state=\"suspect\"} 1",
        "muster_transitions_total{kind=\"joined\"} 3",
        "muster_transitions_total{kind=\"failed\"} 0",
        "muster_watch_resyncs_total 0",
        "muster_watch_reconnects_total 0",
        "muster_watch_refreshes_total 0",
        "muster_store_replacements_total 0",
        "muster_decode_errors_total 0",
        "muster_reaps_total 0",
        "muster_last_revision 10",
        "muster_synced 1",
        "muster_watch_healthy 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    let (_, text) = get(
        &router,
        "/metrics",
        &[("accept", "application/openmetrics-text; version=1.0.0")],
    )
    .await;
    assert!(text.ends_with("# EOF\n"), "{text}");
}

/// `name` in zone `zone`, draining.
fn draining(name: &str, zone: &str) -> Member {
    let mut m = member(name, MemberState::Alive, zone);
    m.info = Arc::new(
        MemberInfo::new(name, format!("{name}:80"))
            .cpus(2)
            .label("zone", zone)
            .draining(true),
    );
    m
}

/// The synced fake group plus `members`, at `revision`.
fn add(fake: &Fake, revision: Revision, members: &[Member]) {
    let mut view = fake.view();
    view.revision = revision;
    for m in members {
        view.members.insert(m.name().to_owned(), m.clone());
    }
    fake.set_view(view);
}

async fn get_with_headers(
    router: &Router,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut request = Request::get(uri);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        axum::body::to_bytes(body, 1 << 20),
    )
    .await
    .unwrap_or_else(|_| panic!("GET {uri}: the body did not end ({})", parts.status))
    .unwrap();
    (
        parts.status,
        parts.headers,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

fn set_names(set: &EndpointsJson) -> Vec<String> {
    set.members.iter().map(|m| m.name.clone()).collect()
}

fn endpoints_json(body: &str) -> EndpointsJson {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not a set ({e}): {body}"))
}

#[tokio::test]
async fn members_and_events_take_draining_and_keep_everything_by_default() {
    let (fake, _, router) = setup(10, 0);
    sync(&fake);
    add(&fake, 10, &[draining("d", "b")]);
    let cases: &[(&str, &[&str])] = &[
        ("/v1/members", &["a", "b", "c", "d"]),
        ("/v1/members?draining=true", &["a", "b", "c", "d"]),
        ("/v1/members?draining=false", &["a", "b", "c"]),
        ("/v1/members?state=alive", &["a", "b", "d"]),
        ("/v1/members?state=alive&draining=false", &["a", "b"]),
        ("/v1/members?label=zone=b&draining=false", &["b"]),
        (
            "/v1/members?draining=false&draining=false",
            &["a", "b", "c"],
        ),
    ];
    for (uri, expected) in cases {
        let (status, body) = get(&router, uri, &[]).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        assert_eq!(names(&body), *expected, "{uri}");
    }
    for uri in ["/v1/members", "/v1/events"] {
        for (query, says) in [
            (
                "draining=yes",
                "use draining=true (draining members too) or draining=false",
            ),
            ("draining=", "use draining=true"),
            ("draining=true&draining=false", "given twice"),
            ("state=gone", "use alive or suspect"),
            ("label==x", "use KEY=VALUE or KEY"),
        ] {
            let uri = format!("{uri}?{query}");
            let (status, body) = get(&router, &uri, &[]).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
            let error = json(&body)["error"].as_str().unwrap().to_owned();
            assert!(error.contains(says), "{uri}: {error}");
        }
    }
}

#[tokio::test]
async fn endpoints_are_the_alive_members_not_draining_unless_filtered() {
    let (fake, _, router) = setup(10, 0);
    let (status, body) = get(&router, "/v1/endpoints", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("not synced"), "{body}");
    let (status, body) = get(&router, "/v1/endpoints?wait_revision=0", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    sync(&fake);
    add(&fake, 10, &[draining("d", "b")]);
    let cases: &[(&str, &[&str])] = &[
        ("/v1/endpoints", &["a", "b"]),
        ("/v1/endpoints?label=zone=a", &["a"]),
        ("/v1/endpoints?label=zone=b", &["b"]),
        ("/v1/endpoints?draining=false", &["a", "b"]),
        ("/v1/endpoints?draining=true", &["a", "b", "d"]),
        ("/v1/endpoints?state=suspect", &["c"]),
        (
            "/v1/endpoints?state=alive,suspect&draining=true",
            &["a", "b", "c", "d"],
        ),
        ("/v1/endpoints?label=rack", &[]),
    ];
    for (uri, expected) in cases {
        let (status, headers, body) = get_with_headers(&router, uri, &[]).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        let set = endpoints_json(&body);
        assert_eq!(set_names(&set), *expected, "{uri}");
        assert_eq!(headers["x-muster-revision"], "10", "{uri}");
        assert_eq!(
            headers["x-muster-epoch"],
            EPOCH.to_string().as_str(),
            "{uri}"
        );
    }
    let (_, _, body) = get_with_headers(&router, "/v1/endpoints", &[]).await;
    let set = endpoints_json(&body);
    assert_eq!(
        (
            set.epoch.as_str(),
            set.revision,
            set.synced,
            set.epoch_changed
        ),
        (EPOCH.to_string().as_str(), 10, true, false)
    );
    assert_eq!(
        set.members[0],
        MemberJson::from(&member("a", MemberState::Alive, "a"))
    );
    assert!(json(&body).get("epoch_changed").is_none(), "{body}");
}

#[tokio::test]
async fn endpoints_refuse_bad_parameters_and_say_how_to_write_them() {
    let (fake, _, router) = setup(10, 0);
    sync(&fake);
    let sse = [("accept", "text/event-stream")];
    // (request, headers, what the 400 says)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            "/v1/endpoints?wait=1s&revision=3",
            &[],
            "unknown query parameter \"revision\"",
        ),
        (
            "/v1/endpoints?wait_revision=x",
            &[],
            "the whole number >= 0 from the last answer's \"revision\"",
        ),
        ("/v1/endpoints?wait_revision=-1", &[], "is not a revision"),
        (
            "/v1/endpoints?wait_revision=3&epoch=zz",
            &[],
            "use the last answer's \"epoch\"",
        ),
        (
            "/v1/endpoints?wait_revision=3&wait=ten",
            &[],
            "use a number with a unit, e.g. 10s",
        ),
        (
            "/v1/endpoints?wait_revision=3&wait=301s",
            &[],
            "held at most 300s",
        ),
        (
            "/v1/endpoints?wait_revision=3&wait=1h",
            &[],
            "use e.g. wait=30s",
        ),
        (
            "/v1/endpoints?wait=1s",
            &[],
            "only make sense with wait_revision=",
        ),
        (
            "/v1/endpoints?epoch=00000000000000ab",
            &[],
            "only make sense with wait_revision=",
        ),
        (
            "/v1/endpoints?watch=poll",
            &[],
            "the only watch is watch=sse",
        ),
        (
            "/v1/endpoints?watch=sse&wait_revision=3",
            &[],
            "ask for one of them",
        ),
        ("/v1/endpoints?wait_revision=3", &sse, "ask for one of them"),
        ("/v1/endpoints?draining=no", &[], "draining=true"),
        ("/v1/endpoints?state=left", &[], "no longer in the group"),
        ("/v1/endpoints?label=", &[], "KEY=VALUE"),
    ];
    for (uri, headers, says) in cases {
        let (status, body) = get(&router, uri, headers).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        let error = json(&body)["error"].as_str().unwrap().to_owned();
        assert!(error.contains(says), "{uri}: {error}");
    }
    // The limits themselves are accepted.
    for uri in [
        "/v1/endpoints?wait_revision=3&wait=300s",
        "/v1/endpoints?wait_revision=3&wait=0",
        "/v1/endpoints?wait_revision=3&wait=5m&epoch=00000000000000ab",
    ] {
        let (status, body) = get(&router, uri, &[]).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    }
}

#[tokio::test]
async fn a_long_poll_not_at_the_sets_revision_or_epoch_answers_at_once() {
    let (fake, _, router) = setup(10, 0);
    sync(&fake);
    // Held, any of these would outlast `get`'s 5 s deadline by far.
    for (uri, epoch_changed) in [
        ("/v1/endpoints?wait_revision=9&wait=5m", false),
        ("/v1/endpoints?wait_revision=0&wait=5m", false),
        // Ahead of the set: another history, or another master.
        ("/v1/endpoints?wait_revision=11&wait=5m", false),
        (
            "/v1/endpoints?wait_revision=9&epoch=00000000000000ab&wait=5m",
            false,
        ),
        (
            "/v1/endpoints?wait_revision=10&epoch=00000000000000cd&wait=5m",
            true,
        ),
    ] {
        let (status, body) = get(&router, uri, &[]).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        let set = endpoints_json(&body);
        assert_eq!(
            (set.revision, set.epoch_changed),
            (10, epoch_changed),
            "{uri}"
        );
        assert_eq!(set_names(&set), ["a", "b"], "{uri}");
        assert_eq!(
            json(&body).get("epoch_changed").is_some(),
            epoch_changed,
            "{body}"
        );
    }
}

/// Waits (deadline 5 s) until `n` endpoint sets are held open by requests.
async fn until_held(fake: &Fake, n: usize) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while fake.held() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} endpoint sets held, expected {n}",
            fake.held()
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_long_poll_is_held_until_the_set_changes() {
    let (fake, _, router) = setup(10, 0);
    sync(&fake);
    let request = {
        let router = router.clone();
        tokio::spawn(async move {
            get_with_headers(
                &router,
                "/v1/endpoints?wait_revision=10&epoch=00000000000000ab&wait=5m",
                &[],
            )
            .await
        })
    };
    until_held(&fake, 1).await;
    // A change outside the set (c, suspect, updated) moves the revision, not the set.
    let mut c = member("c", MemberState::Suspect, "a");
    c.record_revision = 11;
    add(&fake, 11, &[c]);
    // e joins: the set changes, the request answers.
    add(&fake, 12, &[member("e", MemberState::Alive, "c")]);
    let (status, headers, body) = tokio::time::timeout(std::time::Duration::from_secs(5), request)
        .await
        .expect("the held request answers once the set changes")
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let set = endpoints_json(&body);
    assert_eq!(set_names(&set), ["a", "b", "e"], "{body}");
    assert_eq!(set.revision, 12);
    assert!(!set.epoch_changed);
    assert_eq!(headers["x-muster-revision"], "12");
}

#[tokio::test]
async fn a_long_poll_answers_the_same_set_when_its_wait_runs_out() {
    let (fake, _, router) = setup(10, 0);
    sync(&fake);
    let started = std::time::Instant::now();
    let (status, headers, body) =
        get_with_headers(&router, "/v1/endpoints?wait_revision=10&wait=300ms", &[]).await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        took >= std::time::Duration::from_millis(300),
        "answered after {took:?}"
    );
    let set = endpoints_json(&body);
    assert_eq!(
        (set_names(&set), set.revision),
        (vec!["a".to_owned(), "b".to_owned()], 10)
    );
    assert_eq!(headers["x-muster-revision"], "10");
}

/// Reads `count` SSE events carrying endpoint sets.
async fn read_sets(
    body: &mut (impl futures::Stream<Item = Result<axum::body::Bytes, axum::Error>> + Unpin),
    count: usize,
) -> Vec<EndpointsJson> {
    let mut text = String::new();
    let mut sets = Vec::new();
    while sets.len() < count {
        let chunk = tokio::time::timeout(crate::support::DEADLINE, body.next())
            .await
            .unwrap_or_else(|_| panic!("only {sets:?} arrived"))
            .expect("the stream goes on")
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("data: ") {
                    sets.push(endpoints_json(v));
                }
            }
        }
    }
    sets
}

#[tokio::test]
async fn endpoints_as_server_sent_events_the_whole_set_at_start_and_after_each_change() {
    let (fake, _, router) = setup(10, 0);
    sync(&fake);
    let by_query = open(&router, "/v1/endpoints?watch=sse&label=zone=a", &[]).await;
    let by_accept = open(
        &router,
        "/v1/endpoints?label=zone=a",
        &[("accept", "text/event-stream")],
    )
    .await;
    let mut by_query = by_query.into_body().into_data_stream();
    let mut by_accept = by_accept.into_body().into_data_stream();
    for body in [&mut by_query, &mut by_accept] {
        let first = read_sets(body, 1).await;
        assert_eq!(set_names(&first[0]), ["a"]);
        assert_eq!((first[0].revision, first[0].synced), (10, true));
    }
    // Outside the selection: no event. Then e joins zone a.
    add(&fake, 11, &[member("f", MemberState::Alive, "b")]);
    add(&fake, 12, &[member("e", MemberState::Alive, "a")]);
    for body in [&mut by_query, &mut by_accept] {
        let change = read_sets(body, 1).await;
        assert_eq!(set_names(&change[0]), ["a", "e"]);
        assert_eq!(change[0].revision, 12);
    }
    // a drains, then e's record changes: a reader that has not taken the first set yet
    // gets the latest one (each event is the whole set: nothing is lost).
    add(&fake, 13, &[draining("a", "a")]);
    for body in [&mut by_query, &mut by_accept] {
        let change = read_sets(body, 1).await;
        assert_eq!(set_names(&change[0]), ["e"]);
        assert_eq!(change[0].revision, 13);
    }
    let mut e = member("e", MemberState::Alive, "a");
    e.record_revision = 14;
    add(&fake, 14, &[e.clone()]);
    e.record_revision = 15;
    add(&fake, 15, &[e]);
    for body in [&mut by_query, &mut by_accept] {
        let change = read_sets(body, 1).await;
        assert_eq!(change[0].members[0].record_revision, 15);
        assert_eq!(change[0].revision, 15);
    }
}

fn moved(
    name: &str,
    kind: TransitionKind,
    state: MemberState,
    zone: &str,
    revision: Revision,
) -> Transition {
    let mut m = member(name, state, zone);
    m.record_revision = revision;
    Transition {
        kind,
        member: m,
        revision,
        at: std::time::Instant::now(),
    }
}

/// A filtered event stream carries every transition of a member that matches before or
/// after it: a consumer sees members enter its selection, change inside it, and leave it.
#[tokio::test]
async fn filtered_events_show_a_member_leave_its_selection() {
    use MemberState::{Alive, Failed, Left};
    use TransitionKind::{Failed as Fail, Joined, Left as Leave, Updated};
    let (fake, events, router) = setup(100, 10);
    sync(&fake);
    events.push(at(11, 0), &moved("e", Joined, Alive, "a", 11)); // enters
    events.push(at(12, 0), &moved("b", Updated, Alive, "a", 12)); // b: zone b -> a, enters
    events.push(at(13, 0), &moved("a", Updated, Alive, "b", 13)); // a: zone a -> b, leaves
    events.push(at(14, 0), &moved("a", Updated, Alive, "b", 14)); // outside: not sent
    events.push(at(15, 0), &moved("c", Fail, Failed, "a", 15)); // c (suspect, zone a) goes
    let zone_a = open(&router, &format!("{}&label=zone=a", from(11)), &[]).await;
    let alive_a = open(
        &router,
        &format!("{}&label=zone=a&state=alive", from(11)),
        &[],
    )
    .await;
    let everything = open(&router, &from(11), &[]).await;
    events.push(at(16, 0), &moved("f", Joined, Alive, "b", 16)); // outside: not sent
    events.push(at(17, 0), &moved("b", Leave, Left, "a", 17)); // b leaves the group
    events.push(at(18, 0), &moved("g", Joined, Alive, "a", 18));
    let zone_a = read(zone_a, 6).await;
    assert_eq!(
        summary(&zone_a),
        [
            triple(&id(11, 0), "joined", "e"),
            triple(&id(12, 0), "updated", "b"),
            triple(&id(13, 0), "updated", "a"),
            triple(&id(15, 0), "failed", "c"),
            triple(&id(17, 0), "left", "b"),
            triple(&id(18, 0), "joined", "g"),
        ]
    );
    assert_eq!(
        &zone_a[2].1.labels["zone"], "b",
        "the update that takes a out says where it went"
    );
    // c was suspect before it failed: never in an alive selection.
    let alive_a = read(alive_a, 5).await;
    assert_eq!(
        summary(&alive_a)
            .into_iter()
            .map(|(id, _, _)| id)
            .collect::<Vec<_>>(),
        [id(11, 0), id(12, 0), id(13, 0), id(17, 0), id(18, 0)]
    );
    // Without a filter, every transition.
    assert_eq!(read(everything, 8).await.len(), 8);
}

/// Against real etcd: a master on a group, workers joining and draining, the router
/// in-process. A long poll held at the set's revision answers when a worker joins and when
/// one drains; the SSE form follows; `/v1/events` filtered by label and `draining=false`
/// sends the draining transition that takes a member out, and nothing of it after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_follow_a_real_group_by_long_poll_and_sse() {
    use muster_master::{Master, MasterConfig};
    use muster_worker::{Worker, WorkerConfig};
    let deadline = crate::support::DEADLINE;
    let group = crate::support::Group::new("api_endpoints");
    let master = Arc::new(
        Master::start(group.store().await, MasterConfig::new(group.prefix.clone())).unwrap(),
    );
    tokio::time::timeout(deadline, master.ready())
        .await
        .expect("the master syncs")
        .unwrap();
    let feed = master.subscribe();
    let events = Arc::new(
        EventLog::new(100, feed.snapshot.epoch, feed.snapshot.revision)
            .with_members(feed.snapshot.members.clone()),
    );
    tokio::spawn(events.clone().follow(master.clone(), feed));
    let shared: Arc<dyn Group> = master.clone();
    let router = router(Arc::new(Api {
        group: shared.clone(),
        prefix: group.prefix.clone(),
        events,
        registry: registry(shared, &StoreMetrics::new()),
    }));
    let config = || WorkerConfig::new(group.prefix.clone()).ttl(std::time::Duration::from_secs(2));
    let info = |name: &str| MemberInfo::new(name, "127.0.0.1:9").label("zone", "a");

    let a = Worker::register(group.store().await, info("a"), config())
        .await
        .unwrap();
    // Follow the set as a client would, long poll after long poll, until a is in it.
    let mut set = endpoints_json(&get(&router, "/v1/endpoints?label=zone=a", &[]).await.1);
    let found = tokio::time::timeout(deadline, async {
        while set_names(&set) != ["a"] {
            let uri = format!(
                "/v1/endpoints?label=zone=a&wait_revision={}&epoch={}&wait=5s",
                set.revision, set.epoch
            );
            set = endpoints_json(&get(&router, &uri, &[]).await.1);
        }
    })
    .await;
    assert!(found.is_ok(), "a never appeared: {set:?}");
    let stream = open(&router, "/v1/endpoints?label=zone=a&watch=sse", &[]).await;
    let mut stream = stream.into_body().into_data_stream();
    assert_eq!(set_names(&read_sets(&mut stream, 1).await[0]), ["a"]);
    let zone_a = open(&router, "/v1/events?label=zone=a&draining=false", &[]).await;

    // Held at the set's revision: b joining answers it.
    let held = |set: &EndpointsJson| {
        let uri = format!(
            "/v1/endpoints?label=zone=a&wait_revision={}&epoch={}&wait=300s",
            set.revision, set.epoch
        );
        let router = router.clone();
        tokio::spawn(async move { get_with_headers(&router, &uri, &[]).await })
    };
    let request = held(&set);
    let b = Worker::register(group.store().await, info("b"), config())
        .await
        .unwrap();
    let (status, headers, body) = tokio::time::timeout(deadline, request)
        .await
        .expect("the long poll answers when b joins")
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let joined = endpoints_json(&body);
    assert_eq!(set_names(&joined), ["a", "b"], "{body}");
    assert!(joined.revision > set.revision, "{body}");
    assert_eq!(
        headers["x-muster-revision"],
        joined.revision.to_string().as_str()
    );
    assert_eq!(set_names(&read_sets(&mut stream, 1).await[0]), ["a", "b"]);

    // b drains: out of the set at once, still a member.
    let request = held(&joined);
    b.drain().await.unwrap();
    let (status, _, body) = tokio::time::timeout(deadline, request)
        .await
        .expect("the long poll answers when b drains")
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(set_names(&endpoints_json(&body)), ["a"], "{body}");
    assert_eq!(set_names(&read_sets(&mut stream, 1).await[0]), ["a"]);
    let (_, body) = get(&router, "/v1/members?draining=true", &[]).await;
    assert_eq!(names(&body), ["a", "b"]);

    // b's leave is outside the selection now (it left it by draining); a's is inside.
    b.leave().await.unwrap();
    a.leave().await.unwrap();
    let seen = read(zone_a, 3).await;
    assert_eq!(
        seen.iter()
            .map(|(_, e)| (e.kind.as_str(), e.name.as_str()))
            .collect::<Vec<_>>(),
        [("joined", "b"), ("draining", "b"), ("left", "a")]
    );
}
