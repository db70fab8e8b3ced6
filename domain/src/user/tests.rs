//! The user's rules as given/when/then specifications.

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;

use super::*;

type Spec = TestFramework<User>;

fn t(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + seconds, 0).unwrap()
}

fn created() -> UserEvent {
    UserEvent::Created {
        email: Email::parse("ada@example.com").unwrap(),
        role: AccountRole::Member,
        at: t(0),
    }
}

fn session(n: u128) -> SessionId {
    SessionId::from_uuid(uuid::Uuid::from_u128(n))
}

fn logged_in(n: u128, at: i64) -> UserEvent {
    UserEvent::LoggedIn {
        session_id: session(n),
        expires_at: t(at) + Duration::hours(1),
        at: t(at),
    }
}

fn state_after(events: Vec<UserEvent>) -> UserState {
    let mut user = User::default();
    for event in events {
        user.apply(event);
    }
    user.state().cloned().expect("created")
}

#[test]
fn a_user_is_created_once() {
    Spec::with(())
        .given(vec![created()])
        .when(UserCommand::Create {
            email: Email::parse("ada@example.com").unwrap(),
            role: AccountRole::Admin,
            now: t(1),
        })
        .then_expect_error(UserError::AlreadyExists);
}

#[test]
fn commands_for_an_unknown_user_are_refused() {
    Spec::with(())
        .given_no_previous_events()
        .when(UserCommand::StartSession {
            session_id: session(1),
            expires_at: t(100),
            now: t(0),
        })
        .then_expect_error(UserError::NotFound);
}

#[test]
fn a_session_lives_until_its_expiry() {
    let state = state_after(vec![created(), logged_in(1, 10)]);
    assert!(state.session_active(session(1), t(10)));
    assert!(!state.session_active(session(1), t(10) + Duration::hours(1)));
    assert!(!state.session_active(session(2), t(10)));
}

#[test]
fn logging_out_ends_that_session_only() {
    Spec::with(())
        .given(vec![created(), logged_in(1, 10), logged_in(2, 11)])
        .when(UserCommand::EndSession {
            session_id: session(1),
            now: t(12),
        })
        .then_expect_events(vec![UserEvent::LoggedOut {
            session_id: session(1),
            at: t(12),
        }]);
    let state = state_after(vec![
        created(),
        logged_in(1, 10),
        logged_in(2, 11),
        UserEvent::LoggedOut {
            session_id: session(1),
            at: t(12),
        },
    ]);
    assert!(!state.session_active(session(1), t(13)));
    assert!(state.session_active(session(2), t(13)));
}

#[test]
fn logging_out_twice_changes_nothing() {
    Spec::with(())
        .given(vec![
            created(),
            logged_in(1, 10),
            UserEvent::LoggedOut {
                session_id: session(1),
                at: t(12),
            },
        ])
        .when(UserCommand::EndSession {
            session_id: session(1),
            now: t(13),
        })
        .then_expect_events(vec![]);
}

#[test]
fn a_password_change_ends_every_other_session() {
    let state = state_after(vec![
        created(),
        logged_in(1, 10),
        logged_in(2, 11),
        UserEvent::PasswordChanged {
            kept_session: Some(session(2)),
            at: t(12),
        },
    ]);
    assert!(!state.session_active(session(1), t(13)));
    assert!(state.session_active(session(2), t(13)));
}

#[test]
fn expired_sessions_are_pruned_when_a_new_one_starts() {
    let state = state_after(vec![created(), logged_in(1, 10), logged_in(2, 10 + 7200)]);
    assert_eq!(state.sessions.len(), 1);
}

#[test]
fn a_project_role_is_granted_changed_and_removed() {
    let project = ProjectId::from_uuid(uuid::Uuid::from_u128(7));
    let granted = UserEvent::ProjectRoleGranted {
        project_id: project,
        role: ProjectRole::Viewer,
        at: t(1),
    };
    Spec::with(())
        .given(vec![created(), granted.clone()])
        .when(UserCommand::SetProjectRole {
            project_id: project,
            role: ProjectRole::Viewer,
            now: t(2),
        })
        .then_expect_events(vec![]);
    Spec::with(())
        .given(vec![created(), granted.clone()])
        .when(UserCommand::SetProjectRole {
            project_id: project,
            role: ProjectRole::Owner,
            now: t(2),
        })
        .then_expect_events(vec![UserEvent::ProjectRoleGranted {
            project_id: project,
            role: ProjectRole::Owner,
            at: t(2),
        }]);
    Spec::with(())
        .given(vec![created()])
        .when(UserCommand::RemoveFromProject {
            project_id: project,
            now: t(2),
        })
        .then_expect_error(UserError::NotAMember);
    let state = state_after(vec![
        created(),
        granted,
        UserEvent::ProjectRoleRevoked {
            project_id: project,
            at: t(3),
        },
    ]);
    assert!(state.projects.is_empty());
}
