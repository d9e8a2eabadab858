//! Execution failures: a pull failure answers 500 and leaves nothing behind.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{
    containers, ctr, docker_io, exclusive, free_port, local_registry, snapshot_count, unique_name,
    Mqtt, CONFLICT, EXEC_FAILED,
};

#[tokio::test]
async fn missing_image_answers_500_and_leaves_nothing_behind() {
    // compares the whole container and snapshot lists
    let _suite = exclusive().await;
    let mqtt = Mqtt::connect("noimage").await;
    let (containers_before, snapshots_before) = (containers().await, snapshot_count().await);

    let image = local_registry("does-not-exist:latest");
    let answer = mqtt
        .create("create", json!({"imageRef": image, "start": true}))
        .await;
    answer.expect_error("create", 500, EXEC_FAILED, "does-not-exist");

    let name = unique_name("nopull");
    let value = json!({"imageRef": image, "name": name, "start": false});
    let answer = mqtt.create("createWithConfig", value).await;
    answer.expect_error("createWithConfig", 500, EXEC_FAILED, "does-not-exist");

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(containers().await, containers_before, "containers changed");
    assert_eq!(
        snapshot_count().await,
        snapshots_before,
        "snapshot count changed"
    );
    let images = ctr(&["images", "ls", "-q"]).await;
    assert!(
        !images.contains("does-not-exist"),
        "image record left behind:\n{images}"
    );

    // the failed create does not hold on to its name
    let value = json!({"imageRef": docker_io("busybox:latest"), "name": name});
    mqtt.create("createWithConfig", value)
        .await
        .expect_ok("createWithConfig");
}

/// A create that is to start on a host port something else holds is
/// refused with 409 before anything exists.
#[tokio::test]
async fn taken_host_port_is_refused_before_anything_is_created() {
    let _suite = exclusive().await;
    let mqtt = Mqtt::connect("porttaken").await;
    let port = free_port();
    let _holder = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let (before, snapshots) = (containers().await, snapshot_count().await);

    let value = json!({
        "imageRef": docker_io("busybox:latest"),
        "start": true,
        "config": {"cmd": ["sleep", "30"],
                   "portMappings": [{"containerPort": 80, "hostPort": port}]},
    });
    let answer = mqtt.create("createWithConfig", value).await;
    let needle = format!("config.portMappings[0].hostPort: host port {port}/tcp is already in use");
    answer.expect_error("createWithConfig", 409, CONFLICT, &needle);

    assert_eq!(containers().await, before, "a container was left behind");
    assert_eq!(
        snapshot_count().await,
        snapshots,
        "a snapshot was left behind"
    );
}
