//! Logging for both binaries: `tracing` with the filter from `RUST_LOG`
//! (default `warn,cf_gateway=info,cf_factory=info,cf_bus=info`), as text,
//! or as JSON lines when `CF_LOG_FORMAT=json` (for Kubernetes).

use tracing_subscriber::EnvFilter;

const DEFAULT_FILTER: &str = "warn,cf_gateway=info,cf_factory=info,cf_bus=info";

/// Installs the global subscriber; call once, first thing in `main`.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    if std::env::var("CF_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
