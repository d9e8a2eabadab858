//! Shared pieces of the end-to-end suite: the stack environment (`.run/env`),
//! one MQTT client per test, Ditto schema checks on every answer, `ctr`
//! queries against the stack's containerd, and control of the stack's
//! services through their pid files and `scripts/stack.sh`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use jsonschema::Validator;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeReasonCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::time::Instant;
use uuid::Uuid;

/// Longest wait for one answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Feature that owns the create operations.
pub const FACTORY: &str = "ContainerFactory";

pub const PARAM_INVALID: &str = "messages:parameter.invalid";
pub const HEADER_INVALID: &str = "messages:header.invalid";
pub const NOT_FOUND: &str = "messages:subject.notfound";
pub const CONFLICT: &str = "containers:conflict";
pub const EXEC_FAILED: &str = "messages:execution.failed";

const NOT_UP: &str = "the local stack is not up: run `just up` first \
     (the end-to-end suite needs it and never skips)";

// === stack environment ===

/// What `.run/env` (or the process environment, which wins) says about the
/// running stack.
pub struct Stack {
    pub root: PathBuf,
    pub mqtt_host: String,
    pub mqtt_port: u16,
    pub thing: String,
    pub state_dir: PathBuf,
    pub ctrd_address: String,
    pub ctrd_namespace: String,
    pub registry: String,
    pub nats_url: String,
    /// The host's address on the container bridge (`host_ip`).
    pub bridge_gateway: Ipv4Addr,
}

/// The stack environment; panics with a "run `just up`" message when the
/// stack has not written `.run/env`.
pub fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(Stack::load)
}

/// Workspace root: `$CF_ROOT`, else two levels above this crate.
fn root() -> PathBuf {
    let root = std::env::var_os("CF_ROOT")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
    root.canonicalize().unwrap_or(root)
}

impl Stack {
    fn load() -> Self {
        let root = root();
        let env_file = root.join(".run/env");
        let text = std::fs::read_to_string(&env_file)
            .unwrap_or_else(|e| panic!("{NOT_UP}; cannot read {}: {e}", env_file.display()));
        let file = cf_e2e::parse_env(&text);
        let get = |key: &str| -> String {
            std::env::var(key)
                .ok()
                .filter(|v| !v.is_empty())
                .or_else(|| file.get(key).cloned())
                .unwrap_or_else(|| {
                    panic!(
                        "{} does not set {key}; re-run `just up`",
                        env_file.display()
                    )
                })
        };

        let port = get("CF_MQTT_PORT");
        Self {
            mqtt_host: get("CF_MQTT_HOST"),
            mqtt_port: port
                .parse()
                .unwrap_or_else(|_| panic!("CF_MQTT_PORT={port}")),
            thing: get("CF_THING_ID"),
            state_dir: PathBuf::from(get("CF_STATE_DIR")),
            ctrd_address: get("CONTAINERD_ADDRESS"),
            ctrd_namespace: get("CONTAINERD_NAMESPACE"),
            registry: get("CF_REGISTRY"),
            nats_url: get("CF_NATS_URL"),
            bridge_gateway: bridge_gateway(&root),
            root,
        }
    }
}

/// First address of the container subnet: `CF_NETWORK__SUBNET`,
/// `CF_DEMO_SUBNET`, the `subnet` key of `.run/cf.toml`, else the default.
fn bridge_gateway(root: &Path) -> Ipv4Addr {
    let from_toml = || {
        let toml = std::fs::read_to_string(root.join(".run/cf.toml")).ok()?;
        toml.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "subnet").then(|| v.trim().trim_matches('"').to_owned())
        })
    };
    let subnet = ["CF_NETWORK__SUBNET", "CF_DEMO_SUBNET"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .or_else(from_toml)
        .unwrap_or_else(|| "10.231.17.0/24".to_owned());

    let (addr, len) = subnet.split_once('/').unwrap_or((&subnet, "32"));
    let addr: Ipv4Addr = addr
        .parse()
        .unwrap_or_else(|_| panic!("bad subnet {subnet}"));
    let len: u32 = len
        .parse()
        .unwrap_or_else(|_| panic!("bad subnet {subnet}"));
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    Ipv4Addr::from((u32::from(addr) & mask) + 1)
}

// === ids and Ditto envelopes ===

/// A fresh correlation-id.
pub fn new_cid() -> String {
    Uuid::new_v4().to_string()
}

/// A fresh request id for the Hono topic.
pub fn new_req_id() -> String {
    format!("e2e{}", Uuid::new_v4().simple())
}

/// A container name no other test uses.
pub fn unique_name(tag: &str) -> String {
    format!("e2e-{tag}-{}", &Uuid::new_v4().simple().to_string()[..12])
}

/// `<namespace>/<name>` of the thing: its ID split at the first ':'.
pub fn ditto_thing() -> String {
    let thing = &stack().thing;
    match thing.split_once(':') {
        Some((ns, name)) => format!("{ns}/{name}"),
        None => panic!("CF_THING_ID={thing} has no ':'"),
    }
}

pub fn ditto_topic(op: &str) -> String {
    format!("{}/things/live/messages/{op}", ditto_thing())
}

pub fn inbox(feature: &str, op: &str) -> String {
    format!("/features/{feature}/inbox/messages/{op}")
}

pub fn outbox(feature: &str, op: &str) -> String {
    format!("/features/{feature}/outbox/messages/{op}")
}

pub fn req_topic(req_id: &str, op: &str) -> String {
    format!("command//{}/req/{req_id}/{op}", stack().thing)
}

/// Where the answer must arrive: `res/<reqId>/<status>`, or `res//<op>`
/// when the request ID is empty.
pub fn res_topic(req_id: &str, op: &str, status: i64) -> String {
    let thing = &stack().thing;
    if req_id.is_empty() {
        format!("command//{thing}/res//{op}")
    } else {
        format!("command//{thing}/res/{req_id}/{status}")
    }
}

/// The standard request headers.
pub fn headers(cid: &str) -> Value {
    json!({
        "response-required": true,
        "content-type": "application/json",
        "correlation-id": cid,
    })
}

/// A ContainerFactory request envelope for `op`.
pub fn envelope(op: &str, headers: Value, value: Value) -> Value {
    json!({
        "topic": ditto_topic(op),
        "headers": headers,
        "path": inbox(FACTORY, op),
        "value": value,
    })
}

/// A reference to `repo_tag` (e.g. `busybox:latest`) through the docker.io
/// mirror of the stack.
pub fn docker_io(repo_tag: &str) -> String {
    format!("docker.io/library/{repo_tag}")
}

/// A reference to `repo_tag` straight at the stack's registry.
pub fn local_registry(repo_tag: &str) -> String {
    format!("{}/library/{repo_tag}", stack().registry)
}

// === answers ===

/// One message received on the answer topics.
#[derive(Clone, Debug)]
pub struct Answer {
    pub topic: String,
    pub raw: String,
    /// The payload, `Null` when it is not JSON.
    pub json: Value,
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "topic {} payload {}", self.topic, self.raw)
    }
}

impl Answer {
    fn new(topic: String, payload: &[u8]) -> Self {
        let json = serde_json::from_slice(payload).unwrap_or(Value::Null);
        let raw = String::from_utf8_lossy(payload).into_owned();
        Self { topic, raw, json }
    }

    pub fn status(&self) -> Option<i64> {
        self.json.get("status").and_then(Value::as_i64)
    }

    pub fn cid(&self) -> Option<&str> {
        self.json
            .pointer("/headers/correlation-id")
            .and_then(Value::as_str)
    }

    pub fn str_at(&self, pointer: &str) -> Option<&str> {
        self.json.pointer(pointer).and_then(Value::as_str)
    }

    /// Asserts a 200 answer to `op` with a UUID v4 value and returns it.
    pub fn expect_ok(&self, op: &str) -> String {
        assert_eq!(self.status(), Some(200), "expected 200: {self}");
        self.expect_routing(op, &outbox(FACTORY, op));

        let id = self
            .str_at("/value")
            .unwrap_or_else(|| panic!("no UUID value: {self}"));
        let uuid = Uuid::parse_str(id).unwrap_or_else(|e| panic!("value {id}: {e}: {self}"));
        assert_eq!(uuid.get_version_num(), 4, "not a UUID v4: {self}");
        assert_eq!(
            uuid.hyphenated().to_string(),
            id,
            "not a canonical UUID: {self}"
        );
        id.to_owned()
    }

    /// Asserts an error answer to `op` on the outbox path.
    pub fn expect_error(&self, op: &str, status: i64, code: &str, needle: &str) {
        self.expect_routing(op, &outbox(FACTORY, op));
        self.expect_error_value(status, code, needle);
    }

    /// Asserts status, error code and that the message mentions `needle`.
    pub fn expect_error_value(&self, status: i64, code: &str, needle: &str) {
        assert_eq!(
            self.status(),
            Some(status),
            "expected status {status}: {self}"
        );
        assert_eq!(
            self.str_at("/value/error"),
            Some(code),
            "error code: {self}"
        );
        let message = self.str_at("/value/message").unwrap_or_default();
        assert!(!message.trim().is_empty(), "empty error message: {self}");
        assert!(
            message.contains(needle),
            "message does not name `{needle}`: {self}"
        );
    }

    /// Asserts the Ditto topic and path of the answer.
    pub fn expect_routing(&self, op: &str, path: &str) {
        assert_eq!(
            self.str_at("/topic"),
            Some(ditto_topic(op).as_str()),
            "{self}"
        );
        assert_eq!(self.str_at("/path"), Some(path), "Ditto path: {self}");
    }
}

/// Whether the request carried a correlation-id the product could read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Cid {
    Readable,
    /// The request had none (or was not JSON): spec §0.4 says it is then
    /// not copied, which the Ditto envelope schema does not foresee, so
    /// only that one requirement is not enforced here.
    Unreadable,
}

struct Schemas {
    envelope: Validator,
    response: Validator,
    error: Validator,
}

fn schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let dir = schema_dir();
        Schemas {
            envelope: load_schema(&dir, "protocol-envelope.json"),
            response: load_schema(&dir, "protocol-response.json"),
            error: load_schema(&dir, "protocol-error_response.json"),
        }
    })
}

/// `$CF_DITTO_SCHEMAS`, else `shared/` beside the checkout, else the
/// machine-wide copy.
fn schema_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CF_DITTO_SCHEMAS").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    let beside = root().join("../shared/schemas/ditto");
    if beside.is_dir() {
        return beside;
    }
    PathBuf::from("/work/shared/schemas/ditto")
}

fn load_schema(dir: &Path, file: &str) -> Validator {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "Ditto schema {}: {e} (set CF_DITTO_SCHEMAS)",
            path.display()
        )
    });
    let schema: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    jsonschema::draft4::new(&schema).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn schema_errors(name: &str, validator: &Validator, doc: &Value) -> Vec<String> {
    validator
        .iter_errors(doc)
        .map(|e| format!("{name}: {e} (at `{}`)", e.instance_path))
        .collect()
}

/// Validates an answer against the Ditto envelope schema, then the
/// response (200) or error-response schema, plus the wire rules every
/// answer shares (content type, status in the MQTT topic and the value).
pub fn check_answer(answer: &Answer, cid: Cid) {
    assert!(
        answer.json.is_object(),
        "answer is not a JSON object: {answer}"
    );
    let mut doc = answer.json.clone();
    if cid == Cid::Unreadable {
        if let Some(h) = doc.get_mut("headers").and_then(Value::as_object_mut) {
            h.entry("correlation-id")
                .or_insert(json!("(not readable from the request)"));
        }
    }

    let s = schemas();
    let mut errors = schema_errors("protocol-envelope.json", &s.envelope, &doc);
    if answer.status() == Some(200) {
        errors.extend(schema_errors("protocol-response.json", &s.response, &doc));
    } else {
        errors.extend(schema_errors(
            "protocol-error_response.json",
            &s.error,
            &doc,
        ));
    }
    assert!(
        errors.is_empty(),
        "answer violates the Ditto schemas:\n{}\n{answer}",
        errors.join("\n")
    );

    let content_type = answer.str_at("/headers/content-type");
    assert_eq!(
        content_type,
        Some("application/json"),
        "content-type header: {answer}"
    );
    if let Some(status) = answer.status().filter(|s| *s != 200) {
        let inner = answer.json.pointer("/value/status").and_then(Value::as_i64);
        assert_eq!(
            inner,
            Some(status),
            "value.status differs from status: {answer}"
        );
    }
    check_topic_status(answer);
}

/// On `res/<reqId>/<status>` topics the last segment is the JSON status.
fn check_topic_status(answer: &Answer) {
    let prefix = format!("command//{}/res/", stack().thing);
    let rest = answer.topic.strip_prefix(&prefix);
    let rest = rest.unwrap_or_else(|| panic!("answer outside {prefix}: {answer}"));
    let (req_id, last) = rest
        .split_once('/')
        .unwrap_or_else(|| panic!("topic: {answer}"));
    if !req_id.is_empty() {
        assert_eq!(
            Some(last),
            answer.status().map(|s| s.to_string()).as_deref(),
            "{answer}"
        );
    }
}

// === MQTT ===

/// Everything received on `command//<thing>/res/#`.
#[derive(Default)]
struct Inbox {
    answers: Mutex<Vec<Answer>>,
    subscribed: AtomicBool,
    last_error: Mutex<Option<String>>,
    changed: Notify,
}

impl Inbox {
    fn push(&self, answer: Answer) {
        self.answers.lock().expect("inbox lock").push(answer);
        self.changed.notify_waiters();
    }

    fn fail(&self, error: String) {
        *self.last_error.lock().expect("inbox lock") = Some(error);
        self.subscribed.store(false, Ordering::SeqCst);
    }

    fn find(&self, pred: &dyn Fn(&Answer) -> bool) -> Vec<Answer> {
        let answers = self.answers.lock().expect("inbox lock");
        answers.iter().filter(|a| pred(a)).cloned().collect()
    }
}

/// One test's MQTT connection, subscribed to every answer of the thing.
pub struct Mqtt {
    client: AsyncClient,
    inbox: Arc<Inbox>,
    poller: tokio::task::JoinHandle<()>,
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

impl Mqtt {
    /// Connects with a unique client id and clean session, and returns
    /// once the answer subscription is acknowledged.
    pub async fn connect(label: &str) -> Self {
        let st = stack();
        let id = format!("e2e-{label}-{}", &Uuid::new_v4().simple().to_string()[..8]);
        let mut opts = MqttOptions::new(id, st.mqtt_host.clone(), st.mqtt_port);
        opts.set_clean_session(true)
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(4 << 20, 4 << 20);

        let (client, eventloop) = AsyncClient::new(opts, 256);
        let inbox = Arc::new(Inbox::default());
        let filter = format!("command//{}/res/#", st.thing);
        let poller = tokio::spawn(poll(eventloop, client.clone(), inbox.clone(), filter));
        let mqtt = Self {
            client,
            inbox,
            poller,
        };

        mqtt.wait_subscribed().await;
        mqtt
    }

    async fn wait_subscribed(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let notified = self.inbox.changed.notified();
            if self.inbox.subscribed.load(Ordering::SeqCst) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let st = stack();
                let err = self.inbox.last_error.lock().expect("inbox lock").clone();
                panic!(
                    "no MQTT subscription at {}:{} within 15 s ({err:?}); {NOT_UP}",
                    st.mqtt_host, st.mqtt_port
                );
            }
        }
    }

    /// Publishes `payload` with QoS 1.
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        let payload: Vec<u8> = payload.into();
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap_or_else(|e| panic!("publish to {topic}: {e}"));
    }

    /// Publishes a Ditto envelope for `op` under request id `req_id`.
    pub async fn send(&self, op: &str, req_id: &str, envelope: &Value) {
        self.publish(&req_topic(req_id, op), envelope.to_string())
            .await;
    }

    /// Sends `value` to `op` with the given headers and returns the
    /// checked answer.
    pub async fn request(&self, op: &str, req_id: &str, value: Value, headers: Value) -> Answer {
        let cid = headers
            .get("correlation-id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        self.send(op, req_id, &envelope(op, headers, value)).await;
        self.answer_to(op, req_id, cid.as_deref()).await
    }

    /// `request` with a fresh correlation-id and request id.
    pub async fn create(&self, op: &str, value: Value) -> Answer {
        self.request(op, &new_req_id(), value, headers(&new_cid()))
            .await
    }

    /// Waits for the answer to a request and checks its MQTT topic and the
    /// Ditto schemas. Without `cid`, the answer is found by request id.
    pub async fn answer_to(&self, op: &str, req_id: &str, cid: Option<&str>) -> Answer {
        let prefix = format!("command//{}/res/{req_id}/", stack().thing);
        let matches = |a: &Answer| match cid {
            Some(cid) => a.cid() == Some(cid) && a.topic.starts_with(&prefix),
            None => !req_id.is_empty() && a.topic.starts_with(&prefix),
        };
        let answer = self.wait_for(ANSWER_TIMEOUT, matches).await;
        let answer = answer.unwrap_or_else(|| {
            // answers for this request that lost or changed its correlation-id
            let stray: Vec<String> = self
                .received(|a| !req_id.is_empty() && a.topic.starts_with(&prefix))
                .iter()
                .map(ToString::to_string)
                .collect();
            panic!(
                "no answer on {prefix}… with correlation-id {cid:?} within \
                 {ANSWER_TIMEOUT:?}; other answers on that topic: {stray:?}; \
                 see .run/logs/cf-gateway.log and cf-factory.log"
            )
        });

        let expected = res_topic(req_id, op, answer.status().unwrap_or_default());
        assert_eq!(answer.topic, expected, "answer topic: {answer}");
        check_answer(
            &answer,
            if cid.is_some() {
                Cid::Readable
            } else {
                Cid::Unreadable
            },
        );
        answer
    }

    /// The first received answer matching `pred`, waiting up to `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&Answer) -> bool,
    ) -> Option<Answer> {
        self.wait_for_count(timeout, 1, pred)
            .await
            .into_iter()
            .next()
    }

    /// Answers matching `pred` once there are at least `count` of them or
    /// `timeout` passed.
    pub async fn wait_for_count(
        &self,
        timeout: Duration,
        count: usize,
        pred: impl Fn(&Answer) -> bool,
    ) -> Vec<Answer> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.inbox.changed.notified();
            let found = self.inbox.find(&pred);
            if found.len() >= count {
                return found;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.inbox.find(&pred);
            }
        }
    }

    /// Every answer received so far that matches `pred`.
    pub fn received(&self, pred: impl Fn(&Answer) -> bool) -> Vec<Answer> {
        self.inbox.find(&pred)
    }
}

async fn poll(mut eventloop: EventLoop, client: AsyncClient, inbox: Arc<Inbox>, filter: String) {
    loop {
        match eventloop.poll().await {
            // clean session: every (re)connect needs the subscription again
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if let Err(e) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                    inbox.fail(format!("subscribe: {e}"));
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
                    inbox.fail(format!("broker refused the subscription to {filter}"));
                } else {
                    inbox.subscribed.store(true, Ordering::SeqCst);
                }
                inbox.changed.notify_waiters();
            }
            Ok(Event::Incoming(Packet::Publish(p))) => inbox.push(Answer::new(p.topic, &p.payload)),
            Ok(_) => {}
            Err(e) => {
                inbox.fail(e.to_string());
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

// === containerd ===

/// Runs `ctr` against the stack's containerd and namespace.
pub async fn ctr(args: &[&str]) -> String {
    let st = stack();
    let mut cmd = tokio::process::Command::new("ctr");
    cmd.arg("-a")
        .arg(&st.ctrd_address)
        .arg("-n")
        .arg(&st.ctrd_namespace);
    cmd.args(args).kill_on_drop(true);

    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output()).await;
    let out = out.unwrap_or_else(|_| panic!("ctr {args:?} hung for 30 s"));
    let out = out.unwrap_or_else(|e| panic!("cannot run ctr {args:?}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ctr {args:?} failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// IDs of all containers in the stack's namespace.
pub async fn containers() -> BTreeSet<String> {
    let out = ctr(&["containers", "ls", "-q"]).await;
    out.split_whitespace().map(str::to_owned).collect()
}

/// Task status (`RUNNING`, `STOPPED`, …) per container ID.
pub async fn tasks() -> BTreeMap<String, String> {
    let out = ctr(&["tasks", "ls"]).await;
    let rows = out.lines().skip(1).filter_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        Some((cols.first()?.to_string(), cols.last()?.to_string()))
    });
    rows.collect()
}

/// Number of snapshots of the snapshotters the product may use.
pub async fn snapshot_count() -> usize {
    let mut count = 0;
    for snapshotter in ["overlayfs", "native"] {
        let out = ctr(&["snapshots", "--snapshotter", snapshotter, "ls"]).await;
        count += out.lines().skip(1).filter(|l| !l.trim().is_empty()).count();
    }
    count
}

/// The container's complete `json.log` lines, parsed (a line still being
/// written is left out).
pub fn log_lines(id: &str) -> Vec<Value> {
    let path = stack()
        .state_dir
        .join("containers")
        .join(id)
        .join("json.log");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.split_inclusive('\n').filter(|l| l.ends_with('\n'));
    let lines = complete.map(str::trim_end).filter(|l| !l.is_empty());
    lines
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{id} log {l}: {e}")))
        .collect()
}

/// Polls the container's log until its text contains `needle`; returns the
/// whole text.
pub async fn wait_for_log(id: &str, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text: String = log_lines(id)
            .iter()
            .filter_map(|l| l["log"].as_str())
            .collect();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "`{needle}` not in the log of {id} after {timeout:?}; log so far: {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// === host ports and HTTP ===

/// A host port in 18000-18999 that no test in this run took and that
/// 127.0.0.1 can bind right now.
pub fn free_port() -> u16 {
    static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut taken = TAKEN.lock().expect("port lock");
    let taken = taken.get_or_insert_with(HashSet::new);

    // a different start per run keeps clear of ports earlier runs left mapped
    let start = (Uuid::new_v4().as_u128() % 1000) as u16;
    for offset in 0..1000 {
        let port = 18000 + (start + offset) % 1000;
        if !taken.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.insert(port);
            return port;
        }
    }
    panic!("no free port in 127.0.0.1:18000-18999");
}

/// `GET <path>` over HTTP/1.0 to 127.0.0.1:`port`; the whole response.
pub async fn http_get(port: u16, path: &str) -> Result<String, String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
    };
    match tokio::time::timeout(Duration::from_secs(5), exchange).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("timed out after 5 s".to_owned()),
    }
}

// === services of the stack ===

/// PID of a running stack service, from `.run/pids/<name>.pid`.
pub fn service_pid(name: &str) -> u32 {
    let file = stack().root.join(".run/pids").join(format!("{name}.pid"));
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}; is {name} running? {NOT_UP}", file.display()));
    let pid = text
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{}: {text:?}", file.display()));
    assert!(
        alive(pid),
        "{name} (pid {pid} from {}) is not running",
        file.display()
    );
    pid
}

/// Alive and not a zombie (an orphan may wait a while to be reaped).
pub fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    matches!(state, Some(s) if s != "Z")
}

/// Sends `signal` (e.g. `KILL`, `TERM`) to `pid`, then waits up to 20 s
/// for it to end.
pub async fn kill_and_wait(pid: u32, signal: &str) {
    let status = tokio::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .await
        .unwrap_or_else(|e| panic!("kill -{signal} {pid}: {e}"));
    assert!(status.success(), "kill -{signal} {pid} failed");

    let deadline = Instant::now() + Duration::from_secs(20);
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "pid {pid} still alive 20 s after SIG{signal}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts stopped services again with the stack's own (idempotent) `up`,
/// which starts only what is not running, then returns the new PID of
/// `name`.
pub async fn restart_service(name: &str) -> u32 {
    let script = stack().root.join("scripts/stack.sh");
    let mut cmd = tokio::process::Command::new("bash");
    // the suite's own variables are no configuration keys of the services
    cmd.arg(&script)
        .arg("up")
        .env_remove("CF_DITTO_SCHEMAS")
        .kill_on_drop(true);

    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output()).await;
    let out = out.unwrap_or_else(|_| panic!("{} up hung for 180 s", script.display()));
    let out = out.unwrap_or_else(|e| panic!("{} up: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} up failed:\n{}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    service_pid(name)
}

// === test isolation ===

static SUITE: RwLock<()> = RwLock::const_new(());

/// Taken by tests that tolerate other tests running beside them.
pub async fn shared() -> RwLockReadGuard<'static, ()> {
    SUITE.read().await
}

/// Taken by tests that compare global containerd state or restart services:
/// nothing else runs meanwhile.
pub async fn exclusive() -> RwLockWriteGuard<'static, ()> {
    SUITE.write().await
}
