//! Wiring of the webhook machinery (in the `herald-webhooks` crate) to this server's
//! configuration.

use std::sync::Arc;
use std::time::Duration;

use herald_webhooks::dispatcher::{DispatchConfig, Dispatcher};

use crate::state::AppState;

/// The dispatcher of this process, sending through the state's guarded client.
pub fn dispatcher(state: &Arc<AppState>) -> Arc<Dispatcher> {
    let settings = &state.config.webhooks;
    let config = DispatchConfig {
        schedule: settings.schedule().expect("validated at start"),
        request_timeout: Duration::from_secs(settings.request_timeout_seconds),
        per_endpoint_concurrency: settings.per_endpoint_concurrency,
        poll_interval: Duration::from_millis(settings.poll_interval_ms),
        disable_after: Duration::from_secs(settings.disable_after_seconds),
    };
    Arc::new(Dispatcher::new(
        state.pool.clone(),
        state.webhook_sender.clone(),
        config,
        state.dispatcher_inbox.clone(),
    ))
}
