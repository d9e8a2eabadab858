//! Successful creates beyond the seed examples: `start: false`, env and
//! cmd, and an image referenced straight at the stack's registry.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{
    containers, ctr, docker_io, local_registry, shared, tasks, unique_name, wait_for_log, Mqtt,
};

/// `start: false` leaves a container without a task, also a while later.
#[tokio::test]
async fn start_false_leaves_a_container_without_task() {
    let _suite = shared().await;
    let mqtt = Mqtt::connect("nostart").await;

    let value = json!({"imageRef": local_registry("busybox:latest"), "start": false});
    let id = mqtt.create("create", value).await.expect_ok("create");
    assert!(
        containers().await.contains(&id),
        "{id} is not in containerd"
    );
    ctr(&["containers", "info", &id]).await;

    for _ in 0..2 {
        let tasks = tasks().await;
        assert!(
            !tasks.contains_key(&id),
            "{id} has a task: {:?}",
            tasks.get(&id)
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// `start` defaults to false.
#[tokio::test]
async fn start_defaults_to_false() {
    let _suite = shared().await;
    let mqtt = Mqtt::connect("defstart").await;

    let value = json!({"imageRef": docker_io("busybox:latest"), "name": unique_name("defstart")});
    let id = mqtt
        .create("createWithConfig", value)
        .await
        .expect_ok("createWithConfig");
    assert!(
        containers().await.contains(&id),
        "{id} is not in containerd"
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !tasks().await.contains_key(&id),
        "{id} was started without `start: true`"
    );
}

/// `config.env` and `config.cmd` reach the container's process.
#[tokio::test]
async fn env_and_cmd_reach_the_process() {
    let _suite = shared().await;
    let mqtt = Mqtt::connect("envcmd").await;

    let value = json!({
        "imageRef": docker_io("busybox:latest"),
        "name": unique_name("envcmd"),
        "start": true,
        "config": {
            "env": ["E2E_GREETING=hello from env", "E2E_EMPTY="],
            "cmd": ["sh", "-c", "echo \"greeting=$E2E_GREETING empty=[$E2E_EMPTY]\""],
        },
    });
    let id = mqtt
        .create("createWithConfig", value)
        .await
        .expect_ok("createWithConfig");

    let needle = "greeting=hello from env empty=[]";
    wait_for_log(&id, needle, Duration::from_secs(30)).await;
}
