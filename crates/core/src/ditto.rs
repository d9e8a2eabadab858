//! Hono command topics and Ditto envelopes: parsing an inbound command and
//! rendering its answer. All topic strings are built here and nowhere else.
//!
//! The rules are Kanto's things API with container-factory's differences:
//! every operation is answered unless `response-required` is `false`, input
//! errors are 400, and an unparsable payload still gets an answer.

use serde_json::{json, Map, Value};

use crate::error::{ApiError, ErrorCode};
use crate::ids::ThingId;
use crate::request::{CreateRequest, Operation, Outcome};

/// The feature that creates containers.
pub const FACTORY_FEATURE: &str = "ContainerFactory";

/// The only content type a message value may have.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// Command names that Hono uses to route twin events, not operations.
const TWIN_EVENTS: &[&str] = &["created", "modified", "deleted", "errors-response"];

/// The MQTT subscription that receives every command for `thing`.
pub fn command_subscription(thing: &ThingId) -> String {
    format!("command//{thing}/req/#")
}

/// The parts of an inbound Hono command topic
/// `command//<device>/req/<request id>/<command>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTopic {
    /// The Hono device ID, which is the thing ID.
    pub device: String,
    /// The request ID; empty for one-way commands.
    pub request_id: String,
    /// The command name (the operation).
    pub command: String,
}

impl CommandTopic {
    /// Parses a topic; `None` when it is not a command request.
    pub fn parse(topic: &str) -> Option<Self> {
        let rest = topic.strip_prefix("command//")?;
        let mut parts = rest.split('/');
        let (device, req, request_id, command) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || req != "req" || device.is_empty() || command.is_empty() {
            return None;
        }
        Some(Self {
            device: device.to_owned(),
            request_id: request_id.to_owned(),
            command: command.to_owned(),
        })
    }
}

/// Everything needed to answer a request, whatever became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The thing the request was sent to.
    pub thing: ThingId,
    /// The request ID of the MQTT topic; may be empty.
    pub request_id: String,
    /// The command segment of the MQTT topic.
    pub command: String,
    /// The Ditto topic of the request, echoed in the answer.
    pub ditto_topic: String,
    /// The answer's Ditto path (the outbox path, or `/`).
    pub path: String,
    /// The correlation-id of the request.
    pub correlation_id: String,
    /// False when the request said `response-required: false`.
    pub response_required: bool,
}

/// An answer ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The MQTT topic.
    pub topic: String,
    /// The Ditto envelope as JSON.
    pub payload: Vec<u8>,
}

impl Reply {
    /// The answer topic: `res/<reqId>/<status>`, or `res//<command>` when
    /// the request ID is empty.
    pub fn answer_topic(&self, status: u16) -> String {
        if self.request_id.is_empty() {
            format!("command//{}/res//{}", self.thing, self.command)
        } else {
            format!("command//{}/res/{}/{status}", self.thing, self.request_id)
        }
    }

    /// Renders the answer to `outcome`; `None` when no answer is wanted.
    pub fn render(&self, outcome: &Outcome) -> Option<Answer> {
        if !self.response_required {
            return None;
        }
        let (status, value) = match outcome {
            Outcome::Created(id) => (200, Value::String(id.to_string())),
            Outcome::Failed(e) => (e.code.status(), error_value(e)),
        };
        let envelope = json!({
            "topic": self.ditto_topic,
            "headers": {
                "correlation-id": self.correlation_id,
                "content-type": JSON_CONTENT_TYPE,
            },
            "path": self.path,
            "status": status,
            "value": value,
        });
        Some(Answer {
            topic: self.answer_topic(status),
            payload: envelope.to_string().into_bytes(),
        })
    }
}

fn error_value(e: &ApiError) -> Value {
    json!({"status": e.code.status(), "error": e.code.as_str(), "message": e.message})
}

/// What the gateway does with an inbound MQTT message.
#[derive(Debug)]
pub enum Inbound {
    /// Not a command for us (another topic, or a routed twin event).
    Ignore,
    /// Answer at once with an error; nothing is queued.
    Reject(Reply, ApiError),
    /// Queue a create job.
    Create(CreateCommand),
}

/// A valid create command, ready for the factory.
#[derive(Debug)]
pub struct CreateCommand {
    /// How to answer it.
    pub reply: Reply,
    /// The operation.
    pub operation: Operation,
    /// The message value exactly as received (the factory decodes it again).
    pub value: Value,
    /// The request's fingerprint (see [`CreateRequest::fingerprint`]).
    pub fingerprint: String,
}

/// Parses an inbound MQTT message for `thing`.
pub fn parse_inbound(thing: &ThingId, topic: &str, payload: &[u8], max_payload: usize) -> Inbound {
    let Some(ct) = CommandTopic::parse(topic) else {
        return Inbound::Ignore;
    };
    if ct.device != thing.as_str()
        || (ct.request_id.is_empty() && TWIN_EVENTS.contains(&ct.command.as_str()))
    {
        return Inbound::Ignore;
    }
    let mut reply = Reply {
        thing: thing.clone(),
        ditto_topic: format!(
            "{}/things/live/messages/{}",
            thing.ditto_prefix(),
            ct.command
        ),
        path: "/".into(),
        correlation_id: fallback_correlation_id(&ct.request_id),
        response_required: true,
        request_id: ct.request_id,
        command: ct.command,
    };
    match parse_envelope(thing, &mut reply, payload, max_payload) {
        Ok(cmd) => Inbound::Create(cmd),
        Err(e) => Inbound::Reject(reply, e),
    }
}

/// Ditto's schema requires a correlation-id on every answer, so when the
/// request had none we use its request ID, the only handle the client has.
fn fallback_correlation_id(request_id: &str) -> String {
    if request_id.is_empty() {
        uuid::Uuid::new_v4().to_string()
    } else {
        request_id.to_owned()
    }
}

/// Fills `reply` as far as the payload allows, then decodes the command.
fn parse_envelope(
    thing: &ThingId,
    reply: &mut Reply,
    payload: &[u8],
    max_payload: usize,
) -> Result<CreateCommand, ApiError> {
    if payload.len() > max_payload {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "payload of {} bytes exceeds the limit of {max_payload} bytes",
                payload.len()
            ),
        ));
    }
    let envelope: Value = serde_json::from_slice(payload)
        .map_err(|e| ApiError::invalid("", format!("payload is not valid JSON: {e}")))?;
    let envelope = envelope
        .as_object()
        .ok_or_else(|| ApiError::invalid("", "payload must be a JSON object"))?;
    fill_reply(envelope, reply);
    let headers = check_headers(envelope)?;

    let ditto_topic = non_empty_string(envelope, "topic")?;
    let path = non_empty_string(envelope, "path")?;
    let op = check_path(path)?;
    check_ditto_topic(thing, ditto_topic, op.as_str())?;

    let value = envelope.get("value").cloned().unwrap_or(Value::Null);
    check_content_type(headers, &value)?;
    let request = CreateRequest::from_value(op, &value)?;
    Ok(CreateCommand {
        reply: reply.clone(),
        operation: op,
        fingerprint: request.fingerprint(),
        value,
    })
}

/// Takes from the envelope whatever the answer can use, before anything is
/// validated, so that every error answer carries as much of the request as
/// could be read.
fn fill_reply(envelope: &Map<String, Value>, reply: &mut Reply) {
    let headers = envelope.get("headers").and_then(Value::as_object);
    let header = |name| headers.and_then(|h| h.get(name));
    if let Some(Value::String(id)) = header("correlation-id").filter(|v| v != &"") {
        reply.correlation_id = id.clone();
    }
    if let Some(Value::Bool(required)) = header("response-required") {
        reply.response_required = *required;
    }
    if let Some(Value::String(topic)) = envelope.get("topic").filter(|v| v != &"") {
        reply.ditto_topic = topic.clone();
    }
    if let Some((feature, op)) = envelope.get("path").and_then(Value::as_str).and_then(inbox) {
        reply.path = format!("/features/{feature}/outbox/messages/{op}");
    }
}

/// The feature and operation of an inbox path
/// `/features/<feature>/inbox/messages/<op>`.
fn inbox(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/features/")?;
    let (feature, rest) = rest.split_once('/')?;
    let op = rest.strip_prefix("inbox/messages/")?;
    let valid = |part: &str| !part.is_empty() && !part.contains('/');
    (valid(feature) && valid(op)).then_some((feature, op))
}

fn check_headers(envelope: &Map<String, Value>) -> Result<&Map<String, Value>, ApiError> {
    let headers = match envelope.get("headers") {
        Some(Value::Object(h)) => h,
        Some(_) => return Err(ApiError::invalid("headers", "must be an object")),
        None => {
            return Err(ApiError::invalid(
                "headers.correlation-id",
                "correlation id header is missing",
            ))
        }
    };
    if !matches!(
        headers.get("response-required"),
        None | Some(Value::Null | Value::Bool(_))
    ) {
        return Err(ApiError::new(
            ErrorCode::HeaderInvalid,
            "headers.response-required: must be a JSON boolean",
        ));
    }
    match headers.get("correlation-id") {
        Some(Value::String(id)) if id.chars().any(char::is_control) => Err(ApiError::invalid(
            "headers.correlation-id",
            "must not contain control characters",
        )),
        Some(Value::String(id)) if !id.is_empty() => Ok(headers),
        None | Some(Value::Null) | Some(Value::String(_)) => Err(ApiError::invalid(
            "headers.correlation-id",
            "correlation id header is missing",
        )),
        Some(_) => Err(ApiError::new(
            ErrorCode::HeaderInvalid,
            "headers.correlation-id: must be a JSON string",
        )),
    }
}

fn non_empty_string<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a str, ApiError> {
    match obj.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        _ => Err(ApiError::invalid(key, "must be a non-empty string")),
    }
}

/// Resolves the path to an operation of the factory feature.
fn check_path(path: &str) -> Result<Operation, ApiError> {
    let Some((feature, op)) = inbox(path) else {
        return Err(ApiError::not_found(format!(
            "path: {path} does not address a feature's inbox message"
        )));
    };
    if feature != FACTORY_FEATURE {
        return Err(ApiError::not_found(format!(
            "path: feature {feature} not found"
        )));
    }
    Operation::parse(op).ok_or_else(|| {
        ApiError::not_found(format!(
            "path: unsupported operation {op} of feature {feature}"
        ))
    })
}

fn check_ditto_topic(thing: &ThingId, topic: &str, op: &str) -> Result<(), ApiError> {
    let parts: Vec<&str> = topic.split('/').collect();
    let [ns, name, "things", "live", "messages", topic_op] = parts[..] else {
        return Err(ApiError::invalid(
            "topic",
            format!(
                "{topic} is not of the form <namespace>/<name>/things/live/messages/<operation>"
            ),
        ));
    };
    let named = format!("{ns}:{name}");
    if named != thing.as_str() {
        return Err(ApiError::invalid(
            "topic",
            format!("names thing {named}, but the command was sent to {thing}"),
        ));
    }
    if topic_op != op {
        return Err(ApiError::invalid(
            "topic",
            format!("operation {topic_op} does not match the path's operation {op}"),
        ));
    }
    Ok(())
}

fn check_content_type(headers: &Map<String, Value>, value: &Value) -> Result<(), ApiError> {
    let content_type = headers.get("content-type");
    match (content_type, value.is_null()) {
        (None | Some(Value::Null), false) => Err(ApiError::invalid(
            "headers.content-type",
            "missing content type header",
        )),
        (Some(Value::String(ct)), false) if !is_json(ct) => Err(ApiError::invalid(
            "headers.content-type",
            format!("unsupported content type header {ct}"),
        )),
        (Some(v), _) if !v.is_string() && !v.is_null() => Err(ApiError::new(
            ErrorCode::HeaderInvalid,
            "headers.content-type: must be a JSON string",
        )),
        _ => Ok(()),
    }
}

/// `application/json`, optionally with parameters such as a charset.
fn is_json(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or_default();
    media.trim().eq_ignore_ascii_case(JSON_CONTENT_TYPE)
}

#[cfg(test)]
mod tests;
