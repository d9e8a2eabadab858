//! Every error class: status, error code, answer topic and a message that
//! names the offending field by its JSON path; answers on `res//<op>`;
//! silence for `response-required: false`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{
    docker_io, envelope, headers, inbox, new_cid, new_req_id, outbox, req_topic, shared, stack,
    unique_name, Answer, Mqtt, CONFLICT, HEADER_INVALID, NOT_FOUND, PARAM_INVALID,
};

const CWC: &str = "createWithConfig";

/// Sends `value` to `op` and expects a 400 whose message names `field`.
async fn expect_invalid(mqtt: &Mqtt, op: &str, value: Value, field: &str) -> Answer {
    let answer = mqtt.create(op, value).await;
    answer.expect_error(op, 400, PARAM_INVALID, field);
    answer
}

fn busybox() -> String {
    docker_io("busybox:latest")
}

fn with_config(config: Value) -> Value {
    json!({"imageRef": busybox(), "start": false, "config": config})
}

#[tokio::test]
async fn payload_that_is_not_json_gets_400_on_root_path() {
    let _suite = shared().await;
    let mqtt = Mqtt::connect("notjson").await;

    let req_id = new_req_id();
    mqtt.publish(&req_topic(&req_id, "create"), "this is { not json")
        .await;

    let answer = mqtt.answer_to("create", &req_id, None).await;
    answer.expect_routing("create", "/");
    answer.expect_error_value(400, PARAM_INVALID, "");
}

#[tokio::test]
async fn envelope_field_of_wrong_type_gets_400() {
    let _suite = shared().await;
    let mqtt = Mqtt::connect("envtype").await;

    let cid = new_cid();
    let mut request = envelope("create", headers(&cid), json!({"imageRef": busybox()}));
    request["path"] = json!(5);
    let req_id = new_req_id();
    mqtt.send("create", &req_id, &request).await;

    let answer = mqtt.answer_to("create", &req_id, Some(&cid)).await;
    answer.expect_error_value(400, PARAM_INVALID, "path");
}

#[tokio::test]
async fn missing_correlation_id_gets_400() {
    let _suite = shared().await;
    let mqtt = Mqtt::connect("nocid").await;

    let headers = json!({"response-required": true, "content-type": "application/json"});
    let value = json!({"imageRef": busybox(), "start": false});
    let req_id = new_req_id();
    mqtt.send("create", &req_id, &envelope("create", headers, value))
        .await;

    let answer = mqtt.answer_to("create", &req_id, None).await;
    answer.expect_error("create", 400, PARAM_INVALID, "correlation-id");
}

#[tokio::test]
async fn wrong_content_type_gets_400() {
    let _suite = shared().await;
    let mqtt = Mqtt::connect("ctype").await;

    let cid = new_cid();
    let mut headers = headers(&cid);
    headers["content-type"] = json!("text/plain");
    let value = json!({"imageRef": busybox(), "start": false});
    let answer = mqtt.request("create", &new_req_id(), value, headers).await;
    answer.expect_error("create", 400, PARAM_INVALID, "content-type");
}

#[tokio::test]
async fn value_of_wrong_shape_gets_400() {
    let _suite = shared().await;
    let mqtt = Mqtt::connect("shape").await;

    expect_invalid(
        &mqtt,
        "create",
        json!("docker.io/library/busybox:latest"),
        "",
    )
    .await;
    expect_invalid(&mqtt, CWC, json!([busybox()]), "").await;
}

#[tokio::test]
async fn field_of_wrong_type_is_named() {
    let _suite = shared().await;
    let mqtt = Mqtt::connect("ftype").await;

    expect_invalid(
        &mqtt,
        "create",
        json!({"imageRef": 5, "start": true}),
        "imageRef",
    )
    .await;
    let value = json!({"imageRef": busybox(), "start": "yes"});
    expect_invalid(&mqtt, "create", value, "start").await;
    expect_invalid(&mqtt, CWC, with_config(json!({"cmd": "sh"})), "config.cmd").await;
}

#[tokio::test]
async fn missing_image_ref_is_named() {
    let _suite = shared().await;
    let mqtt = Mqtt::connect("noimage").await;

    expect_invalid(&mqtt, "create", json!({"start": true}), "imageRef").await;
    expect_invalid(
        &mqtt,
        CWC,
        json!({"imageRef": "", "start": false}),
        "imageRef",
    )
    .await;
}

#[tokio::test]
async fn unknown_fields_are_named() {
    let _suite = shared().await;
    let mqtt = Mqtt::connect("unknown").await;

    let value = json!({"imageRef": busybox(), "start": false, "bogusTop": 1});
    expect_invalid(&mqtt, "create", value, "bogusTop").await;
    expect_invalid(&mqtt, CWC, with_config(json!({"bogus": 1})), "config.bogus").await;
}

#[tokio::test]
async fn invalid_env_entry_is_named_by_index() {
    let _suite = shared().await;
    let mqtt = Mqtt::connect("env").await;

    let config = json!({"env": ["GOOD=1", "1BAD=x"]});
    expect_invalid(&mqtt, CWC, with_config(config), "config.env[1]").await;
}

#[tokio::test]
async fn kanto_fields_outside_this_slice_are_rejected() {
    let _suite = shared().await;
    let mqtt = Mqtt::connect("kanto").await;

    let privileged = json!({"privileged": true});
    expect_invalid(&mqtt, CWC, with_config(privileged), "config.privileged").await;
    let mounts = json!({"mountPoints": [{"source": "/tmp", "destination": "/mnt"}]});
    expect_invalid(&mqtt, CWC, with_config(mounts), "config.mountPoints").await;
}

#[tokio::test]
async fn invalid_port_mappings_are_named() {
    let _suite = shared().await;
    let mqtt = Mqtt::connect("ports").await;

    let field = "config.portMappings[0].containerPort";
    let config = json!({"portMappings": [{"containerPort": 70000, "hostPort": 18999}]});
    expect_invalid(&mqtt, CWC, with_config(config), field).await;

    let field = "config.portMappings[0].hostIP";
    let mapping = json!({"containerPort": 80, "hostPort": 18998, "hostIP": "not-an-ip"});
    let config = json!({"portMappings": [mapping]});
    expect_invalid(&mqtt, CWC, with_config(config), field).await;
}

#[tokio::test]
async fn invalid_extra_host_is_named() {
    let _suite = shared().await;
    let mqtt = Mqtt::connect("xhosts").await;

    let config = json!({"extraHosts": ["ctrhost:host_ip", "no-address-here"]});
    expect_invalid(&mqtt, CWC, with_config(config), "config.extraHosts[1]").await;
}

#[tokio::test]
async fn invalid_name_is_named() {
    let _suite = shared().await;
    let mqtt = Mqtt::connect("badname").await;

    let value = json!({"imageRef": busybox(), "name": ".starts-with-dot", "start": false});
    expect_invalid(&mqtt, CWC, value, "name").await;
}

#[tokio::test]
async fn header_of_wrong_type_gets_header_invalid() {
    let _suite = shared().await;
    let mqtt = Mqtt::connect("hdrtype").await;

    let cid = new_cid();
    let mut headers = headers(&cid);
    headers["response-required"] = json!("false");
    let value = json!({"imageRef": busybox(), "start": false});
    let answer = mqtt.request("create", &new_req_id(), value, headers).await;
    answer.expect_error("create", 400, HEADER_INVALID, "response-required");
}

#[tokio::test]
async fn unknown_operation_gets_404() {
    let _suite = shared().await;
    let mqtt = Mqtt::connect("unknop").await;

    let value = json!({"imageRef": busybox(), "start": false});
    let answer = mqtt.create("destroy", value).await;
    answer.expect_error("destroy", 404, NOT_FOUND, "destroy");
}

#[tokio::test]
async fn unknown_feature_gets_404() {
    let _suite = shared().await;
    let mqtt = Mqtt::connect("unknfeat").await;

    let cid = new_cid();
    let value = json!({"imageRef": busybox(), "start": false});
    let mut request = envelope("create", headers(&cid), value);
    request["path"] = json!(inbox("NoSuchFeature", "create"));
    let req_id = new_req_id();
    mqtt.send("create", &req_id, &request).await;

    let answer = mqtt.answer_to("create", &req_id, Some(&cid)).await;
    answer.expect_routing("create", &outbox("NoSuchFeature", "create"));
    answer.expect_error_value(404, NOT_FOUND, "NoSuchFeature");
}

#[tokio::test]
async fn ditto_topic_of_another_thing_gets_400() {
    let _suite = shared().await;
    let mqtt = Mqtt::connect("otherthg").await;

    let cid = new_cid();
    let value = json!({"imageRef": busybox(), "start": false});
    let mut request = envelope("create", headers(&cid), value);
    request["topic"] = json!("e2e.other/thing/things/live/messages/create");
    let req_id = new_req_id();
    mqtt.send("create", &req_id, &request).await;

    let answer = mqtt.answer_to("create", &req_id, Some(&cid)).await;
    answer.expect_error_value(400, PARAM_INVALID, "topic");
}

/// An empty request ID: the error answer goes to `res//<op>`.
#[tokio::test]
async fn error_with_empty_request_id_answers_on_op_topic() {
    let _suite = shared().await;
    let mqtt = Mqtt::connect("emptyrid").await;

    let cid = new_cid();
    let value = with_config(json!({"env": ["=no-name"]}));
    let answer = mqtt.request(CWC, "", value, headers(&cid)).await;
    answer.expect_error(CWC, 400, PARAM_INVALID, "config.env[0]");
}

/// `response-required: false`: neither a success nor an error is answered;
/// a later ordinary request proves the pipeline was alive meanwhile.
#[tokio::test]
async fn response_required_false_gets_no_answer() {
    let _suite = shared().await;
    let mqtt = Mqtt::connect("silent").await;

    let valid = json!({"imageRef": busybox(), "start": false});
    let invalid = with_config(json!({"env": ["1BAD"]}));
    let mut silent = Vec::new();
    for (op, value) in [("create", valid), (CWC, invalid)] {
        let (cid, req_id) = (new_cid(), new_req_id());
        let mut headers = headers(&cid);
        headers["response-required"] = json!(false);
        mqtt.send(op, &req_id, &envelope(op, headers, value)).await;
        silent.push((cid, req_id));
    }

    tokio::time::sleep(Duration::from_secs(5)).await;
    let sentinel = json!({"imageRef": busybox(), "start": false});
    mqtt.create("create", sentinel).await.expect_ok("create");

    tokio::time::sleep(Duration::from_secs(1)).await;
    for (cid, req_id) in &silent {
        let prefix = format!("command//{}/res/{req_id}/", stack().thing);
        let got = mqtt.received(|a| a.cid() == Some(cid) || a.topic.starts_with(&prefix));
        assert!(
            got.is_empty(),
            "answered although response-required was false: {got:?}"
        );
    }
}

/// A name used by a running container cannot be taken again.
#[tokio::test]
async fn name_in_use_by_live_container_conflicts() {
    let _suite = shared().await;
    let mqtt = Mqtt::connect("conflict").await;

    let name = unique_name("taken");
    let first = json!({
        "imageRef": busybox(), "name": name, "start": true,
        "config": {"cmd": ["sleep", "300"]},
    });
    mqtt.create(CWC, first).await.expect_ok(CWC);

    let second = json!({"imageRef": busybox(), "name": name, "start": false});
    mqtt.create(CWC, second)
        .await
        .expect_error(CWC, 409, CONFLICT, &name);
}
