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
use muster_master::{Epoch, Health, Position, View};
use muster_programs::events::EventLog;
use muster_programs::http::{router, Api};
use muster_programs::metrics::{registry, Group};
use muster_programs::render::{EventJson, MemberJson, ViewJson};
use muster_programs::timed::StoreMetrics;
use serde_json::Value;
use tower::ServiceExt;

/// A group whose view and health the test sets.
#[derive(Default)]
struct Fake {
    view: Mutex<View>,
    health: Mutex<Health>,
}

impl Group for Fake {
    fn view(&self) -> View {
        self.view.lock().unwrap().clone()
    }
    fn health(&self) -> Health {
        self.health.lock().unwrap().clone()
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
    let events = Arc::new(EventLog::new(capacity, EPOCH, start));
    let group: Arc<dyn Group> = fake.clone();
    let api = Api {
        group: group.clone(),
        prefix: "/g/".into(),
        events: events.clone(),
        registry: registry(group, &StoreMetrics::new()),
    };
    (fake, events, router(Arc::new(api)))
}

fn sync(fake: &Fake) {
    let members: BTreeMap<String, Member> = [
        member("a", MemberState::Alive, "a"),
        member("b", MemberState::Alive, "b"),
        member("c", MemberState::Suspect, "a"),
    ]
    .into_iter()
    .map(|m| (m.name().to_owned(), m))
    .collect();
    *fake.view.lock().unwrap() = View {
        epoch: EPOCH,
        revision: 10,
        synced: true,
        members,
    };
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
