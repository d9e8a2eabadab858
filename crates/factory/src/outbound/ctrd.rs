//! A thin, namespaced handle on containerd's gRPC API (containerd 1.6,
//! through `containerd-client`): every request carries the namespace, and
//! the calls used by the factory are wrapped with their error context.

use std::collections::HashMap;
use std::path::Path;

use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::{
    containers_client::ContainersClient, content_client::ContentClient, diff_client::DiffClient,
    events_client::EventsClient, images_client::ImagesClient, leases_client::LeasesClient,
    tasks_client::TasksClient,
};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Status};

use cf_core::ports::RuntimeError;

/// Metadata key that scopes a request to a namespace.
const NAMESPACE_HEADER: &str = "containerd-namespace";
/// Metadata key that protects what a request creates with a lease.
const LEASE_HEADER: &str = "containerd-lease";

/// A connection to containerd, bound to one namespace.
#[derive(Clone)]
pub struct Ctrd {
    channel: Channel,
    namespace: String,
}

impl Ctrd {
    /// Connects to containerd's socket at `path`.
    ///
    /// # Errors
    /// [`RuntimeError::Execution`] when the socket cannot be reached.
    pub async fn connect(path: &Path, namespace: &str) -> Result<Self, RuntimeError> {
        let channel = containerd_client::connect(path).await.map_err(|e| {
            exec(
                format!("failed to connect to containerd at {}", path.display()),
                e,
            )
        })?;
        Ok(Self {
            channel,
            namespace: namespace.to_owned(),
        })
    }

    /// The namespace of this handle.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Wraps `message` in a request scoped to the namespace (and a lease).
    pub fn request<T>(&self, message: T, lease: Option<&str>) -> Request<T> {
        let mut request = Request::new(message);
        let md = request.metadata_mut();
        // Both values were checked to be ASCII when the handle was built or
        // come from our own UUIDs, so parsing cannot fail in practice.
        if let Ok(ns) = self.namespace.parse() {
            md.insert(NAMESPACE_HEADER, ns);
        }
        if let Some(lease) = lease.and_then(|l| l.parse().ok()) {
            md.insert(LEASE_HEADER, lease);
        }
        request
    }

    /// Content store client.
    pub fn content(&self) -> ContentClient<Channel> {
        ContentClient::new(self.channel.clone()).max_decoding_message_size(64 << 20)
    }

    /// Snapshot service client.
    pub fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel.clone())
    }

    /// Diff (layer apply) service client.
    pub fn diff(&self) -> DiffClient<Channel> {
        DiffClient::new(self.channel.clone())
    }

    /// Image store client.
    pub fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel.clone())
    }

    /// Lease manager client.
    pub fn leases(&self) -> LeasesClient<Channel> {
        LeasesClient::new(self.channel.clone())
    }

    /// Container metadata client.
    pub fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }

    /// Task (running process) client.
    pub fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }

    /// Event subscription client.
    pub fn events(&self) -> EventsClient<Channel> {
        EventsClient::new(self.channel.clone())
    }

    /// Creates a lease that keeps new content and snapshots from being
    /// garbage collected until it is deleted (or expires, after a crash).
    /// A lease that already exists is reused.
    ///
    /// # Errors
    /// [`RuntimeError::Execution`] when containerd refuses.
    pub async fn create_lease(&self, id: &str) -> Result<(), RuntimeError> {
        use containerd_client::services::v1::CreateRequest;
        let expire = humantime::format_rfc3339_seconds(
            std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
        );
        let labels = HashMap::from([("containerd.io/gc.expire".to_owned(), expire.to_string())]);
        let request = self.request(
            CreateRequest {
                id: id.to_owned(),
                labels,
            },
            None,
        );
        match self.leases().create(request).await {
            Ok(_) => Ok(()),
            // Left by an attempt that was interrupted; lease IDs are ours.
            Err(s) if is_already_exists(&s) => Ok(()),
            Err(e) => Err(exec("failed to create a containerd lease", e.message())),
        }
    }

    /// Deletes a lease; a missing lease is fine.
    ///
    /// # Errors
    /// [`RuntimeError::Execution`] when containerd refuses.
    pub async fn delete_lease(&self, id: &str) -> Result<(), RuntimeError> {
        use containerd_client::services::v1::DeleteRequest;
        let request = self.request(
            DeleteRequest {
                id: id.to_owned(),
                sync: false,
            },
            None,
        );
        let deleted = self.leases().delete(request).await;
        removed(deleted, || {
            format!("failed to delete containerd lease {id}")
        })
    }
}

/// An execution error with its context.
pub fn exec(context: impl Into<String>, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Execution {
        context: context.into(),
        reason: e.to_string(),
    }
}

/// Maps a gRPC failure to [`RuntimeError::Execution`] with `context`.
pub fn grpc_failed(context: impl Into<String>) -> impl FnOnce(Status) -> RuntimeError {
    let context = context.into();
    move |status| exec(context, status.message())
}

/// `result` with "already gone" counted as success, for idempotent removal.
///
/// # Errors
/// [`RuntimeError::Execution`] with `context` for any other failure.
pub fn removed<T>(
    result: Result<T, Status>,
    context: impl FnOnce() -> String,
) -> Result<(), RuntimeError> {
    match result {
        Ok(_) => Ok(()),
        Err(s) if is_not_found(&s) => Ok(()),
        Err(s) => Err(exec(context(), s.message())),
    }
}

/// Whether a gRPC status means "already gone" (for idempotent removal).
pub fn is_not_found(status: &Status) -> bool {
    status.code() == Code::NotFound
}

/// Whether a gRPC status means "already there" (for idempotent creation).
pub fn is_already_exists(status: &Status) -> bool {
    status.code() == Code::AlreadyExists
}
