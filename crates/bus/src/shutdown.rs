//! Waiting for the signal that asks a service to stop.

use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info};

/// Returns once SIGTERM or SIGINT arrives. If the handlers cannot be
/// installed the service cannot be stopped gracefully, so this says so and
/// never returns (the service is then stopped with SIGKILL).
pub async fn requested() {
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => info!("terminated"),
            _ = int.recv() => info!("interrupted"),
        },
        (Err(e), _) | (_, Err(e)) => {
            error!(error = %e, "cannot listen for SIGTERM and SIGINT");
            std::future::pending::<()>().await;
        }
    }
}
