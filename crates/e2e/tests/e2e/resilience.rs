//! Services dying mid-request: cf-factory killed with SIGKILL while creates
//! are in flight, cf-gateway restarted between a request and its answer.
//! Both take the suite's exclusive lock, since every in-flight test would
//! notice.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::helpers::{
    containers, ctr, docker_io, envelope, exclusive, headers, kill_and_wait, new_cid, new_req_id,
    restart_service, service_pid, tasks, unique_name, Mqtt,
};

const IN_FLIGHT: usize = 10;

/// How long answers are collected after the kill: long enough for a
/// redelivery after a typical ack wait to show up as a duplicate.
const COLLECT: Duration = Duration::from_secs(90);

fn in_flight_request(i: usize) -> (&'static str, Value) {
    if i % 2 == 0 {
        let name = unique_name("fkill");
        let value =
            json!({"imageRef": docker_io("hello-world:latest"), "name": name, "start": true});
        ("createWithConfig", value)
    } else {
        (
            "create",
            json!({"imageRef": docker_io("busybox:latest"), "start": false}),
        )
    }
}

#[tokio::test]
async fn factory_killed_mid_flight_answers_each_request_once() {
    let _suite = exclusive().await;
    let mqtt = Mqtt::connect("fkill").await;
    let before = containers().await;
    let pid = service_pid("cf-factory");

    let mut sent = Vec::new();
    for i in 0..IN_FLIGHT {
        let (op, value) = in_flight_request(i);
        let (cid, req_id) = (new_cid(), new_req_id());
        mqtt.send(op, &req_id, &envelope(op, headers(&cid), value))
            .await;
        sent.push((op, cid, req_id));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    kill_and_wait(pid, "KILL").await;
    let killed_at = Instant::now();
    let answered_early = mqtt.received(|_| true).len();

    let new_pid = restart_service("cf-factory").await;
    assert_ne!(new_pid, pid, "cf-factory was not restarted");
    tokio::time::sleep_until(killed_at + COLLECT).await;

    let mut problems = Vec::new();
    let mut ids = BTreeSet::new();
    for (op, cid, req_id) in &sent {
        let answers = mqtt.received(|a| a.cid() == Some(cid.as_str()));
        if answers.len() != 1 {
            let payloads: Vec<String> = answers.iter().map(ToString::to_string).collect();
            problems.push(format!(
                "{op} {cid}: {} answers {payloads:?}",
                answers.len()
            ));
            continue;
        }
        ids.insert(mqtt.answer_to(op, req_id, Some(cid)).await.expect_ok(op));
    }
    assert!(
        problems.is_empty(),
        "{answered_early} answered before the kill; not exactly one answer each:\n{}",
        problems.join("\n")
    );
    assert_eq!(ids.len(), IN_FLIGHT, "UUIDs are not distinct: {ids:?}");

    let after = containers().await;
    let gained: BTreeSet<String> = after.difference(&before).cloned().collect();
    assert_eq!(
        gained, ids,
        "containers gained in containerd vs. answered UUIDs"
    );
}

#[tokio::test]
async fn gateway_restart_between_request_and_answer_still_answers() {
    let _suite = exclusive().await;
    let mqtt = Mqtt::connect("gwrst").await;
    let pid = service_pid("cf-gateway");

    // a layered image the other tests do not pull, so the work takes a moment
    let (op, cid, req_id) = ("createWithConfig", new_cid(), new_req_id());
    let value = json!({
        "imageRef": docker_io("busybox:multilayer"),
        "name": unique_name("gwrst"),
        "start": true,
    });
    mqtt.send(op, &req_id, &envelope(op, headers(&cid), value))
        .await;

    tokio::time::sleep(Duration::from_millis(100)).await;
    kill_and_wait(pid, "TERM").await;
    let new_pid = restart_service("cf-gateway").await;
    assert_ne!(new_pid, pid, "cf-gateway was not restarted");

    let id = mqtt.answer_to(op, &req_id, Some(&cid)).await.expect_ok(op);
    assert!(
        containers().await.contains(&id),
        "{id} is not in containerd"
    );

    tokio::time::sleep(Duration::from_secs(10)).await;
    let answers = mqtt.received(|a| a.cid() == Some(cid.as_str()));
    assert_eq!(answers.len(), 1, "answers for {cid}: {answers:?}");
}

/// A container whose process exits while cf-factory is down is settled
/// once it is back: the task is released and the exit recorded.
#[tokio::test]
async fn exit_while_factory_is_down_is_settled_after_restart() {
    let _suite = exclusive().await;
    let mqtt = Mqtt::connect("exitdown").await;
    let value = json!({
        "imageRef": docker_io("busybox:latest"),
        "start": true,
        "config": {"cmd": ["sleep", "3"]},
    });
    let id = mqtt
        .create("createWithConfig", value)
        .await
        .expect_ok("createWithConfig");

    kill_and_wait(service_pid("cf-factory"), "KILL").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(tasks().await.get(&id).map(String::as_str), Some("STOPPED"));
    restart_service("cf-factory").await;

    let deadline = Instant::now() + Duration::from_secs(30);
    while tasks().await.contains_key(&id) {
        assert!(
            Instant::now() < deadline,
            "the stopped task of {id} was not settled"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let info = ctr(&["containers", "info", &id]).await;
    assert!(
        info.contains(r#""container-factory/state": "EXITED""#),
        "{info}"
    );
}
