//! Pulls images into containerd's content store and unpacks them into
//! snapshots (containerd 1.6 has no transfer service, so the factory does
//! what `ctr pull` does): registry side with `oci-client` over the OCI
//! distribution API, containerd side through Content, Diff, Snapshots and
//! Images, all under a lease so that a crash leaves nothing unreferenced.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cf_core::image::ImageRef;
use cf_core::ports::RuntimeError;
use cf_core::request::hex;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, GetImageRequest, Image, InfoRequest, ReadContentRequest,
    UpdateImageRequest, WriteAction, WriteContentRequest,
};
use containerd_client::types::Descriptor;
use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tracing::{debug, info, instrument};

use super::ctrd::{is_already_exists, is_not_found, Ctrd};

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
/// A registry that does not accept a connection within this time is down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A registry that sends nothing for this long is stuck; without a bound a
/// hung registry would hold a job slot (and every create of that image).
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Blobs are buffered in memory while pulled, so their size is bounded;
/// the size comes from the registry and is checked before anything is
/// allocated.
const MAX_BLOB_SIZE: i64 = 2 << 30;

/// Chunk size of content writes; well under gRPC's 4 MiB message limit.
const WRITE_CHUNK: usize = 1 << 20;

/// What a container needs to know about its image.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The normalised reference, also the containerd image name.
    pub name: String,
    /// Digest the image record points at (manifest or index).
    pub target: String,
    /// Chain ID of the top layer: the parent of container snapshots.
    pub chain_id: String,
    /// The image's `config` section (Env, Cmd, Entrypoint, WorkingDir, User).
    pub config: Value,
}

/// A layer's expected uncompressed digest and the chain ID it is committed as.
#[derive(Clone, Copy)]
struct Unpacked<'a> {
    diff_id: &'a str,
    chain: &'a str,
}

/// Where to pull from, and how to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct RegistrySettings {
    /// Registry host → mirror URLs (`http://host:port` for plain HTTP).
    pub mirrors: BTreeMap<String, String>,
    /// Hosts reached over plain HTTP.
    pub insecure: Vec<String>,
}

/// Pulls and unpacks images, once per image even under concurrent creates.
pub struct ImageStore {
    ctrd: Ctrd,
    snapshotter: String,
    registries: RegistrySettings,
    plain: Client,
    tls: Client,
    cache: Mutex<HashMap<String, Arc<PulledImage>>>,
    in_progress: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl ImageStore {
    /// An image store on `ctrd` that unpacks with `snapshotter`.
    pub fn new(ctrd: Ctrd, snapshotter: &str, registries: RegistrySettings) -> Self {
        let client = |protocol| {
            Client::new(ClientConfig {
                protocol,
                connect_timeout: Some(CONNECT_TIMEOUT),
                read_timeout: Some(READ_TIMEOUT),
                ..Default::default()
            })
        };
        Self {
            ctrd,
            snapshotter: snapshotter.to_owned(),
            registries,
            plain: client(ClientProtocol::Http),
            tls: client(ClientProtocol::Https),
            cache: Mutex::default(),
            in_progress: Mutex::default(),
        }
    }

    /// Returns the image, pulling and unpacking it first if needed.
    ///
    /// # Errors
    /// [`RuntimeError::Pull`] when no source has it or it cannot be unpacked.
    #[instrument(skip_all, fields(image = %image))]
    pub async fn ensure(&self, image: &ImageRef) -> Result<Arc<PulledImage>, RuntimeError> {
        let name = image.to_string();
        let gate = self.gate(&name);
        let _pulling = gate.lock().await;
        let pull_error = |reason: String| RuntimeError::Pull {
            image: name.clone(),
            reason,
        };
        let stored = self.stored_target(&name).await.map_err(&pull_error)?;
        if let Some(target) = &stored {
            if let Some(hit) = self.cached(&name).filter(|p| &p.target == target) {
                return Ok(hit);
            }
            if let Some(local) = self.load_local(&name, target).await.map_err(&pull_error)? {
                return Ok(self.remember(local));
            }
        }
        let pulled = self.pull(image).await.map_err(&pull_error)?;
        Ok(self.remember(pulled))
    }

    fn gate(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.in_progress.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(name.to_owned()).or_default())
    }

    fn cached(&self, name: &str) -> Option<Arc<PulledImage>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(name).cloned()
    }

    fn remember(&self, image: PulledImage) -> Arc<PulledImage> {
        let image = Arc::new(image);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(image.name.clone(), Arc::clone(&image));
        image
    }

    async fn stored_target(&self, name: &str) -> Result<Option<String>, String> {
        let request = self.ctrd.request(
            GetImageRequest {
                name: name.to_owned(),
            },
            None,
        );
        match self.ctrd.images().get(request).await {
            Ok(r) => Ok(r
                .into_inner()
                .image
                .and_then(|i| i.target)
                .map(|t| t.digest)),
            Err(s) if is_not_found(&s) => Ok(None),
            Err(s) => Err(format!(
                "failed to look the image up in containerd: {}",
                s.message()
            )),
        }
    }

    /// Reads an image that containerd already has; `None` when something
    /// is missing (then it is pulled again).
    async fn load_local(&self, name: &str, target: &str) -> Result<Option<PulledImage>, String> {
        let Some(top) = self.read_blob(target).await? else {
            return Ok(None);
        };
        let manifest: Value = serde_json::from_slice(&top).map_err(|e| e.to_string())?;
        let manifest = if manifest.get("manifests").is_some() {
            let digest = select_platform(&manifest)?.digest;
            let Some(bytes) = self.read_blob(&digest).await? else {
                return Ok(None);
            };
            serde_json::from_slice(&bytes).map_err(|e| e.to_string())?
        } else {
            manifest
        };
        let config_digest = manifest["config"]["digest"].as_str().unwrap_or_default();
        let Some(config) = self.read_blob(config_digest).await? else {
            return Ok(None);
        };
        let config: Value = serde_json::from_slice(&config).map_err(|e| e.to_string())?;
        let chain_id = chain_ids(&config)?.pop().ok_or("image has no layers")?;
        if !self.snapshot_exists(&chain_id).await? {
            return Ok(None);
        }
        Ok(Some(PulledImage {
            name: name.to_owned(),
            target: target.to_owned(),
            chain_id,
            config: config["config"].clone(),
        }))
    }

    async fn pull(&self, image: &ImageRef) -> Result<PulledImage, String> {
        let lease = format!("cf-pull-{}", uuid::Uuid::new_v4());
        self.ctrd
            .create_lease(&lease)
            .await
            .map_err(|e| e.to_string())?;
        let result = self.pull_leased(image, &lease).await;
        if let Err(e) = self.ctrd.delete_lease(&lease).await {
            tracing::warn!(error = %e, "failed to delete the pull lease; it expires by itself");
        }
        result
    }

    async fn pull_leased(&self, image: &ImageRef, lease: &str) -> Result<PulledImage, String> {
        let mut errors = Vec::new();
        for (host, plain) in self.sources(image) {
            match self.pull_from(image, &host, plain, lease).await {
                Ok(pulled) => return Ok(pulled),
                Err(e) => {
                    debug!(source = %host, error = %e, "pull from source failed");
                    errors.push(format!("{host}: {e}"));
                }
            }
        }
        Err(errors.join("; "))
    }

    /// Mirrors of the image's registry, or the registry itself. A mirrored
    /// registry is not contacted directly: edge devices behind a mirror
    /// usually cannot reach the origin, and waiting for it only delays the
    /// error.
    fn sources(&self, image: &ImageRef) -> Vec<(String, bool)> {
        if let Some(mirror) = self.registries.mirrors.get(image.registry()) {
            return mirror
                .split(',')
                .map(|m| {
                    let plain = m.starts_with("http://");
                    let host = m.split_once("://").map_or(m, |(_, h)| h);
                    (host.trim_end_matches('/').to_owned(), plain)
                })
                .collect();
        }
        let host = image.registry().to_owned();
        let plain = self.registries.insecure.contains(&host) || is_loopback(&host);
        vec![(host, plain)]
    }

    async fn pull_from(
        &self,
        image: &ImageRef,
        host: &str,
        plain: bool,
        lease: &str,
    ) -> Result<PulledImage, String> {
        let client = if plain { &self.plain } else { &self.tls };
        let reference = match (image.digest(), image.tag()) {
            (Some(d), _) => {
                Reference::with_digest(host.into(), image.repository().into(), d.into())
            }
            (None, tag) => Reference::with_tag(
                host.into(),
                image.repository().into(),
                tag.unwrap_or("latest").into(),
            ),
        };
        let auth = RegistryAuth::Anonymous;
        let (top, top_digest) = client
            .pull_manifest_raw(&reference, &auth, MANIFEST_TYPES)
            .await
            .map_err(|e| e.to_string())?;
        let top_json: Value = serde_json::from_slice(&top).map_err(|e| e.to_string())?;
        let top_type = media_type(&top_json, INDEX_TYPES[0], MANIFEST_TYPES[0]);

        let (manifest, manifest_desc) = if top_json.get("manifests").is_some() {
            let chosen = select_platform(&top_json)?;
            let by_digest = reference.clone_with_digest(chosen.digest.clone());
            let (bytes, _) = client
                .pull_manifest_raw(&by_digest, &auth, MANIFEST_TYPES)
                .await
                .map_err(|e| e.to_string())?;
            (bytes, Some(chosen))
        } else {
            (top.clone(), None)
        };
        let manifest_json: Value = serde_json::from_slice(&manifest).map_err(|e| e.to_string())?;
        let config_desc = descriptor(&manifest_json["config"])?;
        let layers: Vec<OciDescriptor> = manifest_json["layers"]
            .as_array()
            .ok_or("manifest has no layers")?
            .iter()
            .map(descriptor)
            .collect::<Result<_, _>>()?;

        let config = self
            .fetch(client, &reference, &config_desc, lease, HashMap::new())
            .await?;
        let config_json: Value = serde_json::from_slice(&config).map_err(|e| e.to_string())?;
        let chains = chain_ids(&config_json)?;
        let diff_ids = diff_ids(&config_json)?;
        if chains.len() != layers.len() {
            return Err("manifest and config disagree on the number of layers".into());
        }
        for (layer, diff_id) in layers.iter().zip(&diff_ids) {
            let labels = HashMap::from([("containerd.io/uncompressed".into(), diff_id.clone())]);
            self.fetch(client, &reference, layer, lease, labels).await?;
        }
        self.unpack(&layers, &diff_ids, &chains, lease).await?;

        let top_chain = chains.last().cloned().ok_or("image has no layers")?;
        let snapshot_label = format!("containerd.io/gc.ref.snapshot.{}", self.snapshotter);
        let config_labels = HashMap::from([(snapshot_label, top_chain.clone())]);
        self.label_blob(&config_desc, &config, lease, config_labels)
            .await?;

        let mut manifest_labels = HashMap::from([(
            "containerd.io/gc.ref.content.config".to_owned(),
            config_desc.digest.clone(),
        )]);
        for (i, layer) in layers.iter().enumerate() {
            manifest_labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                layer.digest.clone(),
            );
        }
        let manifest_digest = manifest_desc
            .as_ref()
            .map_or(top_digest.clone(), |d| d.digest.clone());
        self.write_blob(&manifest_digest, &manifest, lease, manifest_labels)
            .await?;
        if let Some(chosen) = &manifest_desc {
            let labels = HashMap::from([(
                "containerd.io/gc.ref.content.m.0".to_owned(),
                chosen.digest.clone(),
            )]);
            self.write_blob(&top_digest, &top, lease, labels).await?;
        }

        let target = Descriptor {
            media_type: top_type,
            digest: top_digest.clone(),
            size: i64::try_from(top.len()).map_err(|e| e.to_string())?,
            annotations: HashMap::new(),
        };
        self.record_image(&image.to_string(), target, lease).await?;
        info!(source = host, digest = %top_digest, "image pulled");
        Ok(PulledImage {
            name: image.to_string(),
            target: top_digest,
            chain_id: top_chain,
            config: config_json["config"].clone(),
        })
    }

    /// Downloads a blob unless the content store has it; returns its bytes.
    // TODO(factory): stream large layers into Content.Write instead of
    // buffering them whole in memory.
    async fn fetch(
        &self,
        client: &Client,
        reference: &Reference,
        desc: &OciDescriptor,
        lease: &str,
        labels: HashMap<String, String>,
    ) -> Result<Vec<u8>, String> {
        if let Some(bytes) = self.read_blob_if_small(&desc.digest).await? {
            return Ok(bytes);
        }
        let mut data = Vec::with_capacity(buffer_capacity(desc)?);
        client
            .pull_blob(reference, desc, &mut data)
            .await
            .map_err(|e| format!("failed to fetch {}: {e}", desc.digest))?;
        self.write_blob(&desc.digest, &data, lease, labels).await?;
        Ok(data)
    }

    /// Blob bytes from the store when present; layers are skipped by size
    /// (their bytes are only needed to write them, not to read them back).
    async fn read_blob_if_small(&self, digest: &str) -> Result<Option<Vec<u8>>, String> {
        let request = self.ctrd.request(
            InfoRequest {
                digest: digest.to_owned(),
            },
            None,
        );
        match self.ctrd.content().info(request).await {
            Ok(info) => {
                let size = info.into_inner().info.map_or(0, |i| i.size);
                if size > 4 << 20 {
                    return Ok(Some(Vec::new()));
                }
                self.read_blob(digest).await
            }
            Err(s) if is_not_found(&s) => Ok(None),
            Err(s) => Err(format!("failed to stat {digest}: {}", s.message())),
        }
    }

    async fn read_blob(&self, digest: &str) -> Result<Option<Vec<u8>>, String> {
        let message = ReadContentRequest {
            digest: digest.to_owned(),
            offset: 0,
            size: 0,
        };
        let request = self.ctrd.request(message, None);
        let mut stream = match self.ctrd.content().read(request).await {
            Ok(r) => r.into_inner(),
            Err(s) if is_not_found(&s) => return Ok(None),
            Err(s) => return Err(format!("failed to read {digest}: {}", s.message())),
        };
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => data.extend_from_slice(&c.data),
                Err(s) if is_not_found(&s) => return Ok(None),
                Err(s) => return Err(format!("failed to read {digest}: {}", s.message())),
            }
        }
        Ok(Some(data))
    }

    async fn write_blob(
        &self,
        digest: &str,
        data: &[u8],
        lease: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), String> {
        let total = i64::try_from(data.len()).map_err(|e| e.to_string())?;
        let reference = format!("cf-{digest}-{}", uuid::Uuid::new_v4().simple());
        let message =
            |action: WriteAction, offset: usize, chunk: &[u8], labels| WriteContentRequest {
                action: action as i32,
                r#ref: reference.clone(),
                total,
                expected: digest.to_owned(),
                offset: i64::try_from(offset).unwrap_or(i64::MAX),
                data: chunk.to_vec(),
                labels,
            };
        let mut messages: Vec<_> = data
            .chunks(WRITE_CHUNK)
            .enumerate()
            .map(|(i, c)| message(WriteAction::Write, i * WRITE_CHUNK, c, HashMap::new()))
            .collect();
        messages.push(message(WriteAction::Commit, data.len(), &[], labels));
        let request = self
            .ctrd
            .request(futures::stream::iter(messages), Some(lease));
        let mut responses = match self.ctrd.content().write(request).await {
            Ok(r) => r.into_inner(),
            Err(s) if is_already_exists(&s) => return Ok(()),
            Err(s) => return Err(format!("failed to store {digest}: {}", s.message())),
        };
        while let Some(response) = responses.next().await {
            match response {
                Ok(_) => {}
                Err(s) if is_already_exists(&s) => return Ok(()),
                Err(s) => return Err(format!("failed to store {digest}: {}", s.message())),
            }
        }
        Ok(())
    }

    /// Adds labels to a blob already stored, by writing it again: the
    /// content service merges labels on commit of existing content.
    async fn label_blob(
        &self,
        desc: &OciDescriptor,
        data: &[u8],
        lease: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), String> {
        use containerd_client::services::v1::{Info, UpdateRequest};
        let info = Info {
            digest: desc.digest.clone(),
            labels,
            ..Default::default()
        };
        let paths = info.labels.keys().map(|k| format!("labels.{k}")).collect();
        let message = UpdateRequest {
            info: Some(info),
            update_mask: Some(prost_types::FieldMask { paths }),
        };
        let request = self.ctrd.request(message, Some(lease));
        match self.ctrd.content().update(request).await {
            Ok(_) => Ok(()),
            Err(s) if is_not_found(&s) => {
                self.write_blob(&desc.digest, data, lease, HashMap::new())
                    .await
            }
            Err(s) => Err(format!("failed to label {}: {}", desc.digest, s.message())),
        }
    }

    async fn snapshot_exists(&self, key: &str) -> Result<bool, String> {
        let message = StatSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            key: key.to_owned(),
        };
        match self
            .ctrd
            .snapshots()
            .stat(self.ctrd.request(message, None))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if is_not_found(&s) => Ok(false),
            Err(s) => Err(format!("failed to stat snapshot {key}: {}", s.message())),
        }
    }

    /// Applies each layer on top of its parent and commits it under its
    /// chain ID; layers already unpacked are skipped.
    async fn unpack(
        &self,
        layers: &[OciDescriptor],
        diff_ids: &[String],
        chains: &[String],
        lease: &str,
    ) -> Result<(), String> {
        let mut parent = String::new();
        for ((layer, diff_id), chain) in layers.iter().zip(diff_ids).zip(chains) {
            if !self.snapshot_exists(chain).await? {
                let unpacked = Unpacked { diff_id, chain };
                self.apply_layer(layer, &parent, unpacked, lease).await?;
            }
            parent = chain.clone();
        }
        Ok(())
    }

    async fn apply_layer(
        &self,
        layer: &OciDescriptor,
        parent: &str,
        target: Unpacked<'_>,
        lease: &str,
    ) -> Result<(), String> {
        let key = format!("extract-{}-{}", uuid::Uuid::new_v4().simple(), target.chain);
        let prepare = PrepareSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            key: key.clone(),
            parent: parent.to_owned(),
            labels: HashMap::new(),
        };
        let mounts = self
            .ctrd
            .snapshots()
            .prepare(self.ctrd.request(prepare, Some(lease)))
            .await
            .map_err(|s| format!("failed to prepare a snapshot: {}", s.message()))?
            .into_inner()
            .mounts;
        let result = self
            .apply_and_commit(layer, mounts, &key, target, lease)
            .await;
        if !matches!(result, Ok(true)) {
            let remove = RemoveSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key,
            };
            if let Err(s) = self
                .ctrd
                .snapshots()
                .remove(self.ctrd.request(remove, None))
                .await
            {
                tracing::warn!(error = %s.message(), "failed to remove an extract snapshot");
            }
        }
        result.map(|_| ())
    }

    /// Returns false when another pull committed the same layer first; the
    /// extract snapshot is then redundant.
    async fn apply_and_commit(
        &self,
        layer: &OciDescriptor,
        mounts: Vec<containerd_client::types::Mount>,
        key: &str,
        target: Unpacked<'_>,
        lease: &str,
    ) -> Result<bool, String> {
        let chain = target.chain;
        let apply = ApplyRequest {
            diff: Some(Descriptor {
                media_type: layer.media_type.clone(),
                digest: layer.digest.clone(),
                size: layer.size,
                annotations: HashMap::new(),
            }),
            mounts,
            ..Default::default()
        };
        let applied = self
            .ctrd
            .diff()
            .apply(self.ctrd.request(apply, Some(lease)))
            .await
            .map_err(|s| format!("failed to apply layer {}: {}", layer.digest, s.message()))?
            .into_inner()
            .applied
            .map(|d| d.digest)
            .unwrap_or_default();
        // The snapshot is committed under a name derived from the config's
        // diff IDs, so a layer whose content is not what the config says
        // would be shared with every image that names that diff ID.
        if applied != *target.diff_id {
            return Err(format!(
                "layer {} unpacks to {applied}, but the image config says {}",
                layer.digest, target.diff_id
            ));
        }
        let commit = CommitSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            name: chain.to_owned(),
            key: key.to_owned(),
            labels: HashMap::new(),
        };
        match self
            .ctrd
            .snapshots()
            .commit(self.ctrd.request(commit, Some(lease)))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if is_already_exists(&s) => Ok(false),
            Err(s) => Err(format!("failed to commit layer {chain}: {}", s.message())),
        }
    }

    async fn record_image(
        &self,
        name: &str,
        target: Descriptor,
        lease: &str,
    ) -> Result<(), String> {
        let image = Image {
            name: name.to_owned(),
            target: Some(target),
            ..Default::default()
        };
        let create = CreateImageRequest {
            image: Some(image.clone()),
            ..Default::default()
        };
        match self
            .ctrd
            .images()
            .create(self.ctrd.request(create, Some(lease)))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if is_already_exists(&s) => {
                let update = UpdateImageRequest {
                    image: Some(image),
                    ..Default::default()
                };
                self.ctrd
                    .images()
                    .update(self.ctrd.request(update, Some(lease)))
                    .await
                    .map(|_| ())
                    .map_err(|s| format!("failed to update image record: {}", s.message()))
            }
            Err(s) => Err(format!("failed to record the image: {}", s.message())),
        }
    }
}

/// The buffer to start a download with: the declared size, which comes
/// from the registry, is checked against the limit and not trusted beyond a
/// modest first allocation.
fn buffer_capacity(desc: &OciDescriptor) -> Result<usize, String> {
    if !(0..=MAX_BLOB_SIZE).contains(&desc.size) {
        return Err(format!(
            "blob {} declares {} bytes; at most {MAX_BLOB_SIZE} are supported",
            desc.digest, desc.size
        ));
    }
    Ok(usize::try_from(desc.size).map_or(0, |size| size.min(64 * WRITE_CHUNK)))
}

fn is_loopback(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    name == "localhost" || name.starts_with("127.") || name == "[::1]"
}

fn media_type(doc: &Value, index: &str, manifest: &str) -> String {
    match doc["mediaType"].as_str() {
        Some(t) => t.to_owned(),
        None if doc.get("manifests").is_some() => index.to_owned(),
        None => manifest.to_owned(),
    }
}

fn descriptor(v: &Value) -> Result<OciDescriptor, String> {
    Ok(OciDescriptor {
        media_type: v["mediaType"].as_str().unwrap_or_default().to_owned(),
        digest: v["digest"]
            .as_str()
            .ok_or("descriptor without digest")?
            .to_owned(),
        size: v["size"].as_i64().ok_or("descriptor without size")?,
        ..Default::default()
    })
}

/// The manifest of an index for this machine's platform.
fn select_platform(index: &Value) -> Result<OciDescriptor, String> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    };
    let manifests = index["manifests"]
        .as_array()
        .ok_or("index without manifests")?;
    let chosen = manifests
        .iter()
        .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch)
        .ok_or_else(|| format!("the image has no manifest for linux/{arch}"))?;
    descriptor(chosen)
}

fn diff_ids(config: &Value) -> Result<Vec<String>, String> {
    config["rootfs"]["diff_ids"]
        .as_array()
        .ok_or("image config has no rootfs.diff_ids")?
        .iter()
        .map(|d| {
            d.as_str()
                .map(str::to_owned)
                .ok_or_else(|| "bad diff_id".to_owned())
        })
        .collect()
}

/// ChainID(0) = DiffID(0); ChainID(n) = sha256(ChainID(n-1) + " " + DiffID(n)).
fn chain_ids(config: &Value) -> Result<Vec<String>, String> {
    let mut chains: Vec<String> = Vec::new();
    for diff_id in diff_ids(config)? {
        let next = match chains.last() {
            None => diff_id,
            Some(prev) => {
                let digest = Sha256::digest(format!("{prev} {diff_id}").as_bytes());
                format!("sha256:{}", hex(&digest))
            }
        };
        chains.push(next);
    }
    Ok(chains)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn computes_chain_ids_like_containerd() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let config = json!({"rootfs": {"diff_ids": [a, b]}});
        let chains = chain_ids(&config).unwrap();
        assert_eq!(chains[0], a);
        let want = hex(&Sha256::digest(format!("{a} {b}").as_bytes()));
        assert_eq!(chains[1], format!("sha256:{want}"));
    }

    #[test]
    fn bounds_what_a_registry_can_make_us_allocate() {
        let blob = |size| OciDescriptor {
            digest: "sha256:x".into(),
            size,
            ..Default::default()
        };
        assert_eq!(buffer_capacity(&blob(10)).unwrap(), 10);
        assert_eq!(buffer_capacity(&blob(1 << 30)).unwrap(), 64 * WRITE_CHUNK);
        assert!(buffer_capacity(&blob(1 << 40))
            .unwrap_err()
            .contains("declares"));
        assert!(buffer_capacity(&blob(-1)).is_err());
    }

    #[test]
    fn treats_loopback_registries_as_plain_http() {
        assert!(is_loopback("127.0.0.1:5001"));
        assert!(is_loopback("localhost:5000"));
        assert!(!is_loopback("registry.example:5000"));
    }
}
