//! The WebhookEndpoint aggregate: where a project (or, for an account-wide endpoint, the whole
//! installation) wants its events sent, and which ones. Its
//! signing secrets are not here (secrets never enter an event): they live beside the log, and
//! the `webhook_endpoint.secret_rotated` event only records that a rotation happened.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::{FieldError, ProjectId};

/// The event catalogue: every type a webhook can subscribe to, as sent.
pub const EVENT_TYPES: &[&str] = &[
    "job.queued",
    "job.started",
    "job.progress",
    "job.retrying",
    "job.succeeded",
    "job.failed",
    "job.cancelled",
    "job.metadata_updated",
    "job.approved",
    "job.rejected",
    "job.expired",
    "job.deleted",
    "api_key.created",
    "api_key.updated",
    "api_key.rotated",
    "api_key.revoked",
    "api_key.expired",
    "webhook_endpoint.created",
    "webhook_endpoint.updated",
    "webhook_endpoint.disabled",
    "webhook_endpoint.deleted",
    "webhook_endpoint.secret_rotated",
    "project.created",
    "project.renamed",
    "user.created",
    "user.logged_in",
    "user.logged_out",
    "user.password_changed",
    "user.project_role_granted",
    "user.project_role_revoked",
    PING,
];

/// The test send's type: in the catalogue (an endpoint may subscribe to it), but sent at once
/// by `POST /webhooks/{id}/test`, never a delivery of the log.
pub const PING: &str = "webhook.ping";

/// Whether only account-wide endpoints receive events of `kind`: a user's events (the role ones
/// included) are never sent to a project's endpoints, whatever they subscribe to.
pub fn account_wide_only(kind: &str) -> bool {
    kind.starts_with("user.")
}

/// An endpoint's settings, as created or replaced by an update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointSettings {
    pub url: String,
    pub description: Option<String>,
    /// Event types, or `["*"]` for all.
    pub event_types: Vec<String>,
    pub headers: BTreeMap<String, String>,
    pub rate_limit_per_second: Option<u32>,
    pub enabled: bool,
}

impl EndpointSettings {
    /// Checks the settings a caller gave; the URL's reachability is checked at send time.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let url = self.url.as_str();
        let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
        if !scheme_ok || url.len() > 2000 || url.chars().any(char::is_whitespace) {
            errors.push(FieldError::new(
                "url",
                "must be an http(s) URL of at most 2000 characters",
            ));
        }
        if self.event_types.is_empty() {
            errors.push(FieldError::new(
                "event_types",
                "list the event types, or [\"*\"] for all",
            ));
        }
        for kind in &self.event_types {
            if kind != "*" && !EVENT_TYPES.contains(&kind.as_str()) {
                errors.push(FieldError::new(
                    "event_types",
                    format!("unknown event type `{kind}` (see GET /api/v1/event-types)"),
                ));
            }
        }
        if self.headers.len() > 20 {
            errors.push(FieldError::new("headers", "at most 20 headers"));
        }
        for name in self.headers.keys() {
            let reserved = name.to_ascii_lowercase().starts_with("webhook-")
                || ["host", "content-length", "content-type"]
                    .contains(&name.to_ascii_lowercase().as_str());
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if reserved || !token {
                errors.push(FieldError::new(
                    format!("headers.{name}"),
                    "not a header Herald lets you set",
                ));
            }
        }
        if self.rate_limit_per_second == Some(0) {
            errors.push(FieldError::new("rate_limit_per_second", "must be positive"));
        }
        errors
    }

    /// `validate`, and for an endpoint of a project (`project`), no type that only account-wide
    /// endpoints receive: subscribing to it would be a promise never kept. A type the endpoint
    /// already had (`before`) is let through, so endpoints stored before this check keep their
    /// list through changes to other settings.
    pub fn validate_for(
        &self,
        project: Option<ProjectId>,
        before: Option<&EndpointSettings>,
    ) -> Vec<FieldError> {
        let mut errors = self.validate();
        // One message per field: a URL refused already is not refused again for its host.
        let unsendable = self.unsendable(before);
        let named = |e: &FieldError| errors.iter().any(|seen| seen.field == e.field);
        let unsendable: Vec<FieldError> = unsendable.into_iter().filter(|e| !named(e)).collect();
        errors.extend(unsendable);
        if project.is_none() {
            return errors;
        }
        let had = |kind: &String| before.is_some_and(|b| b.event_types.contains(kind));
        for kind in &self.event_types {
            if account_wide_only(kind) && EVENT_TYPES.contains(&kind.as_str()) && !had(kind) {
                errors.push(FieldError::new(
                    "event_types",
                    format!(
                        "`{kind}` is sent only to account-wide endpoints (`\"project_id\": null`); \
                         a project's endpoints never receive user events"
                    ),
                ));
            }
        }
        errors
    }

    /// A URL the sender could not parse (it would fail every attempt for days) or that holds
    /// credentials (they would be kept in the log as given), and header values
    /// it could not send (control characters: the header would be left out of every request).
    /// Only where they differ from `before`, so an endpoint stored before this check still
    /// takes changes to its other settings.
    fn unsendable(&self, before: Option<&EndpointSettings>) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let url_kept = before.is_some_and(|b| b.url == self.url);
        let parsed = url::Url::parse(&self.url).ok();
        let parses = parsed.as_ref().is_some_and(|url| url.host_str().is_some());
        // Credentials in the URL would enter the event as given (events are kept forever) and
        // reach every reader of the log: they belong in a custom header, whose value is sealed.
        let credentials = parsed
            .as_ref()
            .is_some_and(|url| !url.username().is_empty() || url.password().is_some());
        if !url_kept && !parses {
            errors.push(FieldError::new("url", "must be a URL with a host"));
        } else if !url_kept && credentials {
            errors.push(FieldError::new(
                "url",
                "must not hold a user name or password: send credentials in a custom header \
                 (header values are stored sealed)",
            ));
        }
        for (name, value) in &self.headers {
            let kept = before.is_some_and(|b| b.headers.get(name) == Some(value));
            // The sender's rule (the `http` crate's): no control character but a tab.
            let sendable = value
                .bytes()
                .all(|b| b == b'\t' || (b >= b' ' && b != 0x7f));
            if !kept && !sendable {
                errors.push(FieldError::new(
                    format!("headers.{name}"),
                    "the value must not hold control characters (a tab is fine)",
                ));
            }
        }
        errors
    }

    /// Whether an event of `kind` goes to this endpoint.
    pub fn wants(&self, kind: &str) -> bool {
        self.event_types.iter().any(|t| t == "*" || t == kind)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum EndpointCommand {
    Create {
        /// `None`: an account-wide endpoint, which hears every project and the account's own
        /// events (users, projects).
        project_id: Option<ProjectId>,
        settings: EndpointSettings,
        now: DateTime<Utc>,
    },
    Update {
        settings: EndpointSettings,
        now: DateTime<Utc>,
    },
    Disable {
        reason: String,
        now: DateTime<Utc>,
    },
    RecordSecretRotation {
        previous_valid_until: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    Delete {
        now: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum EndpointEvent {
    #[serde(rename = "webhook_endpoint.created")]
    Created {
        project_id: Option<ProjectId>,
        #[serde(flatten)]
        settings: EndpointSettings,
        at: DateTime<Utc>,
    },
    #[serde(rename = "webhook_endpoint.updated")]
    Updated {
        #[serde(flatten)]
        settings: EndpointSettings,
        at: DateTime<Utc>,
    },
    #[serde(rename = "webhook_endpoint.disabled")]
    Disabled { reason: String, at: DateTime<Utc> },
    #[serde(rename = "webhook_endpoint.secret_rotated")]
    SecretRotated {
        previous_valid_until: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    #[serde(rename = "webhook_endpoint.deleted")]
    Deleted { at: DateTime<Utc> },
}

impl DomainEvent for EndpointEvent {
    fn event_type(&self) -> String {
        match self {
            EndpointEvent::Created { .. } => "webhook_endpoint.created",
            EndpointEvent::Updated { .. } => "webhook_endpoint.updated",
            EndpointEvent::Disabled { .. } => "webhook_endpoint.disabled",
            EndpointEvent::SecretRotated { .. } => "webhook_endpoint.secret_rotated",
            EndpointEvent::Deleted { .. } => "webhook_endpoint.deleted",
        }
        .into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("webhook endpoint already exists")]
    AlreadyExists,
    #[error("webhook endpoint not found")]
    NotFound,
    /// Settings `EndpointSettings::validate_for` refuses, checked against the endpoint as of
    /// the command (so two changes at once cannot slip one past the other).
    #[error("invalid webhook endpoint settings")]
    Invalid(Vec<FieldError>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointState {
    /// `None` for an account-wide endpoint.
    pub project_id: Option<ProjectId>,
    pub settings: EndpointSettings,
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl EndpointState {
    /// Whether events of `kind` from the log are ever delivered to this endpoint: a type of the
    /// catalogue it subscribes to, not the test send's, and for a project's endpoint not one
    /// only account-wide endpoints receive.
    pub fn hears_from_the_log(&self, kind: &str) -> bool {
        EVENT_TYPES.contains(&kind)
            && kind != PING
            && self.settings.wants(kind)
            && !(self.project_id.is_some() && account_wide_only(kind))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    state: Option<EndpointState>,
    deleted: bool,
}

impl WebhookEndpoint {
    /// The endpoint, unless it does not exist or was deleted.
    pub fn state(&self) -> Option<&EndpointState> {
        self.state.as_ref().filter(|_| !self.deleted)
    }

    pub fn decide(&self, command: EndpointCommand) -> Result<Vec<EndpointEvent>, EndpointError> {
        if let EndpointCommand::Create {
            project_id,
            settings,
            now,
        } = command
        {
            if self.state.is_some() {
                return Err(EndpointError::AlreadyExists);
            }
            refuse_invalid(settings.validate_for(project_id, None))?;
            return Ok(vec![EndpointEvent::Created {
                project_id,
                settings,
                at: now,
            }]);
        }
        let state = self.state().ok_or(EndpointError::NotFound)?;
        Ok(match command {
            EndpointCommand::Create { .. } => unreachable!("handled above"),
            EndpointCommand::Update { settings, now } => {
                refuse_invalid(settings.validate_for(state.project_id, Some(&state.settings)))?;
                if settings == state.settings {
                    vec![]
                } else {
                    vec![EndpointEvent::Updated { settings, at: now }]
                }
            }
            EndpointCommand::Disable { .. } if !state.settings.enabled => vec![],
            EndpointCommand::Disable { reason, now } => {
                vec![EndpointEvent::Disabled { reason, at: now }]
            }
            EndpointCommand::RecordSecretRotation {
                previous_valid_until,
                now,
            } => {
                vec![EndpointEvent::SecretRotated {
                    previous_valid_until,
                    at: now,
                }]
            }
            EndpointCommand::Delete { now } => vec![EndpointEvent::Deleted { at: now }],
        })
    }
}

fn refuse_invalid(errors: Vec<FieldError>) -> Result<(), EndpointError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(EndpointError::Invalid(errors))
    }
}

impl Aggregate for WebhookEndpoint {
    const TYPE: &'static str = "webhook_endpoint";
    type Command = EndpointCommand;
    type Event = EndpointEvent;
    type Error = EndpointError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            EndpointEvent::Created {
                project_id,
                settings,
                at,
            } => {
                self.state = Some(EndpointState {
                    project_id,
                    settings,
                    disabled_reason: None,
                    created_at: at,
                    updated_at: at,
                })
            }
            EndpointEvent::Updated { settings, at } => {
                if let Some(state) = &mut self.state {
                    if settings.enabled {
                        state.disabled_reason = None;
                    }
                    state.settings = settings;
                    state.updated_at = at;
                }
            }
            EndpointEvent::Disabled { reason, at } => {
                if let Some(state) = &mut self.state {
                    state.settings.enabled = false;
                    state.disabled_reason = Some(reason);
                    state.updated_at = at;
                }
            }
            EndpointEvent::SecretRotated { at, .. } => {
                if let Some(state) = &mut self.state {
                    state.updated_at = at;
                }
            }
            EndpointEvent::Deleted { .. } => self.deleted = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    fn settings() -> EndpointSettings {
        EndpointSettings {
            url: "https://hooks.example.com/herald".into(),
            description: None,
            event_types: vec!["job.succeeded".into()],
            headers: BTreeMap::new(),
            rate_limit_per_second: None,
            enabled: true,
        }
    }

    fn created() -> EndpointEvent {
        EndpointEvent::Created {
            project_id: Some(ProjectId::from_uuid(uuid::Uuid::from_u128(1))),
            settings: settings(),
            at: t(0),
        }
    }

    /// Every event an aggregate records can be subscribed to by name (`["*"]` sends them all,
    /// so the catalogue must name them all), read from the events' serde names.
    #[test]
    fn the_catalogue_names_every_event_the_aggregates_record() {
        let sources = [
            include_str!("job/events.rs"),
            include_str!("api_key/events.rs"),
            include_str!("user/events.rs"),
            include_str!("project.rs"),
            include_str!("webhook_endpoint.rs"),
        ];
        let mut recorded = 0;
        for source in sources {
            for rest in source.split("#[serde(rename = \"").skip(1) {
                let kind = &rest[..rest.find('"').unwrap()];
                if kind.contains('.') {
                    recorded += 1;
                    assert!(
                        EVENT_TYPES.contains(&kind),
                        "{kind} is not in the catalogue"
                    );
                }
            }
        }
        assert_eq!(
            recorded,
            EVENT_TYPES.len() - 1,
            "all but webhook.ping are recorded events"
        );
    }

    #[test]
    fn a_project_endpoint_cannot_newly_subscribe_to_user_events() {
        let project = Some(ProjectId::from_uuid(uuid::Uuid::from_u128(1)));
        let mut users = settings();
        users.event_types = vec!["job.succeeded".into(), "user.project_role_granted".into()];
        assert!(users.validate().is_empty());
        assert!(users.validate_for(None, None).is_empty(), "account-wide");
        let refused = users.validate_for(project, None);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].field, "event_types");
        assert!(refused[0].message.contains("user.project_role_granted"));
        assert_eq!(users.validate_for(project, Some(&settings())).len(), 1);
        // An endpoint stored with it before keeps it through other changes.
        let mut renamed = users.clone();
        renamed.description = Some("renamed".into());
        assert!(renamed.validate_for(project, Some(&users)).is_empty());
        let mut all = settings();
        all.event_types = vec!["*".into()];
        assert!(
            all.validate_for(project, None).is_empty(),
            "* hears what it can"
        );
        assert!(account_wide_only("user.created") && !account_wide_only("project.created"));
    }

    #[test]
    fn an_endpoint_hears_from_the_log_only_what_it_can_be_sent() {
        let mut endpoint = EndpointState {
            project_id: Some(ProjectId::from_uuid(uuid::Uuid::from_u128(1))),
            settings: settings(),
            disabled_reason: None,
            created_at: t(0),
            updated_at: t(0),
        };
        endpoint.settings.event_types = vec!["*".into()];
        assert!(endpoint.hears_from_the_log("job.queued"));
        for never in ["job.exploded", PING, "user.created"] {
            assert!(!endpoint.hears_from_the_log(never), "{never}");
        }
        endpoint.project_id = None;
        assert!(endpoint.hears_from_the_log("user.created"), "account-wide");
        endpoint.settings.event_types = vec!["job.failed".into()];
        assert!(!endpoint.hears_from_the_log("job.queued"));
    }

    #[test]
    fn settings_are_validated_and_filters_match() {
        assert!(settings().validate().is_empty());
        let mut bad = settings();
        bad.url = "ftp://x".into();
        bad.event_types = vec!["job.exploded".into()];
        bad.headers.insert("webhook-id".into(), "x".into());
        assert_eq!(bad.validate().len(), 3);
        // URLs the sender could not parse, and header values it could not send...
        // A URL refused as a whole is not refused again for its host: one message per field.
        let mut nope = settings();
        nope.url = "nope".into();
        assert_eq!(nope.validate_for(None, None).len(), 1);
        for url in ["http://", "http://[::1", "https://:80/x"] {
            let mut unparsable = settings();
            unparsable.url = url.into();
            assert_eq!(unparsable.validate_for(None, None).len(), 1, "{url}");
        }
        for value in ["line\nbreak", "nul\0", "del\u{7f}"] {
            let mut unsendable = settings();
            unsendable
                .headers
                .insert("x-token".into(), value.to_owned());
            assert_eq!(unsendable.validate_for(None, None).len(), 1, "{value:?}");
            // ...unless stored so before this check: other settings can still change.
            let mut renamed = unsendable.clone();
            renamed.description = Some("renamed".into());
            assert!(renamed.validate_for(None, Some(&unsendable)).is_empty());
        }
        // Credentials in the URL are refused, unless the URL was stored so before this check.
        for url in [
            "https://user:pass@hooks.example.com/x",
            "https://user@h.example/x",
            "https://:pw@h.example/x",
        ] {
            let mut credentials = settings();
            credentials.url = url.into();
            let refused = credentials.validate_for(None, None);
            assert_eq!(refused.len(), 1, "{url}");
            assert!(
                refused[0].message.contains("user name or password"),
                "{url}"
            );
            let mut renamed = credentials.clone();
            renamed.description = Some("renamed".into());
            assert!(renamed.validate_for(None, Some(&credentials)).is_empty());
        }
        let mut fine = settings();
        fine.url = "http://[2001:db8::1]:8080/hook?x=1".into();
        fine.headers
            .insert("x-token".into(), "Bearer a.b\tc ~! caf\u{e9}".into());
        assert!(fine.validate_for(None, None).is_empty());
        assert!(settings().wants("job.succeeded") && !settings().wants("job.failed"));
        let mut all = settings();
        all.event_types = vec!["*".into()];
        assert!(all.wants("webhook_endpoint.disabled"));
    }

    #[test]
    fn disabling_twice_changes_nothing_and_a_deleted_endpoint_is_gone() {
        let disabled = EndpointEvent::Disabled {
            reason: "gone".into(),
            at: t(1),
        };
        TestFramework::<WebhookEndpoint>::with(())
            .given(vec![created(), disabled.clone()])
            .when(EndpointCommand::Disable {
                reason: "again".into(),
                now: t(2),
            })
            .then_expect_events(vec![]);
        // Checked against the endpoint as of the command: a project's endpoint cannot gain a
        // user event type, whatever the caller checked before.
        let mut users = settings();
        users.event_types.push("user.created".into());
        let refused = WebhookEndpoint::default();
        let mut endpoint = refused.clone();
        endpoint.apply(created());
        assert!(matches!(
            endpoint.decide(EndpointCommand::Update { settings: users.clone(), now: t(2) }),
            Err(EndpointError::Invalid(errors)) if errors[0].message.contains("user.created")
        ));
        assert!(matches!(
            refused.decide(EndpointCommand::Create {
                project_id: Some(ProjectId::from_uuid(uuid::Uuid::from_u128(1))),
                settings: users,
                now: t(0),
            }),
            Err(EndpointError::Invalid(_))
        ));
        TestFramework::<WebhookEndpoint>::with(())
            .given(vec![created(), EndpointEvent::Deleted { at: t(1) }])
            .when(EndpointCommand::Update {
                settings: settings(),
                now: t(2),
            })
            .then_expect_error(EndpointError::NotFound);
    }

    #[test]
    fn re_enabling_clears_the_reason() {
        let mut endpoint = WebhookEndpoint::default();
        endpoint.apply(created());
        endpoint.apply(EndpointEvent::Disabled {
            reason: "410".into(),
            at: t(1),
        });
        assert_eq!(
            endpoint.state().unwrap().disabled_reason.as_deref(),
            Some("410")
        );
        endpoint.apply(EndpointEvent::Updated {
            settings: settings(),
            at: t(2),
        });
        assert!(endpoint.state().unwrap().settings.enabled);
        assert!(endpoint.state().unwrap().disabled_reason.is_none());
    }
}
