//! Container lifecycle events on the internal bus: a started container that
//! exits by itself is told as CREATED, RUNNING, then EXITED with its code.

use std::time::Duration;

use cf_bus::pb::ContainerEvent;
use futures::StreamExt;
use prost::Message;
use serde_json::json;

use crate::helpers::{docker_io, shared, stack, Mqtt};

#[tokio::test]
async fn a_short_lived_container_is_told_created_running_exited() {
    let _suite = shared().await;
    let nats = async_nats::connect(&stack().nats_url)
        .await
        .expect("NATS of the stack must answer; run `just up`");
    let mut events = nats.subscribe("cf.events.>").await.unwrap();
    nats.flush().await.unwrap();

    let mqtt = Mqtt::connect("events").await;
    let value = json!({"imageRef": docker_io("hello-world:latest"), "start": true});
    let id = mqtt.create("create", value).await.expect_ok("create");

    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.last().map(|e: &ContainerEvent| e.state.as_str()) != Some("EXITED") {
        let next = tokio::time::timeout_at(deadline, events.next()).await;
        let Ok(Some(message)) = next else {
            panic!("events of {id} so far: {seen:?}");
        };
        let event = ContainerEvent::decode(message.payload.as_ref()).unwrap();
        if event.container_id == id {
            assert_eq!(message.subject.as_str(), format!("cf.events.{id}"));
            seen.push(event);
        }
    }
    let states: Vec<&str> = seen.iter().map(|e| e.state.as_str()).collect();
    assert_eq!(states, ["CREATED", "RUNNING", "EXITED"], "{seen:?}");
    assert_eq!(seen[2].exit_code, 0);
    assert!(!seen[0].correlation_id.is_empty());
}
