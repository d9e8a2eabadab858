//! `just bench`: container-factory beside plain `ctr`, in one run, on the
//! stack's own containerd and the same busybox image from its registry.
//!
//! What it measures (our time runs from the MQTT publish to the answer
//! received; a `ctr` time is the wall time of the `ctr` process):
//! 1. `create` with a cached image and `start: false`, p50 and p95, against
//!    `ctr container create`;
//! 2. `createWithConfig` with `start: true` and `sleep 600`, p50 and p95,
//!    against `ctr run -d`;
//! 3. a burst of concurrent creates (total time until every answer is in)
//!    against a sequential loop of `ctr container create`;
//! 4. idle (VmRSS before) and peak (VmHWM after) memory of cf-gateway and
//!    cf-factory.
//!
//! The two sides alternate request by request, so load from elsewhere on
//! the machine falls on both. Everything `ctr` creates lives in namespace
//! `cf-bench-ctr`, which is removed at the end; containers created through
//! the product stay until `just down` (there is no remove operation yet).
//!
//! Before every measured step the bench idles for `--settle-ms` (250): each
//! `ctr` call ends by deleting its lease, which makes containerd schedule a
//! garbage collection, and without the pause that collection would land on
//! the next measured request.
//!
//! Usage: `bench [--iterations N] [--burst N] [--settle-ms MS] [--timeout SECS]
//! [--out FILE]`

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeReasonCode};
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

type Res<T> = Result<T, String>;

const USAGE: &str = "usage: bench [--iterations N] [--burst N] [--settle-ms MS] \
                     [--timeout SECS] [--out FILE]";

/// The namespace that holds everything the `ctr` side creates.
const CTR_NS: &str = "cf-bench-ctr";

/// The feature that owns the create operations.
const FACTORY: &str = "ContainerFactory";

/// How often the memory sampler reads VmRSS, and its upper bound of
/// samples (one hour), so it stops by itself even if nobody stops it.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
const MAX_SAMPLES: u32 = 36_000;

/// The services whose memory is reported, as named in `.run/pids`.
const SERVICES: [&str; 2] = ["cf-gateway", "cf-factory"];

#[tokio::main]
async fn main() -> ExitCode {
    match bench().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Measures, removes the `ctr` side's namespace whatever happened, then
/// writes the report.
async fn bench() -> Res<()> {
    let args = Args::parse()?;
    let stack = Stack::load()?;
    let ctr = Ctr::new(&stack.ctrd_address, CTR_NS, args.timeout);

    let outcome = measure(&args, &stack, &ctr).await;
    let cleanup = remove_ctr_namespace(&ctr).await;
    let markdown = render(&args, &outcome?);

    print!("{markdown}");
    if let Some(out) = &args.out {
        std::fs::write(out, &markdown)
            .map_err(|e| format!("failed to write {}: {e}", out.display()))?;
        eprintln!("bench: wrote {}", out.display());
    }
    cleanup
}

// === arguments ===

struct Args {
    iterations: usize,
    burst: usize,
    settle: Duration,
    timeout: Duration,
    out: Option<PathBuf>,
}

impl Args {
    fn parse() -> Res<Self> {
        let mut args = Self {
            iterations: 30,
            burst: 50,
            settle: Duration::from_millis(250),
            timeout: Duration::from_secs(60),
            out: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--iterations" => args.iterations = positive(&flag, &value()?)?,
                "--burst" => args.burst = positive(&flag, &value()?)?,
                "--settle-ms" => args.settle = Duration::from_millis(number(&flag, &value()?)?),
                "--timeout" => args.timeout = Duration::from_secs(positive(&flag, &value()?)?),
                "--out" => args.out = Some(PathBuf::from(value()?)),
                "-h" | "--help" => return Err(USAGE.to_owned()),
                other => return Err(format!("unknown argument {other}; {USAGE}")),
            }
        }
        Ok(args)
    }
}

fn number<T: FromStr>(flag: &str, raw: &str) -> Res<T> {
    raw.parse()
        .map_err(|_| format!("{flag} {raw}: expected a number"))
}

fn positive<T: FromStr + PartialOrd + Default>(flag: &str, raw: &str) -> Res<T> {
    match number(flag, raw)? {
        n if n > T::default() => Ok(n),
        _ => Err(format!("{flag} {raw}: expected a positive number")),
    }
}

// === stack environment ===

/// What `.run/env` says about the running stack (a non-empty process
/// environment variable wins).
struct Stack {
    root: PathBuf,
    mqtt_host: String,
    mqtt_port: u16,
    thing: String,
    ctrd_address: String,
    ctrd_namespace: String,
    registry: String,
}

impl Stack {
    fn load() -> Res<Self> {
        let root = workspace_root();
        let env_file = root.join(".run/env");
        let text = std::fs::read_to_string(&env_file).map_err(|e| {
            format!(
                "cannot read {}: {e}; run `just up` first",
                env_file.display()
            )
        })?;
        let file = cf_e2e::parse_env(&text);
        let get = |key: &str| lookup(&file, key, &env_file);

        let port = get("CF_MQTT_PORT")?;
        let stack = Self {
            mqtt_host: get("CF_MQTT_HOST")?,
            mqtt_port: port.parse().map_err(|_| format!("CF_MQTT_PORT={port}"))?,
            thing: get("CF_THING_ID")?,
            ctrd_address: get("CONTAINERD_ADDRESS")?,
            ctrd_namespace: get("CONTAINERD_NAMESPACE")?,
            registry: get("CF_REGISTRY")?,
            root,
        };
        stack.check()?;
        Ok(stack)
    }

    /// The bench talks to loopback only, and needs a `namespace:name` thing.
    fn check(&self) -> Res<()> {
        if !is_loopback(&self.mqtt_host) {
            return Err(format!("CF_MQTT_HOST={} is not loopback", self.mqtt_host));
        }
        let registry_host = self.registry.rsplit_once(':').map_or("", |(h, _)| h);
        if !is_loopback(registry_host.trim_start_matches('[').trim_end_matches(']')) {
            return Err(format!("CF_REGISTRY={} is not loopback", self.registry));
        }
        if !self.thing.contains(':') {
            return Err(format!("CF_THING_ID={} has no ':'", self.thing));
        }
        Ok(())
    }

    /// The thing as Ditto writes it: `namespace/name`.
    fn ditto_thing(&self) -> String {
        self.thing.replacen(':', "/", 1)
    }

    fn image(&self) -> String {
        format!("{}/library/busybox:latest", self.registry)
    }
}

/// `$CF_ROOT`, else two levels above this crate.
fn workspace_root() -> PathBuf {
    std::env::var_os("CF_ROOT")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

fn lookup(file: &HashMap<String, String>, key: &str, env_file: &Path) -> Res<String> {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| file.get(key).cloned())
        .ok_or_else(|| {
            format!(
                "{} does not set {key}; re-run `just up`",
                env_file.display()
            )
        })
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

// === MQTT ===

/// One answer as it arrived, stamped on receipt.
struct Reply {
    topic: String,
    json: Value,
    at: Instant,
}

/// Requests waiting for their answer, by correlation-id.
#[derive(Default)]
struct Waiters {
    pending: Mutex<HashMap<String, oneshot::Sender<Reply>>>,
    /// Answers for other clients (e.g. a test suite) seen meanwhile.
    foreign: AtomicUsize,
    last_error: Mutex<Option<String>>,
}

impl Waiters {
    fn expect(&self, cid: &str) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.insert(cid.to_owned(), tx);
        rx
    }

    fn deliver(&self, topic: String, payload: &[u8]) {
        let at = Instant::now();
        let json: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
        let cid = json
            .pointer("/headers/correlation-id")
            .and_then(Value::as_str);
        let waiter = cid.and_then(|cid| {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            pending.remove(cid)
        });

        match waiter {
            // a waiter that gave up has dropped its receiver; nothing to do
            Some(tx) => drop(tx.send(Reply { topic, json, at })),
            None => drop(self.foreign.fetch_add(1, Ordering::Relaxed)),
        }
    }

    fn fail(&self, error: String) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error);
    }

    fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The bench's MQTT connection, subscribed to every answer of the thing.
struct Mqtt {
    client: AsyncClient,
    waiters: Arc<Waiters>,
    poller: JoinHandle<()>,
    thing: String,
    ditto_thing: String,
    timeout: Duration,
    /// Every container the product answered with.
    created: Mutex<Vec<Created>>,
}

/// A published request whose answer is still to come.
struct Sent {
    req_id: String,
    start: bool,
    at: Instant,
    answer: oneshot::Receiver<Reply>,
}

/// A container the product reported as created.
struct Created {
    id: String,
    start: bool,
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

impl Mqtt {
    /// Connects with a unique client id and returns once the answer
    /// subscription is acknowledged.
    async fn connect(stack: &Stack, timeout: Duration) -> Res<Self> {
        let id = format!("cf-bench-{}", &Uuid::new_v4().simple().to_string()[..12]);
        let mut opts = MqttOptions::new(id, stack.mqtt_host.clone(), stack.mqtt_port);
        opts.set_clean_session(true)
            .set_keep_alive(Duration::from_secs(30));

        let (client, eventloop) = AsyncClient::new(opts, 1024);
        let waiters = Arc::new(Waiters::default());
        let (subscribed, mut ready) = watch::channel(false);
        let filter = format!("command//{}/res/#", stack.thing);
        let poller = tokio::spawn(poll(
            eventloop,
            client.clone(),
            waiters.clone(),
            filter,
            subscribed,
        ));

        let acked = tokio::time::timeout(Duration::from_secs(15), ready.wait_for(|s| *s)).await;
        if !matches!(acked, Ok(Ok(_))) {
            poller.abort();
            let (host, port) = (&stack.mqtt_host, stack.mqtt_port);
            let why = waiters
                .last_error()
                .unwrap_or_else(|| "no SUBACK".to_owned());
            return Err(format!(
                "no MQTT subscription at {host}:{port} within 15 s: {why}"
            ));
        }
        Ok(Self {
            client,
            waiters,
            poller,
            thing: stack.thing.clone(),
            ditto_thing: stack.ditto_thing(),
            timeout,
            created: Mutex::default(),
        })
    }

    /// Publishes `value` to `op` with a fresh correlation-id and request id;
    /// the clock starts just before the publish.
    async fn send(&self, op: &str, value: Value) -> Res<Sent> {
        let cid = Uuid::new_v4().to_string();
        let req_id = format!("bench{}", Uuid::new_v4().simple());
        let topic = format!("command//{}/req/{req_id}/{op}", self.thing);
        let start = value.get("start") == Some(&Value::Bool(true));
        let payload = self.envelope(op, &cid, value).to_string();

        let answer = self.waiters.expect(&cid);
        let at = Instant::now();
        self.client
            .publish(topic.as_str(), QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|e| format!("failed to publish to {topic}: {e}"))?;
        Ok(Sent {
            req_id,
            start,
            at,
            answer,
        })
    }

    fn envelope(&self, op: &str, cid: &str, value: Value) -> Value {
        json!({
            "topic": format!("{}/things/live/messages/{op}", self.ditto_thing),
            "headers": {
                "response-required": true,
                "content-type": "application/json",
                "correlation-id": cid,
            },
            "path": format!("/features/{FACTORY}/inbox/messages/{op}"),
            "value": value,
        })
    }

    /// Waits for the answer to `sent`; anything but a 200 with a container
    /// id on `res/<reqId>/200` is an error. Returns when it was published
    /// and when the answer arrived.
    async fn wait(&self, sent: Sent) -> Res<(Instant, Instant)> {
        let waited = tokio::time::timeout(self.timeout, sent.answer).await;
        let Ok(Ok(reply)) = waited else {
            let why = self.waiters.last_error().unwrap_or_default();
            return Err(format!(
                "no answer to request {} within {:?} {why}; \
                 see .run/logs/cf-gateway.log and cf-factory.log",
                sent.req_id, self.timeout
            ));
        };

        let expected = format!("command//{}/res/{}/200", self.thing, sent.req_id);
        let status = reply.json.get("status").and_then(Value::as_i64);
        let id = reply.json.get("value").and_then(Value::as_str);
        let (true, Some(200), Some(id)) = (reply.topic == expected, status, id) else {
            return Err(format!(
                "request {} failed: topic {} answer {}",
                sent.req_id, reply.topic, reply.json
            ));
        };

        let mut created = self.created.lock().unwrap_or_else(PoisonError::into_inner);
        created.push(Created {
            id: id.to_owned(),
            start: sent.start,
        });
        Ok((sent.at, reply.at))
    }

    /// One request and its round-trip time.
    async fn request(&self, op: &str, value: Value) -> Res<Duration> {
        let sent = self.send(op, value).await?;
        let (published, answered) = self.wait(sent).await?;
        Ok(answered.duration_since(published))
    }

    fn created(&self) -> Vec<Created> {
        let mut created = self.created.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut *created)
    }

    fn foreign_answers(&self) -> usize {
        self.waiters.foreign.load(Ordering::Relaxed)
    }

    async fn close(self) {
        if let Err(e) = self.client.disconnect().await {
            eprintln!("bench: warning: MQTT disconnect failed: {e}");
        }
    }
}

/// Drives the connection: subscribes on every (clean-session) connect and
/// hands answers to their waiters. Aborted when the `Mqtt` is dropped.
async fn poll(
    mut eventloop: EventLoop,
    client: AsyncClient,
    waiters: Arc<Waiters>,
    filter: String,
    subscribed: watch::Sender<bool>,
) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if let Err(e) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                    waiters.fail(format!("subscribe: {e}"));
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
                    waiters.fail(format!("broker refused the subscription to {filter}"));
                } else {
                    subscribed.send_replace(true);
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => waiters.deliver(p.topic, &p.payload),
            Ok(_) => {}
            Err(e) => {
                waiters.fail(format!("MQTT connection: {e}"));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

// === ctr ===

/// `ctr` against the stack's containerd, in one namespace.
struct Ctr {
    address: String,
    namespace: String,
    timeout: Duration,
}

impl Ctr {
    fn new(address: &str, namespace: &str, timeout: Duration) -> Self {
        Self {
            address: address.to_owned(),
            namespace: namespace.to_owned(),
            timeout,
        }
    }

    /// Runs `ctr <args>` and returns its wall time and stdout; a non-zero
    /// exit is an error.
    async fn run(&self, args: &[&str]) -> Res<(Duration, String)> {
        let mut cmd = tokio::process::Command::new("ctr");
        cmd.args(["-a", &self.address, "-n", &self.namespace])
            .args(args)
            .kill_on_drop(true);

        let start = Instant::now();
        let out = tokio::time::timeout(self.timeout, cmd.output()).await;
        let elapsed = start.elapsed();
        let out = out.map_err(|_| format!("ctr {args:?} hung for {:?}", self.timeout))?;
        let out = out.map_err(|e| format!("cannot run ctr {args:?}: {e}"))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(format!("ctr {args:?} failed: {}", stderr.trim()));
        }
        Ok((elapsed, String::from_utf8_lossy(&out.stdout).into_owned()))
    }

    async fn timed(&self, args: &[&str]) -> Res<Duration> {
        Ok(self.run(args).await?.0)
    }

    /// The first column of a listing, header left out.
    async fn ids(&self, args: &[&str]) -> Res<Vec<String>> {
        let out = self.run(args).await?.1;
        let rows = out.lines().skip(1);
        Ok(rows
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect())
    }
}

/// Pulls the image into `cf-bench-ctr` (after clearing what an aborted
/// run may have left there).
async fn prepare_ctr(ctr: &Ctr, image: &str) -> Res<()> {
    remove_ctr_namespace(ctr).await?;
    ctr.run(&["images", "pull", "--plain-http", image]).await?;
    Ok(())
}

/// Removes every task, container, image, snapshot, content blob and lease
/// of `cf-bench-ctr`, then the namespace. Failures of single steps are
/// warnings; only a namespace that is still there is an error.
async fn remove_ctr_namespace(ctr: &Ctr) -> Res<()> {
    let namespaces = ctr.ids(&["namespaces", "ls"]).await?;
    if !namespaces.iter().any(|n| n == CTR_NS) {
        return Ok(());
    }
    remove_tasks(ctr).await;
    remove_all(ctr, &["containers", "ls"], &["containers", "rm"]).await;
    remove_all(ctr, &["images", "ls"], &["images", "rm", "--sync"]).await;

    // children before parents: each pass removes the current leaves
    for _ in 0..8 {
        if remove_all(ctr, &["snapshots", "ls"], &["snapshots", "rm"]).await {
            break;
        }
    }
    remove_all(ctr, &["content", "ls"], &["content", "rm"]).await;
    remove_all(ctr, &["leases", "ls"], &["leases", "rm"]).await;

    ctr.run(&["namespaces", "rm", CTR_NS])
        .await
        .map(drop)
        .map_err(|e| format!("namespace {CTR_NS} is left behind: {e}"))
}

async fn remove_tasks(ctr: &Ctr) {
    let tasks = ctr.ids(&["tasks", "ls"]).await.unwrap_or_else(|e| {
        eprintln!("bench: warning: {e}");
        Vec::new()
    });
    for id in &tasks {
        // a task that already exited refuses the signal; `rm -f` still works
        if let Err(e) = ctr.run(&["tasks", "kill", "-s", "SIGKILL", id]).await {
            eprintln!("bench: note: {e}");
        }
        warn(ctr.run(&["tasks", "rm", "-f", id]).await);
    }
}

/// Removes everything `list` shows with `rm`; true when all went.
async fn remove_all(ctr: &Ctr, list: &[&str], rm: &[&str]) -> bool {
    let ids = match ctr.ids(list).await {
        Ok(ids) => ids,
        Err(e) => return warn::<()>(Err(e)),
    };
    let mut all = true;
    for id in &ids {
        let args: Vec<&str> = rm.iter().copied().chain([id.as_str()]).collect();
        all &= warn(ctr.run(&args).await);
    }
    all
}

/// Best-effort cleanup: reports a failure as a warning and goes on.
fn warn<T>(result: Res<T>) -> bool {
    if let Err(e) = &result {
        eprintln!("bench: warning: {e}");
    }
    result.is_ok()
}

// === the product's containers ===

/// Every container the product answered with must be in containerd, with
/// a running task when it was started, and no id may repeat. Returns the
/// containers whose root-filesystem snapshot is gone (a product defect the
/// report shows rather than hides).
async fn check_created(product: &Ctr, created: &[Created]) -> Res<Vec<String>> {
    let present: HashSet<String> = product
        .ids(&["containers", "ls"])
        .await?
        .into_iter()
        .collect();
    let running = product.run(&["tasks", "ls"]).await?.1;
    let running: HashSet<&str> = running
        .lines()
        .filter(|l| l.ends_with("RUNNING"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();

    let distinct: HashSet<&str> = created.iter().map(|c| c.id.as_str()).collect();
    if distinct.len() != created.len() {
        return Err("the product answered with the same container id twice".to_owned());
    }
    let missing = created.iter().filter(|c| !present.contains(&c.id));
    let missing: Vec<&str> = missing.map(|c| c.id.as_str()).collect();
    let idle = created
        .iter()
        .filter(|c| c.start && !running.contains(c.id.as_str()));
    let idle: Vec<&str> = idle.map(|c| c.id.as_str()).collect();
    if !missing.is_empty() || !idle.is_empty() {
        return Err(format!(
            "answered but not in containerd: {missing:?}; \
             started but without a running task: {idle:?}"
        ));
    }

    let snapshots: HashSet<String> = product
        .ids(&["snapshots", "ls"])
        .await?
        .into_iter()
        .collect();
    let lost = created.iter().filter(|c| !snapshots.contains(&c.id));
    Ok(lost.map(|c| c.id.clone()).collect())
}

// === memory ===

/// A service of the stack, by its pid file.
struct Service {
    name: &'static str,
    pid: u32,
}

/// Memory figures of one service, in kB.
struct MemRow {
    name: &'static str,
    pid: u32,
    idle_rss: u64,
    hwm_before: u64,
    sampled_peak: u64,
    hwm_after: u64,
    same_pid: bool,
}

fn service(root: &Path, name: &'static str) -> Res<Service> {
    let file = root.join(".run/pids").join(format!("{name}.pid"));
    let text = std::fs::read_to_string(&file)
        .map_err(|e| format!("{}: {e}; is the stack up?", file.display()))?;
    let pid: u32 = text
        .trim()
        .parse()
        .map_err(|_| format!("{}: not a pid: {text:?}", file.display()))?;

    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() != name {
        return Err(format!("{name} (pid {pid}) is not running"));
    }
    Ok(Service { name, pid })
}

/// `(VmRSS, VmHWM)` in kB from `/proc/<pid>/status`.
fn memory(pid: u32) -> Res<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let field = |key: &str| {
        let line = text.lines().find_map(|l| l.strip_prefix(key))?;
        line.split_whitespace().next()?.parse::<u64>().ok()
    };
    match (field("VmRSS:"), field("VmHWM:")) {
        (Some(rss), Some(hwm)) => Ok((rss, hwm)),
        _ => Err(format!("{path} has no VmRSS/VmHWM")),
    }
}

/// Samples VmRSS of `pids` until told to stop (or after `MAX_SAMPLES`);
/// returns the highest value seen per pid.
fn spawn_sampler(pids: Vec<u32>, mut stop: watch::Receiver<bool>) -> JoinHandle<Vec<u64>> {
    tokio::spawn(async move {
        let mut peaks = vec![0; pids.len()];
        for _ in 0..MAX_SAMPLES {
            for (peak, pid) in peaks.iter_mut().zip(&pids) {
                let rss = memory(*pid).map_or(0, |(rss, _)| rss);
                *peak = (*peak).max(rss);
            }
            tokio::select! {
                _ = stop.changed() => break,
                () = tokio::time::sleep(SAMPLE_EVERY) => {}
            }
        }
        peaks
    })
}

// === measurements ===

/// Our samples and `ctr`'s, taken alternately.
#[derive(Default)]
struct Pair {
    ours: Vec<Duration>,
    ctr: Vec<Duration>,
}

struct Burst {
    ours_total: Duration,
    ours_each: Vec<Duration>,
    ctr_total: Duration,
}

/// The first, uncounted request of each side.
struct Warmup {
    ours: Duration,
    ctr: Duration,
}

struct Results {
    machine: Machine,
    warmup: Warmup,
    create: Pair,
    start: Pair,
    burst: Burst,
    memory: Vec<MemRow>,
    foreign: usize,
    ours_created: usize,
    ours_started: usize,
    /// Answered containers without their root-filesystem snapshot.
    lost_snapshots: Vec<String>,
}

async fn measure(args: &Args, stack: &Stack, ctr: &Ctr) -> Res<Results> {
    let services: Vec<Service> = SERVICES
        .iter()
        .map(|name| service(&stack.root, name))
        .collect::<Res<_>>()?;
    let before: Vec<(u64, u64)> = services.iter().map(|s| memory(s.pid)).collect::<Res<_>>()?;
    let machine = Machine::probe(&stack.ctrd_address).await;

    let image = stack.image();
    prepare_ctr(ctr, &image).await?;
    let mqtt = Mqtt::connect(stack, args.timeout).await?;
    let (stop, stopped) = watch::channel(false);
    let sampler = spawn_sampler(services.iter().map(|s| s.pid).collect(), stopped);

    let sides = Sides {
        mqtt: &mqtt,
        ctr,
        image: &image,
        settle: args.settle,
    };
    let runs = run_all(args, &sides).await;
    stop.send_replace(true);
    let peaks = sampler.await.map_err(|e| format!("memory sampler: {e}"))?;
    let (warmup, create, start, burst) = runs?;

    let memory = memory_rows(&stack.root, &services, &before, &peaks)?;
    let (created, foreign) = (mqtt.created(), mqtt.foreign_answers());
    mqtt.close().await;
    let product = Ctr::new(&stack.ctrd_address, &stack.ctrd_namespace, args.timeout);
    let lost_snapshots = check_created(&product, &created).await?;

    Ok(Results {
        machine: machine.finish(),
        warmup,
        create,
        start,
        burst,
        memory,
        foreign,
        ours_created: created.len(),
        ours_started: created.iter().filter(|c| c.start).count(),
        lost_snapshots,
    })
}

/// What every measurement needs: both sides, the image and the pause
/// before each measured step.
struct Sides<'a> {
    mqtt: &'a Mqtt,
    ctr: &'a Ctr,
    image: &'a str,
    settle: Duration,
}

impl Sides<'_> {
    /// Lets containerd finish what the previous step set off.
    async fn settle(&self) {
        tokio::time::sleep(self.settle).await;
    }

    async fn ours(&self, op: &str, value: Value) -> Res<Duration> {
        self.settle().await;
        self.mqtt.request(op, value).await
    }

    async fn ctr(&self, args: &[&str]) -> Res<Duration> {
        self.settle().await;
        self.ctr.timed(args).await
    }

    fn create_value(&self) -> Value {
        json!({"imageRef": self.image, "start": false})
    }
}

async fn run_all(args: &Args, sides: &Sides<'_>) -> Res<(Warmup, Pair, Pair, Burst)> {
    let n = args.iterations;
    eprintln!("bench: warm-up");
    let warmup = phase("warm-up", warm_up(sides).await)?;
    eprintln!("bench: create, {n} iterations each");
    let create = phase("create", bench_create(n, sides).await)?;
    eprintln!("bench: create and start, {n} iterations each");
    let start = phase("create + start", bench_start(n, sides).await)?;
    eprintln!("bench: burst of {}", args.burst);
    let burst = phase("burst", bench_burst(args.burst, sides).await)?;
    Ok((warmup, create, start, burst))
}

/// One uncounted request per side: the product caches the image, `ctr`
/// has pulled it already.
async fn warm_up(sides: &Sides<'_>) -> Res<Warmup> {
    let image = sides.image;
    Ok(Warmup {
        ours: sides.ours("create", sides.create_value()).await?,
        ctr: sides
            .ctr(&["containers", "create", image, "warmup"])
            .await?,
    })
}

/// Names the phase in which the bench stopped.
fn phase<T>(name: &str, result: Res<T>) -> Res<T> {
    result.map_err(|e| format!("aborted in phase `{name}`: {e}"))
}

fn iteration<T>(i: usize, result: Res<T>) -> Res<T> {
    result.map_err(|e| format!("iteration {i}: {e}"))
}

async fn bench_create(n: usize, sides: &Sides<'_>) -> Res<Pair> {
    let mut pair = Pair::default();
    for i in 0..n {
        let id = format!("create-{i}");
        let ours = sides.ours("create", sides.create_value()).await;
        pair.ours.push(iteration(i, ours)?);
        let args = ["containers", "create", sides.image, &id];
        pair.ctr.push(sides.ctr(&args).await?);
    }
    Ok(pair)
}

async fn bench_start(n: usize, sides: &Sides<'_>) -> Res<Pair> {
    let value = json!({
        "imageRef": sides.image,
        "start": true,
        "config": {"cmd": ["sleep", "600"]},
    });
    let mut pair = Pair::default();
    for i in 0..n {
        let id = format!("run-{i}");
        let ours = sides.ours("createWithConfig", value.clone()).await;
        pair.ours.push(iteration(i, ours)?);
        let args = ["run", "-d", sides.image, &id, "sleep", "600"];
        pair.ctr.push(sides.ctr(&args).await?);
    }
    Ok(pair)
}

/// All our requests are published at once, then every answer awaited (each
/// wait bounded); `ctr` creates one after the other.
async fn bench_burst(n: usize, sides: &Sides<'_>) -> Res<Burst> {
    sides.settle().await;
    let start = Instant::now();
    let mut sent = Vec::with_capacity(n);
    for _ in 0..n {
        sent.push(sides.mqtt.send("create", sides.create_value()).await?);
    }
    // the answers are collected one by one, but each was stamped on arrival
    let (mut ours_each, mut last) = (Vec::with_capacity(n), start);
    for s in sent {
        let (published, answered) = sides.mqtt.wait(s).await?;
        ours_each.push(answered.duration_since(published));
        last = last.max(answered);
    }
    let ours_total = last.duration_since(start);

    sides.settle().await;
    let start = Instant::now();
    for i in 0..n {
        let id = format!("burst-{i}");
        sides
            .ctr
            .timed(&["containers", "create", sides.image, &id])
            .await?;
    }
    Ok(Burst {
        ours_total,
        ours_each,
        ctr_total: start.elapsed(),
    })
}

/// Joins the figures from before, during and after the run; a service that
/// ended meanwhile has no VmHWM to report, which fails the bench.
fn memory_rows(
    root: &Path,
    services: &[Service],
    before: &[(u64, u64)],
    peaks: &[u64],
) -> Res<Vec<MemRow>> {
    let rows = services.iter().zip(before).zip(peaks);
    rows.map(|((s, (idle_rss, hwm_before)), peak)| {
        let (_, hwm_after) = memory(s.pid)
            .map_err(|e| format!("{} (pid {}) ended during the run: {e}", s.name, s.pid))?;
        let same_pid = service(root, s.name).is_ok_and(|now| now.pid == s.pid);
        Ok(MemRow {
            name: s.name,
            pid: s.pid,
            idle_rss: *idle_rss,
            hwm_before: *hwm_before,
            sampled_peak: *peak,
            hwm_after,
            same_pid,
        })
    })
    .collect()
}

// === machine ===

struct Machine {
    date: String,
    nproc: String,
    cpu: String,
    mem_total: String,
    kernel: String,
    containerd: String,
    load_before: String,
    load_after: String,
}

impl Machine {
    async fn probe(ctrd_address: &str) -> Self {
        let server = command(&["ctr", "-a", ctrd_address, "version"]).await;
        Self {
            date: command(&["date", "-u", "+%Y-%m-%d %H:%M UTC"]).await,
            nproc: command(&["nproc"]).await,
            cpu: proc_field("/proc/cpuinfo", "model name"),
            mem_total: with_gib(proc_field("/proc/meminfo", "MemTotal")),
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            containerd: server_version(&server),
            load_before: load_average(),
            load_after: String::new(),
        }
    }

    fn finish(self) -> Self {
        Self {
            load_after: load_average(),
            ..self
        }
    }
}

/// Trimmed stdout of a command, or `unknown` (the report is still useful).
async fn command(argv: &[&str]) -> String {
    let mut cmd = tokio::process::Command::new(argv[0]);
    cmd.args(&argv[1..]).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(10), cmd.output()).await;
    match out {
        Ok(Ok(out)) if out.status.success() => {
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        }
        _ => "unknown".to_owned(),
    }
}

/// The first `key: value` line of a `/proc` file.
fn proc_field(path: &str, key: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let value = text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_owned())
    });
    value.unwrap_or_else(|| "unknown".to_owned())
}

/// `24683792 kB` becomes `24683792 kB (23.5 GiB)`.
fn with_gib(kb: String) -> String {
    let n = kb.strip_suffix(" kB").and_then(|n| n.parse::<u64>().ok());
    match n {
        Some(n) => format!("{kb} ({:.1} GiB)", n as f64 / (1024.0 * 1024.0)),
        None => kb,
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned())
}

/// The three load averages of `/proc/loadavg`.
fn load_average() -> String {
    let text = read_trimmed("/proc/loadavg");
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `Version:` of the `Server:` block of `ctr version`.
fn server_version(out: &str) -> String {
    let server = out.split_once("Server:").map_or("", |(_, s)| s);
    let version = server
        .lines()
        .find_map(|l| l.trim().strip_prefix("Version:"));
    version.map_or_else(|| "unknown".to_owned(), |v| v.trim().to_owned())
}

// === report ===

/// Nearest-rank percentile of `samples`.
fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len().max(1)) - 1)
        .copied()
        .unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn ratio(ours: Duration, ctr: Duration) -> String {
    if ctr.is_zero() {
        return "n/a".to_owned();
    }
    format!("{:.1}x", ours.as_secs_f64() / ctr.as_secs_f64())
}

fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

fn row(out: &mut String, what: impl Display, ours: Duration, ctr: Duration) {
    let cells = [ms(ours), ms(ctr), ratio(ours, ctr)];
    out.push_str(&format!("| {what} | {} |\n", cells.join(" | ")));
}

fn render(args: &Args, r: &Results) -> String {
    let mut out = String::from("# Benchmarks\n\n");
    out.push_str(
        "Generated by `just bench` (`crates/e2e/examples/bench.rs`); \
         re-run it to refresh this file.\n\n",
    );
    render_machine(&mut out, args, &r.machine);
    render_times(&mut out, args, r);
    render_memory(&mut out, &r.memory);
    render_checks(&mut out, r);
    render_notes(&mut out, args, r);
    out
}

/// What was checked in containerd after the run.
fn render_checks(out: &mut String, r: &Results) {
    out.push_str(&format!(
        "## Checked after the run

\
         All {} containers the product answered for exist in containerd under \
         distinct ids, and the {} started ones have a running task. ",
        r.ours_created, r.ours_started
    ));
    if r.lost_snapshots.is_empty() {
        out.push_str("Each still has its root-filesystem snapshot.\n\n");
        return;
    }
    out.push_str(&format!(
        "**{} of them lost their root-filesystem snapshot** (answered 200 \
         but cannot start): {}.\n\n",
        r.lost_snapshots.len(),
        r.lost_snapshots.join(", ")
    ));
}

fn render_machine(out: &mut String, args: &Args, m: &Machine) {
    out.push_str("## Machine and run\n\n| | |\n|---|---|\n");
    let rows = [
        ("date", m.date.clone()),
        ("`nproc`", m.nproc.clone()),
        ("CPU", m.cpu.clone()),
        ("memory total", m.mem_total.clone()),
        ("kernel", m.kernel.clone()),
        ("containerd (server)", m.containerd.clone()),
        (
            "iterations",
            format!("{} per side (+1 warm-up each)", args.iterations),
        ),
        ("burst", format!("{} creates", args.burst)),
        (
            "load average before / after",
            format!("{} / {}", m.load_before, m.load_after),
        ),
    ];
    for (k, v) in rows {
        out.push_str(&format!("| {k} | {v} |\n"));
    }
    out.push('\n');
}

fn render_times(out: &mut String, args: &Args, r: &Results) {
    out.push_str("## Times (lower is better)\n\n");
    out.push_str("| measurement | ours | ctr | ours/ctr |\n|---|---:|---:|---:|\n");
    let pairs = [
        ("create, cached image", &r.create),
        ("create + start", &r.start),
    ];
    for (label, pair) in pairs {
        for p in [50.0, 95.0] {
            let (ours, ctr) = (percentile(&pair.ours, p), percentile(&pair.ctr, p));
            row(out, format!("{label}, p{p}"), ours, ctr);
        }
    }
    let n = args.burst;
    let what = format!("{n} creates: ours concurrent, ctr sequential, total");
    row(out, what, r.burst.ours_total, r.burst.ctr_total);

    let each = &r.burst.ours_each;
    out.push_str(&format!(
        "\nWithin the burst, one answer took {} (p50) and {} (p95) from its publish. \
         First, uncounted requests: ours {}, ctr {}.\n\n",
        ms(percentile(each, 50.0)),
        ms(percentile(each, 95.0)),
        ms(r.warmup.ours),
        ms(r.warmup.ctr),
    ));
}

fn render_memory(out: &mut String, rows: &[MemRow]) {
    out.push_str("## Memory\n\n");
    out.push_str(
        "| service | idle (VmRSS before) | peak (VmHWM after) | \
         VmHWM before | highest VmRSS sampled during the run |\n\
         |---|---:|---:|---:|---:|\n",
    );
    for m in rows {
        let restarted = if m.same_pid {
            ""
        } else {
            " (restarted during the run!)"
        };
        out.push_str(&format!(
            "| {} (pid {}){restarted} | {} | {} | {} | {} |\n",
            m.name,
            m.pid,
            mib(m.idle_rss),
            mib(m.hwm_after),
            mib(m.hwm_before),
            mib(m.sampled_peak),
        ));
    }
    out.push('\n');
}

fn render_notes(out: &mut String, args: &Args, r: &Results) {
    out.push_str(&format!(
        "## How to read this\n\n\
         - *Ours* is the time from the MQTT publish of a Ditto `create` (or \
         `createWithConfig`) to the arrival of its 200 answer: mosquitto, \
         cf-gateway, NATS JetStream, cf-factory with its ledger, containerd and \
         the way back. *ctr* is the wall time of one local `ctr` process \
         (`-a <stack socket> -n {CTR_NS}`), its process start-up included, with \
         no broker, queue or ledger in the path.\n\
         - Both sides use the same containerd and the same image \
         (`<CF_REGISTRY>/library/busybox:latest`, already unpacked: ours \
         warmed by one uncounted request, ctr by `ctr images pull \
         --plain-http` and one uncounted create). The sides alternate \
         request by request, with a {settle} ms pause before each measured \
         step: a `ctr` call ends by deleting its lease, which sets off a \
         containerd garbage collection that would otherwise slow down \
         whatever request comes next.\n\
         - *create + start*: ours is `createWithConfig` with `start: true` and \
         `config.cmd` `[\"sleep\", \"600\"]`, which also wires the container \
         into the CNI bridge and starts its log forwarder; ctr is `ctr run -d \
         <image> <id> sleep 600` (own empty network namespace, no CNI; its stdio \
         goes to FIFOs nobody reads).\n\
         - *Burst*: {n} requests published at once, until the last answer \
         arrived, against {n} `ctr containers create` in a row. Only the ratio \
         says something about concurrency; the absolute times depend on the machine.\n\
         - Memory: VmRSS and VmHWM from `/proc/<pid>/status` of the pids in \
         `.run/pids`. VmHWM is the peak over the process's whole life, so it \
         includes anything the service did before this run (e.g. a test suite); \
         the sampled column (every {sample} ms) covers this run only.\n\
         - {foreign} answers for other MQTT clients arrived during the run: \
         when that is not 0, something else (e.g. `just test`) loaded the \
         stack at the same time and the times are noisier.\n\
         - Ratios are the point, not absolute times; no test asserts a time.\n\n\
         ## Left behind\n\n\
         Everything the ctr side created (namespace `{CTR_NS}`) is removed at \
         the end. The {created} containers created through the product stay \
         (the product has no remove operation yet; {started} of them run \
         `sleep 600`): `just down` removes them.\n",
        n = args.burst,
        settle = args.settle.as_millis(),
        sample = SAMPLE_EVERY.as_millis(),
        foreign = r.foreign,
        created = r.ours_created,
        started = r.ours_started,
    ));
}
