use serde_json::{json, Value};

use super::*;
use crate::ids::ContainerId;

const LIMIT: usize = 1024 * 1024;

fn thing() -> ThingId {
    ThingId::new("edge:device").unwrap()
}

fn seed(op: &str, value: Value) -> Value {
    json!({
        "topic": format!("edge/device/things/live/messages/{op}"),
        "headers": {"response-required": true, "content-type": "application/json",
                    "correlation-id": "c-1"},
        "path": format!("/features/ContainerFactory/inbox/messages/{op}"),
        "value": value,
    })
}

fn parse(topic: &str, payload: &Value) -> Inbound {
    parse_inbound(&thing(), topic, payload.to_string().as_bytes(), LIMIT)
}

fn reject(topic: &str, payload: &Value) -> (Reply, ApiError) {
    match parse(topic, payload) {
        Inbound::Reject(reply, e) => (reply, e),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn parses_the_seed_create_and_renders_its_answer_exactly() {
    let payload = seed(
        "create",
        json!({"imageRef": "docker.io/library/hello-world:latest",
                                        "start": true}),
    );
    let Inbound::Create(cmd) = parse("command//edge:device/req//create", &payload) else {
        panic!("not a create");
    };
    let id = ContainerId::generate();
    let answer = cmd.reply.render(&Outcome::Created(id)).unwrap();
    assert_eq!(answer.topic, "command//edge:device/res//create");
    let got: Value = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(
        got,
        json!({
            "topic": "edge/device/things/live/messages/create",
            "headers": {"content-type": "application/json", "correlation-id": "c-1"},
            "path": "/features/ContainerFactory/outbox/messages/create",
            "status": 200,
            "value": id.to_string(),
        })
    );
}

#[test]
fn answers_on_the_status_topic_when_a_request_id_is_given() {
    let payload = seed("create", json!({"imageRef": "busybox"}));
    let Inbound::Create(cmd) = parse("command//edge:device/req/r-9/create", &payload) else {
        panic!("not a create");
    };
    let e = ApiError::conflict("x");
    let answer = cmd.reply.render(&Outcome::Failed(e)).unwrap();
    assert_eq!(answer.topic, "command//edge:device/res/r-9/409");
}

#[test]
fn ignores_foreign_topics_and_twin_events() {
    let payload = seed("create", json!({"imageRef": "busybox"}));
    for topic in [
        "command//other:thing/req//create",
        "command//edge:device/req//modified",
        "command//edge:device/res//create",
        "e/t/edge:device",
    ] {
        assert!(matches!(parse(topic, &payload), Inbound::Ignore), "{topic}");
    }
}

#[test]
fn stays_silent_when_no_response_is_required() {
    let mut payload = seed("create", json!({"imageRef": "busybox"}));
    payload["headers"]["response-required"] = json!(false);
    let Inbound::Create(cmd) = parse("command//edge:device/req/1/create", &payload) else {
        panic!("not a create");
    };
    assert!(cmd
        .reply
        .render(&Outcome::Created(ContainerId::generate()))
        .is_none());
}

#[test]
fn classifies_each_bad_request() {
    let topic = "command//edge:device/req/7/create";
    let good = seed("create", json!({"imageRef": "busybox"}));
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        v
    };
    let cases: Vec<(Value, ErrorCode, &str)> = vec![
        (
            with(&|v| {
                v["headers"]
                    .as_object_mut()
                    .unwrap()
                    .remove("correlation-id");
            }),
            ErrorCode::ParameterInvalid,
            "headers.correlation-id: correlation id header is missing",
        ),
        (
            with(&|v| v["headers"]["response-required"] = json!("false")),
            ErrorCode::HeaderInvalid,
            "headers.response-required: must be a JSON boolean",
        ),
        (
            with(&|v| v["headers"]["content-type"] = json!("text/plain")),
            ErrorCode::ParameterInvalid,
            "headers.content-type: unsupported content type header text/plain",
        ),
        (
            with(&|v| v["path"] = json!("/features/Nope/inbox/messages/create")),
            ErrorCode::SubjectNotFound,
            "path: feature Nope not found",
        ),
        (
            with(&|v| v["path"] = json!("/features/ContainerFactory/inbox/messages/destroy")),
            ErrorCode::SubjectNotFound,
            "path: unsupported operation destroy of feature ContainerFactory",
        ),
        (
            with(&|v| v["topic"] = json!("other/thing/things/live/messages/create")),
            ErrorCode::ParameterInvalid,
            "topic: names thing other:thing, but the command was sent to edge:device",
        ),
        (
            with(&|v| v["value"]["extra"] = json!(1)),
            ErrorCode::ParameterInvalid,
            "extra: unknown field",
        ),
    ];
    for (payload, code, message) in cases {
        let (_, e) = reject(topic, &payload);
        assert_eq!((e.code, e.message.as_str()), (code, message));
    }
}

#[test]
fn answers_an_unparsable_payload_with_a_fallback_envelope() {
    let outcome = parse_inbound(
        &thing(),
        "command//edge:device/req/r1/create",
        b"{nope",
        LIMIT,
    );
    let Inbound::Reject(reply, e) = outcome else {
        panic!("expected a rejection")
    };
    assert_eq!(e.code, ErrorCode::ParameterInvalid);
    assert_eq!(reply.path, "/");
    assert_eq!(reply.ditto_topic, "edge/device/things/live/messages/create");
    assert_eq!(reply.correlation_id, "r1");
    let answer = reply.render(&Outcome::Failed(e)).unwrap();
    assert_eq!(answer.topic, "command//edge:device/res/r1/400");
}

#[test]
fn rejects_payloads_over_the_limit() {
    let big = vec![b' '; 11];
    let outcome = parse_inbound(&thing(), "command//edge:device/req/r1/create", &big, 10);
    let Inbound::Reject(_, e) = outcome else {
        panic!("expected a rejection")
    };
    assert_eq!(e.code, ErrorCode::PayloadTooLarge);
    assert_eq!(e.code.status(), 413);
}

#[test]
fn keeps_the_outbox_path_on_errors_after_the_path_was_read() {
    let payload = seed("create", json!({"imageRef": ""}));
    let (reply, e) = reject("command//edge:device/req//create", &payload);
    assert_eq!(e.message, "imageRef: must be set");
    assert_eq!(
        reply.path,
        "/features/ContainerFactory/outbox/messages/create"
    );
    assert_eq!(reply.correlation_id, "c-1");
}

#[test]
fn header_errors_still_carry_the_correlation_id_and_outbox_path() {
    let mut payload = seed("create", json!({"imageRef": "busybox"}));
    payload["headers"]["response-required"] = json!("false");
    let (reply, e) = reject("command//edge:device/req/r2/create", &payload);
    assert_eq!(e.code, ErrorCode::HeaderInvalid);
    assert_eq!(reply.correlation_id, "c-1");
    assert_eq!(
        reply.path,
        "/features/ContainerFactory/outbox/messages/create"
    );

    let mut payload = seed("create", json!({"imageRef": "busybox"}));
    payload["headers"]
        .as_object_mut()
        .unwrap()
        .remove("correlation-id");
    let (reply, _) = reject("command//edge:device/req/r3/create", &payload);
    assert_eq!(
        reply.path,
        "/features/ContainerFactory/outbox/messages/create"
    );
    assert_eq!(reply.correlation_id, "r3");
}
