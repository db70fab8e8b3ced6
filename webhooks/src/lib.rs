//! Webhooks: the webhook projector turns events into delivery rows through the same gap-free
//! catch-up reader as the read models (in the same transaction as its checkpoint, so no event
//! is ever missed or sent twice by construction), and the dispatcher signs (Standard Webhooks),
//! sends, retries and records every attempt. `guard` keeps deliveries away from internal
//! addresses; `signature` owns the signing scheme; `header_seal` keeps endpoints' header values
//! sealed at rest, on the `sealer` primitive. This crate knows nothing of the API's routes.

pub mod dispatcher;
pub mod guard;
pub mod header_seal;
pub mod inbox;
pub mod projector;
pub mod sealer;
pub mod sender;
pub mod signature;
