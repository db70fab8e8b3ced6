//! The API key lifecycle as given/when/then specifications.

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;

use super::*;

type Spec = TestFramework<ApiKey>;

fn t(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + seconds, 0).unwrap()
}

fn scopes(list: &[&str]) -> Scopes {
    Scopes::parse(list).unwrap()
}

fn created(expires_at: Option<DateTime<Utc>>) -> ApiKeyEvent {
    ApiKeyEvent::Created {
        name: KeyName::parse("ci").unwrap(),
        description: None,
        project_id: None,
        scopes: scopes(&["jobs:read", "jobs:write"]),
        key_hash: "00".into(),
        start: "hrld_live_abcd".into(),
        expires_at,
        ip_allowlist: IpAllowlist::default(),
        rate_limit: RateLimit::default(),
        rotated_from: None,
        rotation_root: None,
        at: t(0),
    }
}

fn successor() -> KeyId {
    KeyId::parse("successor0000001").unwrap()
}

fn narrow_to(list: &[&str], by_admin: bool) -> ApiKeyCommand {
    ApiKeyCommand::Update {
        update: KeyUpdate {
            scopes: Some(scopes(list)),
            ..KeyUpdate::default()
        },
        by_admin,
        now: t(10),
    }
}

#[test]
fn scopes_can_be_narrowed_but_not_widened_except_by_an_admin() {
    Spec::with(())
        .given(vec![created(None)])
        .when(narrow_to(&["jobs:read"], false))
        .then_expect_events(vec![ApiKeyEvent::Updated {
            name: None,
            description: None,
            scopes: Some(scopes(&["jobs:read"])),
            ip_allowlist: None,
            rate_limit: None,
            at: t(10),
        }]);
    Spec::with(())
        .given(vec![created(None)])
        .when(narrow_to(&["jobs:read", "keys:write"], false))
        .then_expect_error(ApiKeyError::ScopeEscalation);
    let widened = Spec::with(())
        .given(vec![created(None)])
        .when(narrow_to(&["jobs:read", "keys:write"], true))
        .inspect_result();
    assert!(widened.is_ok());
}

#[test]
fn an_update_records_only_what_changed_and_nothing_when_nothing_did() {
    let update = |update: KeyUpdate| ApiKeyCommand::Update {
        update,
        by_admin: true,
        now: t(10),
    };
    let same = KeyUpdate {
        name: Some(KeyName::parse("ci").unwrap()),
        description: Some(None),
        scopes: Some(scopes(&["jobs:write", "jobs:read"])),
        ip_allowlist: Some(IpAllowlist::default()),
        rate_limit: Some(RateLimitChange {
            read_per_minute: LimitChange::Reset,
            ..RateLimitChange::default()
        }),
    };
    Spec::with(())
        .given(vec![created(None)])
        .when(update(same.clone()))
        .then_expect_events(vec![]);
    // An allowlist in another order, or with a network twice, allows the same clients.
    let mut fenced = created(None);
    if let ApiKeyEvent::Created { ip_allowlist, .. } = &mut fenced {
        *ip_allowlist = IpAllowlist::parse(&["10.0.0.0/8", "127.0.0.1"]).unwrap();
    }
    let reordered = IpAllowlist::parse(&["127.0.0.1/32", "10.0.0.0/8", "127.0.0.1"]).unwrap();
    assert_eq!(
        reordered.entries().count(),
        2,
        "a network listed twice is kept once"
    );
    Spec::with(())
        .given(vec![fenced])
        .when(update(KeyUpdate {
            ip_allowlist: Some(reordered),
            ..KeyUpdate::default()
        }))
        .then_expect_events(vec![]);
    let renamed = KeyUpdate {
        name: Some(KeyName::parse("nightly").unwrap()),
        ..same
    };
    Spec::with(())
        .given(vec![created(None)])
        .when(update(renamed))
        .then_expect_events(vec![ApiKeyEvent::Updated {
            name: Some(KeyName::parse("nightly").unwrap()),
            description: None,
            scopes: None,
            ip_allowlist: None,
            rate_limit: None,
            at: t(10),
        }]);
}

#[test]
fn only_an_admin_changes_rate_limits_and_the_change_is_merged() {
    let change = |by_admin| ApiKeyCommand::Update {
        update: KeyUpdate {
            rate_limit: Some(RateLimitChange {
                write_per_minute: LimitChange::Set(3),
                ..RateLimitChange::default()
            }),
            ..KeyUpdate::default()
        },
        by_admin,
        now: t(10),
    };
    Spec::with(())
        .given(vec![created(None)])
        .when(change(false))
        .then_expect_error(ApiKeyError::LimitsAdminOnly);
    let mut limited = created(None);
    if let ApiKeyEvent::Created { rate_limit, .. } = &mut limited {
        rate_limit.read_per_minute = Some(8);
    }
    Spec::with(())
        .given(vec![limited])
        .when(change(true))
        .then_expect_events(vec![ApiKeyEvent::Updated {
            name: None,
            description: None,
            scopes: None,
            ip_allowlist: None,
            rate_limit: Some(RateLimit {
                read_per_minute: Some(8),
                write_per_minute: Some(3),
                daily_quota: None,
            }),
            at: t(10),
        }]);
}

#[test]
fn rotation_keeps_the_old_key_until_the_grace_period_ends_but_never_past_its_expiry() {
    Spec::with(())
        .given(vec![created(None)])
        .when(ApiKeyCommand::Rotate {
            successor: successor(),
            grace_until: t(100),
            now: t(10),
        })
        .then_expect_events(vec![ApiKeyEvent::Rotated {
            successor_id: successor(),
            expires_at: t(100),
            at: t(10),
        }]);
    Spec::with(())
        .given(vec![created(Some(t(50)))])
        .when(ApiKeyCommand::Rotate {
            successor: successor(),
            grace_until: t(100),
            now: t(10),
        })
        .then_expect_events(vec![ApiKeyEvent::Rotated {
            successor_id: successor(),
            expires_at: t(50),
            at: t(10),
        }]);
}

#[test]
fn a_key_is_rotated_once() {
    let rotated = ApiKeyEvent::Rotated {
        successor_id: successor(),
        expires_at: t(100),
        at: t(10),
    };
    Spec::with(())
        .given(vec![created(None), rotated])
        .when(ApiKeyCommand::Rotate {
            successor: successor(),
            grace_until: t(200),
            now: t(20),
        })
        .then_expect_error(ApiKeyError::AlreadyRotated);
}

#[test]
fn an_expired_key_is_not_rotated() {
    Spec::with(())
        .given(vec![created(Some(t(30)))])
        .when(ApiKeyCommand::Rotate {
            successor: successor(),
            grace_until: t(200),
            now: t(30),
        })
        .then_expect_error(ApiKeyError::Expired);
}

#[test]
fn a_revoked_key_accepts_no_further_change() {
    let revoked = ApiKeyEvent::Revoked { at: t(5) };
    Spec::with(())
        .given(vec![created(None)])
        .when(ApiKeyCommand::Revoke { now: t(5) })
        .then_expect_events(vec![revoked.clone()]);
    Spec::with(())
        .given(vec![created(None), revoked.clone()])
        .when(ApiKeyCommand::Revoke { now: t(6) })
        .then_expect_error(ApiKeyError::Revoked);
    Spec::with(())
        .given(vec![created(None), revoked])
        .when(narrow_to(&["jobs:read"], true))
        .then_expect_error(ApiKeyError::Revoked);
}

#[test]
fn a_key_stops_being_active_at_its_expiry_instant() {
    let key = ApiKeyState::fold(None, &created(Some(t(500)))).unwrap();
    assert!(key.is_active(t(500) - Duration::milliseconds(1)));
    assert!(!key.is_active(t(500)));
    assert_eq!(key.status(t(500)), "expired");
}

#[test]
fn a_passed_expiry_is_recorded_once_and_a_future_one_not_at_all() {
    let expired = ApiKeyEvent::Expired {
        expires_at: t(100),
        at: t(130),
    };
    Spec::with(())
        .given(vec![created(Some(t(100)))])
        .when(ApiKeyCommand::Expire { now: t(130) })
        .then_expect_events(vec![expired.clone()]);
    Spec::with(())
        .given(vec![created(Some(t(100))), expired])
        .when(ApiKeyCommand::Expire { now: t(200) })
        .then_expect_events(vec![]);
    Spec::with(())
        .given(vec![created(Some(t(100)))])
        .when(ApiKeyCommand::Expire { now: t(99) })
        .then_expect_events(vec![]);
    Spec::with(())
        .given(vec![created(None)])
        .when(ApiKeyCommand::Expire { now: t(1_000) })
        .then_expect_events(vec![]);
}

#[test]
fn a_key_spends_the_budgets_of_the_first_key_of_its_rotations() {
    let own = KeyId::parse("ownkey0000000001").unwrap();
    let previous = KeyId::parse("previous00000001").unwrap();
    let root = KeyId::parse("rootkey000000001").unwrap();
    let budget_of = |event: ApiKeyEvent| {
        let mut key = ApiKey::default();
        key.apply(event);
        key.state().unwrap().budget_key(&own).clone()
    };
    assert_eq!(budget_of(created(None)), own, "a first key spends its own");
    let mut rotated = created(None);
    if let ApiKeyEvent::Created {
        rotated_from,
        rotation_root,
        ..
    } = &mut rotated
    {
        *rotated_from = Some(previous.clone());
        *rotation_root = Some(root.clone());
    }
    assert_eq!(budget_of(rotated.clone()), root);
    // A successor stored before the root was recorded: the key it replaced stands in.
    let mut stored = serde_json::to_value(&rotated).unwrap();
    stored
        .as_object_mut()
        .unwrap()
        .remove("rotation_root")
        .unwrap();
    let legacy: ApiKeyEvent = serde_json::from_value(stored).unwrap();
    assert_eq!(budget_of(legacy), previous);
}

fn new_key(project_id: Option<ProjectId>, list: &[&str]) -> ApiKeyCommand {
    ApiKeyCommand::Create(
        Box::new(NewApiKey {
            name: KeyName::parse("ops").unwrap(),
            description: None,
            project_id,
            scopes: scopes(list),
            key_hash: "00".into(),
            start: "hrld_live_abcd".into(),
            expires_at: None,
            ip_allowlist: IpAllowlist::default(),
            rate_limit: RateLimit::default(),
            rotated_from: None,
            rotation_root: None,
        }),
        t(0),
    )
}

#[test]
fn the_admin_scope_is_refused_on_a_key_bound_to_a_project() {
    let project = Some(ProjectId::from_uuid(uuid::Uuid::from_u128(7)));
    Spec::with(())
        .given_no_previous_events()
        .when(new_key(project, &["admin"]))
        .then_expect_error(ApiKeyError::AdminScopeOnProjectKey);
    let mut bound = created(None);
    if let ApiKeyEvent::Created { project_id, .. } = &mut bound {
        *project_id = project;
    }
    Spec::with(())
        .given(vec![bound])
        .when(narrow_to(&["admin", "jobs:read"], true))
        .then_expect_error(ApiKeyError::AdminScopeOnProjectKey);
    // A key bound to no project may be made an admin key, by an admin.
    Spec::with(())
        .given(vec![created(None)])
        .when(narrow_to(&["admin"], true))
        .then_expect_events(vec![ApiKeyEvent::Updated {
            name: None,
            description: None,
            scopes: Some(scopes(&["admin"])),
            ip_allowlist: None,
            rate_limit: None,
            at: t(10),
        }]);
}

/// A cleared description is stored as `null` and must read back as cleared, not as unchanged:
/// the projection and every later load of the key read it from the log.
#[test]
fn a_cleared_description_reads_back_from_the_log_as_cleared() {
    let updated = |description| ApiKeyEvent::Updated {
        name: None,
        description,
        scopes: None,
        ip_allowlist: None,
        rate_limit: None,
        at: t(5),
    };
    for event in [
        updated(Some(None)),
        updated(Some(Some("nightly".into()))),
        updated(None),
    ] {
        let stored = serde_json::to_value(&event).unwrap();
        let read: ApiKeyEvent = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(read, event, "{stored}");
    }
    let stored = serde_json::to_value(updated(Some(None))).unwrap();
    assert_eq!(stored["description"], serde_json::Value::Null);
    assert!(serde_json::to_value(updated(None))
        .unwrap()
        .get("description")
        .is_none());
}
