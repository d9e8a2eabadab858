//! The Container Factory API page's two examples, published byte for byte
//! (only `<UUID>` and, for another thing than `edge:device`, the thing are
//! substituted), and a served port with extraHosts.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::helpers::{
    containers, ditto_thing, docker_io, free_port, http_get, log_lines, new_cid, shared, stack,
    unique_name, wait_for_log, Answer, Mqtt,
};

/// Request of the page's "Create" example.
const SEED_CREATE: &str = r#"{
	"topic":"edge/device/things/live/messages/create",
	"headers":{
		"response-required":true,
		"content-type":"application/json",
		"correlation-id":"<UUID>"
	},
	"path":"/features/ContainerFactory/inbox/messages/create",
	"value":{
		"imageRef":"docker.io/library/hello-world:latest",
		"start":true
	}
}"#;

/// Answer of the page's "Create" example.
const SEED_CREATE_ANSWER: &str = r#"{
	"topic":"edge/device/things/live/messages/create",
	"headers":{
		"content-type":"application/json",
		"correlation-id":"<UUID>"
	},
	"path":"/features/ContainerFactory/outbox/messages/create",
	"value":"<Container UUID>"
}"#;

/// Request of the page's "Create with config" example.
const SEED_CREATE_WITH_CONFIG: &str = r#"{
	"topic":"edge/device/things/live/messages/createWithConfig",
	"headers":{
		"response-required":true,
		"content-type":"application/json",
		"correlation-id":"<UUID>"
	},
	"path":"/features/ContainerFactory/inbox/messages/createWithConfig",
	"value":{
		"config":{
			"extraHosts":["ctrhost:host_ip"],
			"portMappings":[
				{
					"containerPort":80,
					"hostPort":5000
				}
			]
		},
		"imageRef":"docker.io/library/hello-world:latest",
		"start":true
	}
}"#;

/// Answer of the page's "Create with config" example.
const SEED_CREATE_WITH_CONFIG_ANSWER: &str = r#"{
	"topic":"edge/device/things/live/messages/createWithConfig",
	"headers":{
		"content-type":"application/json",
		"correlation-id":"<UUID>"
	},
	"path":"/features/ContainerFactory/outbox/messages/createWithConfig",
	"value":"<Container UUID>"
}"#;

const HELLO: &str = "Hello from Docker!";

/// The page's text for this stack's thing.
fn for_this_thing(text: &str) -> String {
    text.replace("edge/device/", &format!("{}/", ditto_thing()))
}

/// Publishes a seed request verbatim on the page's topic
/// (`command//<thing>/req//<op>`), returns the answer on `res//<op>`.
async fn publish_seed(mqtt: &Mqtt, op: &str, request: &str) -> (String, Answer) {
    let cid = new_cid();
    let payload = for_this_thing(request).replace("<UUID>", &cid);
    let topic = format!("command//{}/req//{op}", stack().thing);
    mqtt.publish(&topic, payload).await;

    (cid.clone(), mqtt.answer_to(op, "", Some(&cid)).await)
}

/// The answer is the page's example answer plus `status: 200`.
fn expect_page_answer(answer: &Answer, op: &str, example: &str, cid: &str) -> String {
    let id = answer.expect_ok(op);
    let example = for_this_thing(example)
        .replace("<UUID>", cid)
        .replace("<Container UUID>", &id);
    let example: Value = serde_json::from_str(&example).expect("page example is JSON");

    for key in ["topic", "path", "value"] {
        assert_eq!(
            answer.json[key], example[key],
            "`{key}` differs from the page: {answer}"
        );
    }
    for (name, value) in example["headers"].as_object().expect("example headers") {
        assert_eq!(
            &answer.json["headers"][name], value,
            "header {name}: {answer}"
        );
    }
    id
}

/// Every log line is a Docker json-file record.
fn expect_json_file_format(id: &str) {
    for line in log_lines(id) {
        assert!(line["log"].is_string(), "{id}: no `log` in {line}");
        let stream = line["stream"].as_str();
        assert!(
            matches!(stream, Some("stdout" | "stderr")),
            "{id}: stream in {line}"
        );
        let time = line["time"].as_str().unwrap_or_default();
        assert!(
            time.contains('T') && time.ends_with('Z'),
            "{id}: time in {line}"
        );
    }
}

async fn expect_hello_container(id: &str) {
    assert!(containers().await.contains(id), "{id} is not in containerd");
    wait_for_log(id, HELLO, Duration::from_secs(30)).await;
    expect_json_file_format(id);
}

#[tokio::test]
async fn seed_create_example_runs_hello_world() {
    let _suite = shared().await;
    let mqtt = Mqtt::connect("seedc").await;

    let (cid, answer) = publish_seed(&mqtt, "create", SEED_CREATE).await;
    let id = expect_page_answer(&answer, "create", SEED_CREATE_ANSWER, &cid);
    expect_hello_container(&id).await;
}

#[tokio::test]
async fn seed_create_with_config_example_runs_hello_world() {
    let _suite = shared().await;
    let mqtt = Mqtt::connect("seedcwc").await;

    let op = "createWithConfig";
    let (cid, answer) = publish_seed(&mqtt, op, SEED_CREATE_WITH_CONFIG).await;
    let id = expect_page_answer(&answer, op, SEED_CREATE_WITH_CONFIG_ANSWER, &cid);
    expect_hello_container(&id).await;
}

/// busybox httpd serving its own /etc on a published port: the port is
/// reachable on 127.0.0.1 and /etc/hosts carries the extraHosts entries.
#[tokio::test]
async fn published_port_serves_etc_hosts_with_extra_hosts() {
    let _suite = shared().await;
    let mqtt = Mqtt::connect("httpd").await;

    let (id, port) = create_httpd(&mqtt).await;
    assert!(
        containers().await.contains(&id),
        "{id} is not in containerd"
    );

    let hosts = get_hosts_file(port).await;
    let gateway = stack().bridge_gateway.to_string();
    assert!(
        has_hosts_entry(&hosts, &gateway, "ctrhost"),
        "no `{gateway} ctrhost`:\n{hosts}"
    );
    assert!(
        has_hosts_entry(&hosts, LITERAL_IP, LITERAL_HOST),
        "no literal entry:\n{hosts}"
    );
}

const LITERAL_HOST: &str = "e2e-literal";
/// TEST-NET-1: only written into /etc/hosts, never contacted.
const LITERAL_IP: &str = "192.0.2.10";

/// Creates and starts the httpd container on a free host port; a port that
/// turns out to be held by a container of an earlier run (409) is replaced.
async fn create_httpd(mqtt: &Mqtt) -> (String, u16) {
    for _ in 0..5 {
        let port = free_port();
        let answer = mqtt.create("createWithConfig", httpd_request(port)).await;
        if answer.status() == Some(409) && answer.raw.contains(&port.to_string()) {
            continue;
        }
        return (answer.expect_ok("createWithConfig"), port);
    }
    panic!("5 host ports in a row were in conflict");
}

fn httpd_request(port: u16) -> Value {
    json!({
        "imageRef": docker_io("busybox:latest"),
        "name": unique_name("httpd"),
        "start": true,
        "config": {
            "cmd": ["httpd", "-f", "-p", "80", "-h", "/etc"],
            "extraHosts": ["ctrhost:host_ip", format!("{LITERAL_HOST}:{LITERAL_IP}")],
            "portMappings": [{"containerPort": 80, "hostPort": port}],
        },
    })
}

/// Polls `GET /hosts` for up to 20 s; returns the body of a 200 response.
async fn get_hosts_file(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        match http_get(port, "/hosts").await {
            Ok(response) if response.starts_with("HTTP/1.") && response.contains(" 200") => {
                let body = response.split_once("\r\n\r\n").map(|(_, b)| b);
                return body.unwrap_or_default().to_owned();
            }
            Ok(response) => last = format!("response {response:?}"),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("GET http://127.0.0.1:{port}/hosts did not succeed within 20 s; last: {last}");
}

fn has_hosts_entry(hosts: &str, ip: &str, name: &str) -> bool {
    hosts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        fields.next() == Some(ip) && fields.any(|f| f == name)
    })
}
