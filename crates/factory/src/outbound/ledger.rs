//! [`KvLedger`]: the `RequestLedger` port on a NATS JetStream key-value
//! bucket. Entries expire with the bucket's max age (the configured
//! correlation-id memory) and survive restarts of every component.

use async_nats::jetstream::kv::{self, CreateErrorKind};
use cf_core::ports::{LedgerEntry, LedgerError, RequestLedger};
use cf_core::request::hex;
use cf_core::CorrelationId;
use sha2::{Digest, Sha256};

/// The request ledger in a JetStream KV bucket.
#[derive(Clone)]
pub struct KvLedger {
    store: kv::Store,
}

impl KvLedger {
    /// A ledger on `store` (see `cf_bus::ensure_topology`).
    pub fn new(store: kv::Store) -> Self {
        Self { store }
    }
}

/// KV keys allow few characters; correlation-ids are arbitrary strings.
fn key(id: &CorrelationId) -> String {
    hex(&Sha256::digest(id.as_str().as_bytes()))
}

fn decode(bytes: &[u8]) -> Result<LedgerEntry, LedgerError> {
    serde_json::from_slice(bytes).map_err(|e| LedgerError(format!("corrupt ledger entry: {e}")))
}

fn encode(entry: &LedgerEntry) -> Result<bytes::Bytes, LedgerError> {
    serde_json::to_vec(entry)
        .map(Into::into)
        .map_err(|e| LedgerError(format!("cannot encode ledger entry: {e}")))
}

impl RequestLedger for KvLedger {
    async fn claim(
        &self,
        id: &CorrelationId,
        entry: LedgerEntry,
    ) -> Result<LedgerEntry, LedgerError> {
        let key = key(id);
        match self.store.create(&key, encode(&entry)?).await {
            Ok(_) => return Ok(entry),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(LedgerError(format!("failed to claim: {e}"))),
        }
        match self.store.get(&key).await {
            Ok(Some(bytes)) => decode(&bytes),
            // Expired between the two calls: the next delivery claims anew.
            Ok(None) => Err(LedgerError("entry vanished while claiming".into())),
            Err(e) => Err(LedgerError(format!("failed to read: {e}"))),
        }
    }

    async fn settle(&self, id: &CorrelationId, entry: &LedgerEntry) -> Result<(), LedgerError> {
        self.store
            .put(key(id), encode(entry)?)
            .await
            .map(|_| ())
            .map_err(|e| LedgerError(format!("failed to settle: {e}")))
    }
}
