//! [`ContainerdRuntime`]: the `ContainerRuntime` port on containerd 1.6
//! (gRPC), runc v2 shims, the CNI bridge network and the factory's own
//! per-container files under `<state_dir>/containers/<id>/`.
//!
//! The container's state is kept where it cannot drift from the truth: in
//! containerd's container labels (`container-factory/*`).

use std::collections::HashMap;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cf_core::config::{HostTarget, PortMapping, Protocol};
use cf_core::ports::{ContainerRuntime, RuntimeError};
use cf_core::request::CreateRequest;
use cf_core::{ContainerId, ContainerName};
use containerd_client::events::TaskExit;
use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::{
    MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, GetContainerRequest, KillRequest, ListContainersRequest, ListTasksRequest,
    StartRequest, SubscribeRequest, UpdateContainerRequest,
};
use futures::StreamExt;
use prost::Message;
use tokio::sync::mpsc;
use tracing::{info, instrument, warn};

use super::cni::{CniNetwork, PortMap};
use super::ctrd::{exec, grpc_failed, is_not_found, removed, Ctrd};
use super::image::{ImageStore, PulledImage};
use super::spec::{self, SpecInput};

const LABEL_NAME: &str = "container-factory/name";
const LABEL_IMAGE: &str = "container-factory/image";
const LABEL_PORTS: &str = "container-factory/ports";
const LABEL_STATE: &str = "container-factory/state";
const LABEL_EXIT_CODE: &str = "container-factory/exit-code";
const LABEL_ERROR: &str = "container-factory/error";
const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// containerd's task status `STOPPED`.
const TASK_STOPPED: i32 = 3;
const SIGKILL: u32 = 9;
/// How long a killed task may take to be reaped.
const TASK_EXIT_WAIT: Duration = Duration::from_secs(10);
/// How often stopped tasks are looked for besides following exit events.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// Containers removed at once by [`ContainerdRuntime::remove_all`].
const TEARDOWN_CONCURRENCY: usize = 16;

/// Settings of [`ContainerdRuntime`].
pub struct RuntimeSettings {
    /// Snapshotter of container roots.
    pub snapshotter: String,
    /// Shim runtime name.
    pub runtime: String,
    /// Root of per-container files.
    pub state_dir: PathBuf,
    /// The `binary://` logger that writes json-file logs.
    pub logger: PathBuf,
}

/// Creates, starts and removes containers in containerd.
pub struct ContainerdRuntime {
    ctrd: Ctrd,
    images: ImageStore,
    network: CniNetwork,
    settings: RuntimeSettings,
    /// Serialises the check-then-claim of names and host ports.
    admission: tokio::sync::Mutex<()>,
}

impl ContainerdRuntime {
    /// A runtime on `ctrd` pulling with `images` and networking with `network`.
    pub fn new(
        ctrd: Ctrd,
        images: ImageStore,
        network: CniNetwork,
        settings: RuntimeSettings,
    ) -> Self {
        Self {
            ctrd,
            images,
            network,
            settings,
            admission: tokio::sync::Mutex::new(()),
        }
    }

    fn files_dir(&self, id: ContainerId) -> PathBuf {
        self.settings
            .state_dir
            .join("containers")
            .join(id.to_string())
    }

    fn netns_name(id: ContainerId) -> String {
        format!("cf-{id}")
    }

    async fn list_containers(&self, filter: String) -> Result<Vec<Container>, RuntimeError> {
        let filters = if filter.is_empty() {
            vec![]
        } else {
            vec![filter]
        };
        let request = self.ctrd.request(ListContainersRequest { filters }, None);
        let response = self.ctrd.containers().list(request).await;
        Ok(response
            .map_err(grpc_failed("failed to list containers"))?
            .into_inner()
            .containers)
    }

    async fn get_container(&self, id: ContainerId) -> Result<Option<Container>, RuntimeError> {
        let request = self
            .ctrd
            .request(GetContainerRequest { id: id.to_string() }, None);
        match self.ctrd.containers().get(request).await {
            Ok(r) => Ok(r.into_inner().container),
            Err(s) if is_not_found(&s) => Ok(None),
            Err(s) => Err(exec(format!("failed to read container {id}"), s.message())),
        }
    }

    async fn check_name(&self, name: &ContainerName) -> Result<(), RuntimeError> {
        let filter = format!("labels.\"{LABEL_NAME}\"=={name}");
        let holders = self.list_containers(filter).await?;
        match holders.first().and_then(|c| ContainerId::parse(&c.id).ok()) {
            Some(holder) => Err(RuntimeError::NameInUse {
                name: name.clone(),
                holder,
            }),
            None => Ok(()),
        }
    }

    /// A host port is taken when one of our running containers publishes it
    /// or a host socket is bound to it.
    async fn check_ports(
        &self,
        id: ContainerId,
        ports: &[PortMapping],
    ) -> Result<(), RuntimeError> {
        if ports.is_empty() {
            return Ok(());
        }
        let running = self
            .list_containers(format!("labels.\"{LABEL_STATE}\"==RUNNING"))
            .await?;
        for (index, mapping) in ports.iter().enumerate() {
            let holder = running.iter().find(|c| {
                c.id != id.to_string() && ports_of(c).iter().any(|p| same_port(p, mapping))
            });
            let by = match holder {
                Some(c) => format!(" by container {}", c.id),
                None if port_is_bound(mapping) => String::new(),
                None => continue,
            };
            return Err(RuntimeError::PortInUse {
                index,
                port: mapping.host_port,
                proto: mapping.proto.as_str(),
                by,
            });
        }
        Ok(())
    }

    async fn write_files(
        &self,
        id: ContainerId,
        hostname: &str,
        request: &CreateRequest,
    ) -> Result<PathBuf, RuntimeError> {
        let dir = self.files_dir(id);
        let io = |what: &str, e: std::io::Error| {
            exec(format!("failed to write {what} of container {id}"), e)
        };
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| io("the state directory", e))?;
        let mut hosts =
            String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        for extra in &request.config.extra_hosts {
            let ip = match extra.target {
                HostTarget::Ip(ip) => ip.to_string(),
                HostTarget::HostIp => self.network.gateway().to_string(),
            };
            hosts.push_str(&format!("{ip}\t{}\n", extra.hostname));
        }
        tokio::fs::write(dir.join("hosts"), hosts)
            .await
            .map_err(|e| io("/etc/hosts", e))?;
        tokio::fs::write(dir.join("hostname"), format!("{hostname}\n"))
            .await
            .map_err(|e| io("/etc/hostname", e))?;
        let resolv = container_resolv_conf(
            &tokio::fs::read_to_string("/etc/resolv.conf")
                .await
                .unwrap_or_default(),
        );
        tokio::fs::write(dir.join("resolv.conf"), resolv)
            .await
            .map_err(|e| io("/etc/resolv.conf", e))?;
        Ok(dir)
    }

    /// Writes the container's files, checks its name and records it; the
    /// name check and the record are one step for concurrent creates.
    async fn admit_and_record(
        &self,
        id: ContainerId,
        request: &CreateRequest,
        hostname: &str,
        image: &PulledImage,
    ) -> Result<(), RuntimeError> {
        let dir = self.write_files(id, hostname, request).await?;
        let record = self.container_record(id, request, hostname, &dir, image)?;
        let _admitted = self.admission.lock().await;
        if let Some(name) = &request.name {
            self.check_name(name).await?;
        }
        // A create that is to start fails on a taken host port before
        // anything exists; the start checks again, for ports taken meanwhile.
        if request.start {
            self.check_ports(id, &request.config.port_mappings).await?;
        }
        self.create_record(id, record, &image.chain_id).await
    }

    /// Prepares the root filesystem and records the container, under a
    /// lease: until the record references it, only the lease keeps the new
    /// snapshot from containerd's garbage collector.
    async fn create_record(
        &self,
        id: ContainerId,
        container: Container,
        parent: &str,
    ) -> Result<(), RuntimeError> {
        let lease = format!("cf-create-{id}");
        self.ctrd.create_lease(&lease).await?;
        let result = self.prepare_and_record(id, container, parent, &lease).await;
        if let Err(e) = self.ctrd.delete_lease(&lease).await {
            warn!(error = %e, "failed to delete the create lease; it expires by itself");
        }
        result
    }

    async fn prepare_and_record(
        &self,
        id: ContainerId,
        container: Container,
        parent: &str,
        lease: &str,
    ) -> Result<(), RuntimeError> {
        let prepare = PrepareSnapshotRequest {
            snapshotter: self.settings.snapshotter.clone(),
            key: id.to_string(),
            parent: parent.to_owned(),
            labels: HashMap::new(),
        };
        self.ctrd
            .snapshots()
            .prepare(self.ctrd.request(prepare, Some(lease)))
            .await
            .map_err(grpc_failed(format!(
                "failed to prepare the root filesystem of container {id}"
            )))?;
        let create = CreateContainerRequest {
            container: Some(container),
        };
        self.ctrd
            .containers()
            .create(self.ctrd.request(create, Some(lease)))
            .await
            .map_err(grpc_failed(format!("failed to create container {id}")))?;
        Ok(())
    }

    /// The containerd record of a new container: runtime spec and labels.
    fn container_record(
        &self,
        id: ContainerId,
        request: &CreateRequest,
        hostname: &str,
        dir: &Path,
        image: &PulledImage,
    ) -> Result<Container, RuntimeError> {
        let netns = PathBuf::from("/run/netns").join(Self::netns_name(id));
        let spec = spec::build(&SpecInput {
            image_config: &image.config,
            config: &request.config,
            hostname,
            files_dir: dir,
            netns: &netns,
            cgroups_path: format!("/{}/{id}", self.ctrd.namespace()),
        })
        .map_err(|e| {
            exec(
                format!("failed to build the runtime spec of container {id}"),
                e,
            )
        })?;
        let ports = serde_json::to_string(&request.config.port_mappings)
            .map_err(|e| exec(format!("failed to record the ports of container {id}"), e))?;
        let mut labels = HashMap::from([
            (LABEL_IMAGE.to_owned(), request.image.to_string()),
            (LABEL_STATE.to_owned(), "CREATED".to_owned()),
            (LABEL_PORTS.to_owned(), ports),
        ]);
        if let Some(name) = &request.name {
            labels.insert(LABEL_NAME.to_owned(), name.to_string());
        }
        Ok(Container {
            id: id.to_string(),
            labels,
            image: image.name.clone(),
            runtime: Some(Runtime {
                name: self.settings.runtime.clone(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE.to_owned(),
                value: spec.to_string().into_bytes(),
            }),
            snapshotter: self.settings.snapshotter.clone(),
            snapshot_key: id.to_string(),
            ..Default::default()
        })
    }

    async fn set_labels(
        &self,
        id: ContainerId,
        labels: &[(&str, String)],
    ) -> Result<(), RuntimeError> {
        let container = Container {
            id: id.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            ..Default::default()
        };
        let paths = labels.iter().map(|(k, _)| format!("labels.{k}")).collect();
        let update = UpdateContainerRequest {
            container: Some(container),
            update_mask: Some(prost_types::FieldMask { paths }),
        };
        self.ctrd
            .containers()
            .update(self.ctrd.request(update, None))
            .await
            .map_err(grpc_failed(format!(
                "failed to record the state of container {id}"
            )))?;
        Ok(())
    }

    /// Everything from the network namespace to a started task.
    async fn launch(&self, id: ContainerId, ports: &[PortMapping]) -> Result<(), RuntimeError> {
        let netns = self
            .network
            .create_netns(&Self::netns_name(id))
            .await
            .map_err(|e| {
                exec(
                    format!("failed to create the network namespace of container {id}"),
                    e,
                )
            })?;
        let port_maps: Vec<PortMap> = ports.iter().map(port_map).collect();
        let ip = self
            .network
            .add(&id.to_string(), &netns, &port_maps)
            .await
            .map_err(|e| {
                exec(
                    format!("failed to connect container {id} to the bridge network"),
                    e,
                )
            })?;
        self.add_own_host_entry(id, ip).await?;

        let mounts = MountsRequest {
            snapshotter: self.settings.snapshotter.clone(),
            key: id.to_string(),
        };
        let rootfs = self
            .ctrd
            .snapshots()
            .mounts(self.ctrd.request(mounts, None))
            .await
            .map_err(grpc_failed(format!(
                "failed to mount the root filesystem of container {id}"
            )))?
            .into_inner()
            .mounts;
        let log_uri = self.log_uri(id);
        let create = CreateTaskRequest {
            container_id: id.to_string(),
            rootfs,
            stdout: log_uri.clone(),
            stderr: log_uri,
            ..Default::default()
        };
        self.ctrd
            .tasks()
            .create(self.ctrd.request(create, None))
            .await
            .map_err(grpc_failed(format!(
                "failed to create the task of container {id}"
            )))?;
        // RUNNING is recorded before the start so that an exit event of a
        // short-lived process cannot be overwritten by it.
        self.set_labels(
            id,
            &[
                (LABEL_STATE, "RUNNING".into()),
                (LABEL_ERROR, String::new()),
            ],
        )
        .await?;
        let start = StartRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        };
        self.ctrd
            .tasks()
            .start(self.ctrd.request(start, None))
            .await
            .map_err(grpc_failed(format!(
                "failed to start the task of container {id}"
            )))?;
        Ok(())
    }

    async fn add_own_host_entry(&self, id: ContainerId, ip: Ipv4Addr) -> Result<(), RuntimeError> {
        let dir = self.files_dir(id);
        let hostname = tokio::fs::read_to_string(dir.join("hostname"))
            .await
            .unwrap_or_default();
        let hosts = dir.join("hosts");
        let mut content = tokio::fs::read_to_string(&hosts).await.unwrap_or_default();
        content.push_str(&format!("{ip}\t{}\n", hostname.trim()));
        tokio::fs::write(&hosts, content)
            .await
            .map_err(|e| exec(format!("failed to write /etc/hosts of container {id}"), e))
    }

    fn log_uri(&self, id: ContainerId) -> String {
        let log = self.files_dir(id).join("json.log");
        format!(
            "binary://{}?--file={}",
            self.settings.logger.display(),
            percent_encode(&log.to_string_lossy())
        )
    }

    /// Removes the task and the network of `id`, leaving the container.
    async fn release_task(&self, id: ContainerId) -> Result<(), RuntimeError> {
        self.delete_task(id).await?;
        let netns = PathBuf::from("/run/netns").join(Self::netns_name(id));
        if let Err(e) = self.network.del(&id.to_string(), &netns).await {
            warn!(container_id = %id, error = %e, "failed to disconnect the container from the network");
        }
        self.network
            .delete_netns(&Self::netns_name(id))
            .await
            .map_err(|e| {
                exec(
                    format!("failed to delete the network namespace of container {id}"),
                    e,
                )
            })
    }

    /// Deletes the task of `id` if there is one, killing it first when it
    /// still runs. Purging is for attempts that must not survive and for
    /// teardown, so there is no grace period.
    // TODO(factory): a user-facing stop/remove needs SIGTERM, a grace
    // period, then SIGKILL (Kanto's stopWithOptions); it comes with those
    // operations.
    async fn delete_task(&self, id: ContainerId) -> Result<(), RuntimeError> {
        let delete = || async {
            let request = DeleteTaskRequest {
                container_id: id.to_string(),
            };
            self.ctrd
                .tasks()
                .delete(self.ctrd.request(request, None))
                .await
        };
        let mut killed = false;
        let deadline = tokio::time::Instant::now() + TASK_EXIT_WAIT;
        loop {
            match delete().await {
                Ok(_) => return Ok(()),
                Err(s) if is_not_found(&s) => return Ok(()),
                Err(s) if tokio::time::Instant::now() > deadline => {
                    let context = format!("failed to delete the task of container {id}");
                    return Err(exec(context, s.message()));
                }
                Err(_) if !killed => {
                    self.kill(id, SIGKILL).await;
                    killed = true;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn kill(&self, id: ContainerId, signal: u32) {
        let request = KillRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
            signal,
            all: true,
        };
        if let Err(s) = self
            .ctrd
            .tasks()
            .kill(self.ctrd.request(request, None))
            .await
        {
            if !is_not_found(&s) {
                warn!(container_id = %id, signal, error = %s.message(), "failed to signal the task");
            }
        }
    }

    /// Sends every exit of a container's task to `exits` until the event
    /// stream ends; first the tasks that exited while nobody watched.
    ///
    /// # Errors
    /// When containerd's event stream cannot be opened or breaks, or
    /// `exits` is closed.
    pub async fn watch_exits(&self, exits: &mpsc::Sender<TaskExited>) -> Result<(), RuntimeError> {
        let filters = vec![format!(
            "topic==\"/tasks/exit\",namespace==\"{}\"",
            self.ctrd.namespace()
        )];
        let request = self.ctrd.request(SubscribeRequest { filters }, None);
        let mut client = self.ctrd.events();
        let subscribe = client.subscribe(request);
        tokio::pin!(subscribe);
        // The sweep settles tasks that stopped while nobody watched, and
        // any exit that slipped between a sweep and the subscription.
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        // containerd answers a subscription only with its first event, so
        // the first sweeps run while the subscription is pending.
        let mut events = loop {
            tokio::select! {
                subscribed = &mut subscribe => break subscribed
                    .map_err(grpc_failed("failed to subscribe to containerd events"))?
                    .into_inner(),
                _ = sweep.tick() => self.report_stopped_tasks(exits).await?,
            }
        };
        loop {
            tokio::select! {
                envelope = events.next() => {
                    let Some(envelope) = envelope else {
                        return Err(exec("containerd event stream ended", "closed by containerd"));
                    };
                    let envelope = envelope
                        .map_err(grpc_failed("containerd event stream failed"))?;
                    if let Some(exit) = task_exit(envelope.event) {
                        send(exits, exit).await?;
                    }
                }
                _ = sweep.tick() => self.report_stopped_tasks(exits).await?,
            }
        }
    }

    async fn report_stopped_tasks(
        &self,
        exits: &mpsc::Sender<TaskExited>,
    ) -> Result<(), RuntimeError> {
        let request = self.ctrd.request(
            ListTasksRequest {
                filter: String::new(),
            },
            None,
        );
        let tasks = self
            .ctrd
            .tasks()
            .list(request)
            .await
            .map_err(grpc_failed("failed to list tasks"))?
            .into_inner()
            .tasks;
        for task in tasks.into_iter().filter(|t| t.status == TASK_STOPPED) {
            // containerd 1.6 fills only `id` (the init process's, which is the
            // container's) in the tasks it lists.
            if let Ok(id) = ContainerId::parse(&task.id) {
                send(exits, (id, task.exit_status)).await?;
            }
        }
        Ok(())
    }

    /// Removes every container of the namespace (for `cf-factory teardown`),
    /// several at a time.
    ///
    /// # Errors
    /// The first container that could not be removed; the others are still
    /// attempted.
    pub async fn remove_all(&self) -> Result<usize, RuntimeError> {
        let containers = self.list_containers(String::new()).await?;
        let ids = containers
            .iter()
            .filter_map(|c| ContainerId::parse(&c.id).ok());
        let results: Vec<_> = futures::stream::iter(ids)
            .map(|id| self.purge(id))
            .buffer_unordered(TEARDOWN_CONCURRENCY)
            .collect()
            .await;
        let removed = results.iter().filter(|r| r.is_ok()).count();
        if let Some(e) = results.into_iter().find_map(Result::err) {
            return Err(e);
        }
        self.remove_orphans().await?;
        Ok(removed)
    }

    /// What interrupted work can leave without a container record: our
    /// leases (they would expire, but teardown should leave nothing) and
    /// per-container files.
    async fn remove_orphans(&self) -> Result<(), RuntimeError> {
        use containerd_client::services::v1::ListRequest;
        let request = self.ctrd.request(ListRequest { filters: vec![] }, None);
        let leases = self.ctrd.leases().list(request).await;
        let leases = leases.map_err(grpc_failed("failed to list leases"))?;
        for lease in leases
            .into_inner()
            .leases
            .iter()
            .filter(|l| l.id.starts_with("cf-"))
        {
            self.ctrd.delete_lease(&lease.id).await?;
        }
        let dir = self.settings.state_dir.join("containers");
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(exec(format!("failed to read {}", dir.display()), e)),
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| ContainerId::parse(n).ok())
            else {
                continue;
            };
            self.purge(id).await?;
        }
        Ok(())
    }
}

impl ContainerRuntime for ContainerdRuntime {
    #[instrument(skip_all, fields(container_id = %id, image = %request.image))]
    async fn create(&self, id: ContainerId, request: &CreateRequest) -> Result<(), RuntimeError> {
        let image = self.images.ensure(&request.image).await?;
        let hostname = request
            .name
            .as_ref()
            .map_or_else(|| id.short(), ContainerName::to_string);
        let result = self.admit_and_record(id, request, &hostname, &image).await;
        if let Err(e) = &result {
            warn!(error = %e, "create failed; removing what was made");
            if let Err(cleanup) = self.purge(id).await {
                warn!(error = %cleanup, "cleanup after a failed create failed");
            }
        } else {
            info!("container created");
        }
        result
    }

    #[instrument(skip_all, fields(container_id = %id))]
    async fn start(&self, id: ContainerId) -> Result<(), RuntimeError> {
        let container = self.get_container(id).await?.ok_or_else(|| {
            exec(
                format!("failed to start container {id}"),
                "it does not exist",
            )
        })?;
        let ports = ports_of(&container);
        let result = if ports.is_empty() {
            self.launch(id, &ports).await
        } else {
            let _admitted = self.admission.lock().await;
            match self.check_ports(id, &ports).await {
                Ok(()) => self.launch(id, &ports).await,
                Err(e) => Err(e),
            }
        };
        match &result {
            Ok(()) => info!("container started"),
            Err(e) => {
                warn!(error = %e, "start failed; releasing the task and network");
                if let Err(cleanup) = self.release_task(id).await {
                    warn!(error = %cleanup, "release after a failed start failed");
                }
                let labels = [
                    (LABEL_STATE, "STOPPED".to_owned()),
                    (LABEL_ERROR, e.to_string()),
                ];
                if let Err(record) = self.set_labels(id, &labels).await {
                    warn!(error = %record, "failed to record the start failure");
                }
            }
        }
        result
    }

    #[instrument(skip(self))]
    async fn settle_exit(&self, id: ContainerId, exit_code: u32) -> Result<(), RuntimeError> {
        // A container purged meanwhile (its kill is what exited) needs nothing.
        if self.get_container(id).await?.is_none() {
            return Ok(());
        }
        self.release_task(id).await?;
        let labels = [
            (LABEL_STATE, "EXITED".to_owned()),
            (LABEL_EXIT_CODE, exit_code.to_string()),
        ];
        self.set_labels(id, &labels).await?;
        info!(exit_code, "container exited");
        Ok(())
    }

    #[instrument(skip_all, fields(container_id = %id))]
    async fn purge(&self, id: ContainerId) -> Result<(), RuntimeError> {
        self.release_task(id).await?;
        let delete = DeleteContainerRequest { id: id.to_string() };
        let deleted = self
            .ctrd
            .containers()
            .delete(self.ctrd.request(delete, None))
            .await;
        removed(deleted, || format!("failed to delete container {id}"))?;
        let remove = RemoveSnapshotRequest {
            snapshotter: self.settings.snapshotter.clone(),
            key: id.to_string(),
        };
        let snapshot = self
            .ctrd
            .snapshots()
            .remove(self.ctrd.request(remove, None))
            .await;
        removed(snapshot, || {
            format!("failed to remove the snapshot of container {id}")
        })?;
        match tokio::fs::remove_dir_all(self.files_dir(id)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(exec(
                format!("failed to remove the files of container {id}"),
                e,
            )),
        }
    }
}

/// A container's task exited: its ID and exit code.
pub type TaskExited = (ContainerId, u32);

/// The exit of a container's init process, from a `/tasks/exit` event.
fn task_exit(event: Option<prost_types::Any>) -> Option<TaskExited> {
    let exit = TaskExit::decode(event?.value.as_slice()).ok()?;
    let id = ContainerId::parse(&exit.container_id).ok()?;
    (exit.id == exit.container_id).then_some((id, exit.exit_status))
}

async fn send(exits: &mpsc::Sender<TaskExited>, exit: TaskExited) -> Result<(), RuntimeError> {
    exits
        .send(exit)
        .await
        .map_err(|_| exec("failed to report a task exit", "nobody listens"))
}

fn ports_of(container: &Container) -> Vec<PortMapping> {
    container
        .labels
        .get(LABEL_PORTS)
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or_default()
}

fn same_port(a: &PortMapping, b: &PortMapping) -> bool {
    let overlaps =
        a.host_ip.is_unspecified() || b.host_ip.is_unspecified() || a.host_ip == b.host_ip;
    a.proto == b.proto && a.host_port == b.host_port && overlaps
}

fn port_is_bound(mapping: &PortMapping) -> bool {
    let addr = (mapping.host_ip, mapping.host_port);
    match mapping.proto {
        Protocol::Tcp => TcpListener::bind(addr).is_err(),
        Protocol::Udp => UdpSocket::bind(addr).is_err(),
    }
}

fn port_map(p: &PortMapping) -> PortMap {
    PortMap {
        host_port: p.host_port,
        container_port: p.container_port,
        protocol: p.proto.as_str(),
        host_ip: p.host_ip,
    }
}

/// The host's resolv.conf without loopback name servers, which would point
/// into the container's own network namespace.
fn container_resolv_conf(host: &str) -> String {
    host.lines()
        .filter(|l| {
            let mut words = l.split_whitespace();
            !(words.next() == Some("nameserver")
                && words
                    .next()
                    .is_some_and(|ip| ip.starts_with("127.") || ip == "::1"))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Percent-encodes a value for the query of a `binary://` URI.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_loopback_name_servers() {
        let host = "nameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch lan\n";
        assert_eq!(
            container_resolv_conf(host),
            "nameserver 10.0.0.2\nsearch lan\n"
        );
    }

    #[test]
    fn encodes_log_paths_for_uris() {
        assert_eq!(percent_encode("/a b/json.log"), "/a%20b/json.log");
    }

    #[test]
    fn wildcard_host_ips_overlap() {
        let m = |ip: [u8; 4]| PortMapping {
            proto: Protocol::Tcp,
            container_port: 80,
            host_ip: Ipv4Addr::from(ip),
            host_port: 8080,
        };
        assert!(same_port(&m([0, 0, 0, 0]), &m([127, 0, 0, 1])));
        assert!(!same_port(&m([127, 0, 0, 2]), &m([127, 0, 0, 1])));
    }
}
