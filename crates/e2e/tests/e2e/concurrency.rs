//! A burst of creates at once.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::helpers::{
    containers, docker_io, envelope, headers, new_cid, new_req_id, shared, unique_name, Mqtt,
};

const BURST: usize = 20;

/// Even requests create busybox without starting it, odd ones start
/// hello-world.
fn burst_request(i: usize) -> (&'static str, Value) {
    if i % 2 == 0 {
        (
            "create",
            json!({"imageRef": docker_io("busybox:latest"), "start": false}),
        )
    } else {
        let name = unique_name("burst");
        let value =
            json!({"imageRef": docker_io("hello-world:latest"), "name": name, "start": true});
        ("createWithConfig", value)
    }
}

#[tokio::test]
async fn twenty_concurrent_creates_get_twenty_containers() {
    let _suite = shared().await;
    let mqtt = Mqtt::connect("burst").await;

    let mut sent = Vec::new();
    for i in 0..BURST {
        let (op, value) = burst_request(i);
        let (cid, req_id) = (new_cid(), new_req_id());
        mqtt.send(op, &req_id, &envelope(op, headers(&cid), value))
            .await;
        sent.push((op, cid, req_id));
    }

    let mut ids = BTreeSet::new();
    for (op, cid, req_id) in &sent {
        ids.insert(mqtt.answer_to(op, req_id, Some(cid)).await.expect_ok(op));
    }
    assert_eq!(ids.len(), BURST, "UUIDs are not distinct: {ids:?}");

    let present = containers().await;
    let missing: Vec<&String> = ids.iter().filter(|id| !present.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "answered but not in containerd: {missing:?}"
    );
}
