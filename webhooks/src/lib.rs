//! Webhooks (not built yet; see the webhooks issue): the webhook projector that turns events
//! into delivery rows through the same gap-free catch-up reader as the read models, and the
//! dispatcher that signs (Standard Webhooks), sends, retries and records attempts. This crate
//! will not know the API's HTTP routes. It is a member of the workspace today so the layout of
//! DESIGN §1 is in place.
