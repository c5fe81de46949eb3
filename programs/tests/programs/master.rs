//! muster-master against real etcd: `/v1/members` and `/metrics` checked against the truth
//! (a fresh listing), the event stream followed and resumed, `--json` lines parsed, and the
//! `list` and `evict` one-shots.

use std::time::Duration;

use muster_core::MemberState;
use muster_master::View;
use muster_programs::render::{EventJson, MemberJson, SyncedJson, ViewJson};
use nix::sys::signal::Signal;

use crate::support::{args, deadline, worker_flags, worker_flags_at, Group, Proc};
use crate::worker::json_master;

/// Starts `muster-master --http 127.0.0.1:0` (plus `extra`) and returns it with its base URL.
pub async fn http_master(group: &Group, extra: &[&str]) -> (Proc, String) {
    let mut flags = group.flags();
    flags.extend(args(&["--http", "127.0.0.1:0", "--json"]));
    flags.extend(args(extra));
    serving(Proc::master(&flags)).await
}

/// Waits until `master` serves HTTP; returns it with its base URL.
pub async fn serving(mut master: Proc) -> (Proc, String) {
    let line = master.wait_stderr("serving http://").await;
    let url = line
        .split("serving ")
        .nth(1)
        .and_then(|rest| rest.split("/ (the web page)").next())
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned();
    (master, url)
}

/// What must agree between the API and the truth: everything but `since_revision`, which a
/// fresh listing sets to its own revision.
fn comparable(members: &[MemberJson]) -> Vec<MemberJson> {
    members
        .iter()
        .cloned()
        .map(|mut m| {
            m.since_revision = 0;
            m
        })
        .collect()
}

fn truth_json(view: &View) -> Vec<MemberJson> {
    comparable(&ViewJson::new(view, |_| true).members)
}

async fn get_text(url: &str) -> (u16, String) {
    let response = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn get_view(url: &str) -> ViewJson {
    let (status, body) = get_text(url).await;
    assert_eq!(status, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: {e}: {body}"))
}

/// The value of the sample `name` (with labels, exactly as printed) in Prometheus text.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
}

#[tokio::test]
async fn members_and_metrics_match_the_truth() {
    let group = Group::new("master-http");
    let mut workers = Vec::new();
    for (name, zone) in [("a", "a"), ("b", "b"), ("c", "a")] {
        let mut flags = worker_flags_at(&group, name);
        flags.extend(args(&[
            "--addr",
            &format!("{name}.test:80"),
            "--label",
            &format!("zone={zone}"),
        ]));
        workers.push(Proc::worker(&flags));
        group.wait_state(name, MemberState::Alive).await;
    }
    workers[2].signal(Signal::SIGKILL);
    workers[2].exit().await;
    let truth = group.wait_state("c", MemberState::Suspect).await;

    let (mut master, url) = http_master(&group, &["--no-reap"]).await;
    let members = format!("{url}/v1/members");
    // The master syncs on its own time: poll until it answers, then it must match exactly.
    let view = deadline("the master never served the truth", String::new, async {
        loop {
            let (status, body) = get_text(&members).await;
            if status == 200 {
                let view: ViewJson = serde_json::from_str(&body).unwrap();
                if comparable(&view.members) == truth_json(&truth) {
                    return view;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(view.synced);
    // And it is still the truth now.
    assert_eq!(comparable(&view.members), truth_json(&group.truth().await));

    let names = |v: ViewJson| v.members.into_iter().map(|m| m.name).collect::<Vec<_>>();
    assert_eq!(
        names(get_view(&format!("{members}?state=alive&label=zone=a")).await),
        ["a"]
    );
    assert_eq!(
        names(get_view(&format!("{members}?state=suspect")).await),
        ["c"]
    );
    assert_eq!(
        names(get_view(&format!("{members}?label=zone=a")).await),
        ["a", "c"]
    );

    let (status, body) = get_text(&format!("{members}/b")).await;
    assert_eq!(status, 200);
    let b: MemberJson = serde_json::from_str(&body).unwrap();
    assert_eq!(
        comparable(&[b]),
        truth_json(&truth)
            .into_iter()
            .filter(|m| m.name == "b")
            .collect::<Vec<_>>()
    );
    let (status, body) = get_text(&format!("{members}/nobody")).await;
    assert_eq!(status, 404, "{body}");

    let (status, metrics) = get_text(&format!("{url}/metrics")).await;
    assert_eq!(status, 200);
    assert_eq!(sample(&metrics, "muster_members{state=\"alive\"}"), 2.0);
    assert_eq!(sample(&metrics, "muster_members{state=\"suspect\"}"), 1.0);
    // The first listing explains the group: three joined, one of them suspect.
    assert_eq!(
        sample(&metrics, "muster_transitions_total{kind=\"joined\"}"),
        3.0
    );
    assert_eq!(
        sample(&metrics, "muster_transitions_total{kind=\"suspect\"}"),
        1.0
    );
    assert_eq!(
        sample(&metrics, "muster_transitions_total{kind=\"left\"}"),
        0.0
    );
    assert_eq!(
        sample(&metrics, "muster_last_revision"),
        view.revision as f64
    );
    assert_eq!(sample(&metrics, "muster_synced"), 1.0);
    assert_eq!(sample(&metrics, "muster_watch_healthy"), 1.0);
    assert_eq!(sample(&metrics, "muster_decode_errors_total"), 0.0);
    assert_eq!(sample(&metrics, "muster_watch_resyncs_total"), 0.0);
    assert!(
        sample(
            &metrics,
            "muster_etcd_request_duration_seconds_count{op=\"list\",outcome=\"ok\"}"
        ) >= 1.0
    );
    let (status, health) = get_text(&format!("{url}/healthz")).await;
    assert_eq!(status, 200, "{health}");

    // A member leaving shows up in both, and the counters move.
    workers[0].signal(Signal::SIGTERM);
    workers[0].exit_with(0).await;
    let truth = group.wait_gone("a").await;
    deadline("the master never saw a leave", String::new, async {
        loop {
            let view = get_view(&members).await;
            if comparable(&view.members) == truth_json(&truth) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let (_, metrics) = get_text(&format!("{url}/metrics")).await;
    assert_eq!(sample(&metrics, "muster_members{state=\"alive\"}"), 1.0);
    assert_eq!(
        sample(&metrics, "muster_transitions_total{kind=\"left\"}"),
        1.0
    );

    master.signal(Signal::SIGTERM);
    master.exit_with(0).await;
    workers[1].signal(Signal::SIGTERM);
    workers[1].exit_with(0).await;
}

/// Reads server-sent events from `response` until `done` holds for what arrived.
async fn read_events(
    response: &mut reqwest::Response,
    mut done: impl FnMut(&[(String, EventJson)]) -> bool,
) -> Vec<(String, EventJson)> {
    let mut text = String::new();
    let mut events = Vec::new();
    deadline("the event stream stalled", String::new, async {
        while !done(&events) {
            let chunk = response.chunk().await.unwrap().expect("the stream goes on");
            text.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some(end) = text.find("\n\n") {
                let frame: String = text.drain(..end + 2).collect();
                let id = frame.lines().find_map(|l| l.strip_prefix("id: "));
                let data = frame.lines().find_map(|l| l.strip_prefix("data: "));
                if let (Some(id), Some(data)) = (id, data) {
                    events.push((id.to_owned(), serde_json::from_str(data).unwrap()));
                }
            }
        }
    })
    .await;
    events
}

async fn open_events(url: &str, last_event_id: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(url);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {url}");
    response
}

#[tokio::test]
async fn the_event_stream_follows_and_resumes() {
    let group = Group::new("master-events");
    let (mut master, url) = http_master(&group, &["--events-buffer", "2"]).await;
    let members = format!("{url}/v1/members");
    let start = deadline("the master never synced", String::new, async {
        loop {
            let (status, body) = get_text(&members).await;
            if status == 200 {
                return serde_json::from_str::<ViewJson>(&body).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // Snapshot, then the events after it: no gap.
    let from = format!(
        "{url}/v1/events?from_revision={}&epoch={}",
        start.revision + 1,
        start.epoch
    );
    let mut stream = open_events(&from, None).await;

    // No drain grace: SIGTERM is a leave at once (the event counts below rely on it).
    let mut flags = worker_flags(&group, "x");
    flags.extend(args(&["--drain-grace", "0s"]));
    let mut worker = Proc::worker(&flags);
    let joined = read_events(&mut stream, |e| !e.is_empty()).await;
    assert_eq!(
        (joined[0].1.kind.as_str(), joined[0].1.name.as_str()),
        ("joined", "x")
    );
    let (id, event) = &joined[0];
    assert_eq!(
        id,
        &format!("{}-{}.0", start.epoch, event.revision),
        "ids are EPOCH-REVISION.INDEX"
    );
    worker.signal(Signal::SIGTERM);
    worker.exit_with(0).await;
    let left = read_events(&mut stream, |e| !e.is_empty()).await;
    assert_eq!(
        (left[0].1.kind.as_str(), left[0].1.name.as_str()),
        ("left", "x")
    );
    drop(stream);

    // A client that saw "joined" reconnects with its id and gets what came after.
    let mut resumed = open_events(&format!("{url}/v1/events"), Some(id)).await;
    let rest = read_events(&mut resumed, |e| !e.is_empty()).await;
    assert_eq!(rest[0], left[0]);
    drop(resumed);

    // A third transition pushes "joined x" out of the 2-entry buffer: resuming from before
    // it is refused, with what can still be served.
    let mut y = Proc::worker(&worker_flags(&group, "y"));
    group.wait_state("y", MemberState::Alive).await;
    deadline("the master never buffered y", String::new, async {
        loop {
            let (status, _) = get_text(&format!("{members}/y")).await;
            if status == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let (status, body) = get_text(&from).await;
    assert_eq!(status, 410, "{body}");
    let gone: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(gone["oldest_revision"], event.revision + 1, "{body}");

    y.signal(Signal::SIGTERM);
    y.exit_with(0).await;
    master.signal(Signal::SIGINT);
    master.exit_with(0).await;
}

#[tokio::test]
async fn json_lines_and_the_one_shots() {
    let group = Group::new("master-json");
    let mut early = Proc::worker(&worker_flags(&group, "early"));
    group.wait_state("early", MemberState::Alive).await;
    let mut crashed = Proc::worker(&worker_flags(&group, "crashed"));
    group.wait_state("crashed", MemberState::Alive).await;
    crashed.signal(Signal::SIGKILL);
    crashed.exit().await;
    group.wait_state("crashed", MemberState::Suspect).await;

    // Lines before `synced` describe the group found at start.
    let mut master = json_master(&group).await;
    let lines = master.stdout.borrow().clone();
    let synced_at = lines
        .iter()
        .position(|l| l.contains("\"kind\":\"synced\""))
        .unwrap();
    let initial: Vec<EventJson> = lines[..synced_at]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let summary: Vec<(&str, &str, &str)> = initial
        .iter()
        .map(|e| (e.kind.as_str(), e.name.as_str(), e.state.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("joined", "crashed", "suspect"),
            ("suspect", "crashed", "suspect"),
            ("joined", "early", "alive"),
        ]
    );
    let synced: SyncedJson = serde_json::from_str(&lines[synced_at]).unwrap();
    assert_eq!(synced.members, 2);
    let early_json = &initial[2];
    assert_eq!(early_json.incarnation.len(), 16);
    assert!(early_json.at_unix_ms > 1_600_000_000_000);

    // `list` is the truth, in JSON and as a table.
    let mut flags = group.flags();
    flags.extend(args(&["list", "--json"]));
    let mut list = Proc::master(&flags);
    list.exit_with(0).await;
    let listed: ViewJson = serde_json::from_str(&list.stdout.borrow().join("\n")).unwrap();
    assert_eq!(
        comparable(&listed.members),
        truth_json(&group.truth().await)
    );
    let mut flags = group.flags();
    flags.push("list".into());
    let mut table = Proc::master(&flags);
    table.exit_with(0).await;
    let table = table.stdout.borrow().clone();
    assert!(table[0].starts_with("NAME "), "{table:#?}");
    assert_eq!(table.len(), 3, "{table:#?}");

    // Evicting an alive member: both keys go at once, masters report "left".
    let mut flags = group.flags();
    flags.extend(args(&["evict", "early"]));
    let mut evict = Proc::master(&flags);
    evict.exit_with(0).await;
    let said = evict.stdout.borrow().join("\n");
    assert!(
        said.contains("it was alive, so masters report it left"),
        "{said}"
    );
    group.wait_gone("early").await;
    master
        .wait_stdout("early left", |l| {
            l.iter()
                .any(|l| l.contains("\"kind\":\"left\"") && l.contains("\"early\""))
        })
        .await;
    // Evicting a suspect member: "failed", as for a reap.
    let mut flags = group.flags();
    flags.extend(args(&["evict", "crashed"]));
    let mut evict = Proc::master(&flags);
    evict.exit_with(0).await;
    assert!(evict
        .stdout
        .borrow()
        .join("\n")
        .contains("report it failed"));
    master
        .wait_stdout("crashed failed", |l| {
            l.iter()
                .any(|l| l.contains("\"kind\":\"failed\"") && l.contains("\"crashed\""))
        })
        .await;
    assert!(group.truth().await.members.is_empty());

    // The evicted worker stops by itself, with the eviction's exit status.
    let said = early.exit_with(3).await;
    assert!(said.contains("early was evicted"), "{said}");
    master.signal(Signal::SIGTERM);
    master.exit_with(0).await;
}

/// Issue 13.1 on real etcd: etcd is replaced by an empty one under a running
/// `muster-master --http`. The master moves to a new epoch; the open event stream ends
/// (instead of carrying ids whose revisions went backwards), and resuming from the old
/// history, by `from_revision` + `epoch` or by `Last-Event-ID`, is refused with 410 and the
/// new epoch, never answered with a silent gap.
#[tokio::test]
async fn a_resume_point_from_before_etcd_was_wiped_is_refused() {
    let mut etcd = muster_testkit::cluster::Cluster::single()
        .await
        .expect("start a dedicated etcd (this test wipes it)");
    let endpoint = etcd.endpoints()[0].clone();
    let prefix = "/programs/wiped/";
    let (mut master, url) = serving(Proc::master(&args(&[
        "--endpoints",
        &endpoint,
        "--prefix",
        prefix,
        "--http",
        "127.0.0.1:0",
    ])))
    .await;
    let mut worker = Proc::worker(&args(&[
        "--endpoints",
        &endpoint,
        "--prefix",
        prefix,
        "--name",
        "x",
        "--addr",
        "10.0.0.1:80",
        "--ttl",
        "2s",
    ]));
    let members = format!("{url}/v1/members");
    let before = deadline("x never showed as alive", String::new, async {
        loop {
            let (status, body) = get_text(&members).await;
            if status == 200 {
                let view: ViewJson = serde_json::from_str(&body).unwrap();
                if view.members.iter().any(|m| m.name == "x") {
                    return view;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let old = format!(
        "{url}/v1/events?from_revision={}&epoch={}",
        before.revision + 1,
        before.epoch
    );
    let mut stream = open_events(&old, None).await;

    etcd.replace_with_empty().await.expect("replace etcd");
    let after = deadline(
        "the master never moved to a new epoch",
        String::new,
        async {
            loop {
                let (status, body) = get_text(&members).await;
                if status == 200 {
                    let view: ViewJson = serde_json::from_str(&body).unwrap();
                    if view.epoch != before.epoch {
                        return view;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await;
    // The open stream of the old history ends (its reconnect is refused below).
    deadline("the old event stream did not end", String::new, async {
        while let Some(chunk) = stream.chunk().await.expect("read the stream") {
            let text = String::from_utf8_lossy(&chunk).to_string();
            assert!(
                !text.contains(&format!("id: {}", after.epoch)),
                "the old stream carried an event of the new epoch: {text}"
            );
        }
    })
    .await;
    let old_id = format!("{}-{}.0", before.epoch, before.revision + 1);
    for (what, url, id) in [
        ("from_revision of the old epoch", old.clone(), None),
        (
            "Last-Event-ID of the old epoch",
            format!("{url}/v1/events"),
            Some(old_id.as_str()),
        ),
    ] {
        let mut request = reqwest::Client::new().get(&url);
        if let Some(id) = id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 410, "{what}");
        let body: serde_json::Value =
            serde_json::from_str(&response.text().await.unwrap()).unwrap();
        assert_eq!(body["epoch"], after.epoch, "{what}: {body}");
    }
    worker.signal(Signal::SIGTERM);
    worker.exit_with(0).await;
    master.signal(Signal::SIGTERM);
    master.exit_with(0).await;
}
