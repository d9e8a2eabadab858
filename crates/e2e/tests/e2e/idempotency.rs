//! Correlation-id replays: the same request gets the same answer and never
//! a second container; a different request under a used correlation-id
//! gets 409.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use crate::helpers::{
    containers, docker_io, envelope, exclusive, headers, new_cid, new_req_id, unique_name, Mqtt,
    CONFLICT,
};

#[tokio::test]
async fn retried_correlation_id_gets_the_same_container() {
    // compares the whole container list
    let _suite = exclusive().await;
    let mqtt = Mqtt::connect("retry").await;
    let before = containers().await;

    // a retry after the answer
    let cid = new_cid();
    let value = json!({"imageRef": docker_io("busybox:latest"), "start": false});
    let first = mqtt
        .request("create", &new_req_id(), value.clone(), headers(&cid))
        .await;
    let first = first.expect_ok("create");
    let again = mqtt
        .request("create", &new_req_id(), value, headers(&cid))
        .await;
    assert_eq!(
        again.expect_ok("create"),
        first,
        "a retry got another container"
    );

    // a duplicate while the first is still being worked on
    let (op, dup_cid) = ("createWithConfig", new_cid());
    let value = json!({
        "imageRef": docker_io("hello-world:latest"),
        "name": unique_name("dup"),
        "start": true,
    });
    let request = envelope(op, headers(&dup_cid), value);
    let (req_a, req_b) = (new_req_id(), new_req_id());
    mqtt.send(op, &req_a, &request).await;
    mqtt.send(op, &req_b, &request).await;
    let dup_a = mqtt
        .answer_to(op, &req_a, Some(&dup_cid))
        .await
        .expect_ok(op);
    let dup_b = mqtt
        .answer_to(op, &req_b, Some(&dup_cid))
        .await
        .expect_ok(op);
    assert_eq!(dup_a, dup_b, "an in-flight duplicate got another container");

    // the same correlation-id for a different request
    let other = json!({"imageRef": docker_io("busybox:latest"), "start": true});
    let answer = mqtt
        .request("create", &new_req_id(), other, headers(&cid))
        .await;
    answer.expect_error("create", 409, CONFLICT, "correlation-id");

    // late duplicates would show up within a few seconds
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = containers().await;
    let gained: BTreeSet<String> = after.difference(&before).cloned().collect();
    assert_eq!(
        gained,
        BTreeSet::from([first, dup_a]),
        "containers gained in containerd"
    );
}
