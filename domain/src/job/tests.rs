//! The job lifecycle as given/when/then specifications (no database, no clock).

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use serde_json::json;

use super::*;
use crate::{KeyId, ProjectId};

type Spec = TestFramework<Job>;

fn t(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + seconds, 0).unwrap()
}

fn worker() -> KeyId {
    KeyId::parse("workerkey0000001").unwrap()
}

fn other_worker() -> KeyId {
    KeyId::parse("workerkey0000002").unwrap()
}

fn project() -> ProjectId {
    ProjectId::from_uuid(uuid::Uuid::nil())
}

fn queued(max_attempts: i64) -> JobEvent {
    JobEvent::Queued {
        project_id: project(),
        kind: JobKind::parse("captions.generate").unwrap(),
        input: json!({"url": "https://example.com/a.mp4"}),
        priority: Priority::default(),
        metadata: Metadata::default(),
        max_attempts: MaxAttempts::parse(max_attempts).unwrap(),
        input_files: vec![],
        at: t(0),
    }
}

fn started(attempt: u32, at: i64) -> JobEvent {
    JobEvent::Started {
        worker_key_id: worker(),
        attempt,
        lease_expires_at: t(at + 30),
        at: t(at),
    }
}

fn lease(at: i64) -> JobCommand {
    JobCommand::Lease {
        worker: worker(),
        lease: Duration::seconds(30),
        now: t(at),
    }
}

fn heartbeat(by: KeyId, at: i64) -> JobCommand {
    JobCommand::Heartbeat {
        worker: by,
        percent: Some(Percent::parse(40).unwrap()),
        stage: Some(Some("encode".into())),
        message: None,
        lease: Some(Duration::seconds(30)),
        max_lease: Duration::hours(1),
        now: t(at),
    }
}

fn succeeded() -> JobEvent {
    JobEvent::Succeeded {
        result: json!({"ok": true}),
        files: vec![],
        at: t(20),
    }
}

fn file(name: &str) -> crate::FileRef {
    crate::FileRef {
        id: uuid::Uuid::from_u128(name.len() as u128),
        filename: name.into(),
        content_type: "audio/wav".into(),
        size: 44,
        sha256: "ab".repeat(32),
    }
}

#[test]
fn submitting_a_new_job_queues_it() {
    let submit = SubmitJob {
        project_id: project(),
        kind: JobKind::parse("captions.generate").unwrap(),
        input: json!({"url": "https://example.com/a.mp4"}),
        priority: Priority::default(),
        metadata: Metadata::default(),
        max_attempts: MaxAttempts::parse(3).unwrap(),
        input_files: vec![],
    };
    Spec::with(())
        .given_no_previous_events()
        .when(JobCommand::Submit(submit, t(0)))
        .then_expect_events(vec![queued(3)]);
}

#[test]
fn commands_on_a_job_that_was_never_submitted_find_nothing() {
    Spec::with(())
        .given_no_previous_events()
        .when(JobCommand::Cancel { now: t(1) })
        .then_expect_error(JobError::NotFound);
}

#[test]
fn a_worker_leases_a_queued_job_with_a_deadline() {
    Spec::with(())
        .given(vec![queued(3)])
        .when(lease(10))
        .then_expect_events(vec![started(1, 10)]);
}

#[test]
fn a_running_job_cannot_be_leased_again() {
    Spec::with(())
        .given(vec![queued(3), started(1, 10)])
        .when(lease(11))
        .then_expect_error(JobError::InvalidTransition {
            action: "lease",
            from: JobStatus::Running,
        });
}

#[test]
fn a_heartbeat_records_progress_and_extends_the_lease() {
    Spec::with(())
        .given(vec![queued(3), started(1, 10)])
        .when(heartbeat(worker(), 20))
        .then_expect_events(vec![JobEvent::Progress {
            percent: Percent::parse(40).unwrap(),
            stage: Some("encode".into()),
            message: None,
            lease_expires_at: t(50),
            at: t(20),
        }]);
}

/// A heartbeat naming nothing only keeps the lease alive: the progress, stage and message
/// stay, and the lease is extended by the length it was last taken or extended for (not the
/// server's default).
#[test]
fn a_bare_heartbeat_keeps_the_progress_and_the_lease_length() {
    let keep_alive = |at| JobCommand::Heartbeat {
        worker: worker(),
        percent: None,
        stage: None,
        message: None,
        lease: None,
        max_lease: Duration::hours(1),
        now: t(at),
    };
    Spec::with(())
        .given(vec![queued(3), started(1, 10)])
        .when(keep_alive(25))
        .then_expect_events(vec![JobEvent::Progress {
            percent: Percent::default(),
            stage: None,
            message: None,
            lease_expires_at: t(55),
            at: t(25),
        }]);
    let extended = JobEvent::Progress {
        percent: Percent::parse(60).unwrap(),
        stage: Some("encode".into()),
        message: Some("frame 12".into()),
        lease_expires_at: t(80),
        at: t(20),
    };
    Spec::with(())
        .given(vec![queued(3), started(1, 10), extended.clone()])
        .when(keep_alive(30))
        .then_expect_events(vec![JobEvent::Progress {
            percent: Percent::parse(60).unwrap(),
            stage: Some("encode".into()),
            message: Some("frame 12".into()),
            lease_expires_at: t(90),
            at: t(30),
        }]);
    // An empty stage or message clears it; a kept length is cut to the server's limit now.
    Spec::with(())
        .given(vec![queued(3), started(1, 10), extended])
        .when(JobCommand::Heartbeat {
            worker: worker(),
            percent: None,
            stage: Some(None),
            message: None,
            lease: None,
            max_lease: Duration::seconds(45),
            now: t(30),
        })
        .then_expect_events(vec![JobEvent::Progress {
            percent: Percent::parse(60).unwrap(),
            stage: None,
            message: Some("frame 12".into()),
            lease_expires_at: t(75),
            at: t(30),
        }]);
}

#[test]
fn only_the_lease_holder_may_heartbeat() {
    Spec::with(())
        .given(vec![queued(3), started(1, 10)])
        .when(heartbeat(other_worker(), 20))
        .then_expect_error(JobError::LeaseNotHeld);
}

#[test]
fn a_heartbeat_after_the_lease_deadline_is_refused() {
    Spec::with(())
        .given(vec![queued(3), started(1, 10)])
        .when(heartbeat(worker(), 41))
        .then_expect_error(JobError::LeaseExpired);
}

#[test]
fn completing_a_running_job_records_its_result() {
    Spec::with(())
        .given(vec![queued(3), started(1, 10)])
        .when(JobCommand::Complete {
            worker: worker(),
            result: json!({"ok": true}),
            files: vec![],
            now: t(20),
        })
        .then_expect_events(vec![succeeded()]);
}

#[test]
fn input_and_result_files_are_recorded_with_the_job() {
    let mut submit_event = queued(3);
    if let JobEvent::Queued { input_files, .. } = &mut submit_event {
        input_files.push(file("talk.wav"));
    }
    let events = Spec::with(())
        .given(vec![submit_event.clone(), started(1, 10)])
        .when(JobCommand::Complete {
            worker: worker(),
            result: json!({"ok": true}),
            files: vec![file("talk.srt.txt")],
            now: t(20),
        })
        .inspect_result()
        .expect("completes");
    assert_eq!(
        events,
        vec![JobEvent::Succeeded {
            result: json!({"ok": true}),
            files: vec![file("talk.srt.txt")],
            at: t(20),
        }]
    );
    let state = [submit_event, started(1, 10), events[0].clone()]
        .iter()
        .fold(None, JobState::fold)
        .expect("a job");
    assert_eq!(state.input_files, vec![file("talk.wav")]);
    assert_eq!(state.result_files, vec![file("talk.srt.txt")]);
}

#[test]
fn events_recorded_before_files_existed_still_read() {
    let old = json!({"type": "job.succeeded", "result": {"ok": true}, "at": t(20)});
    let event: JobEvent = serde_json::from_value(old).expect("an old event reads");
    assert_eq!(event, succeeded());
    // And an event without files is stored without the field, as before.
    let stored = serde_json::to_value(succeeded()).unwrap();
    assert!(stored.get("files").is_none());
}

#[test]
fn a_retryable_failure_requeues_while_attempts_remain() {
    Spec::with(())
        .given(vec![queued(3), started(1, 10)])
        .when(JobCommand::Fail {
            worker: worker(),
            error: "gpu fell over".into(),
            retryable: true,
            now: t(20),
        })
        .then_expect_events(vec![JobEvent::Retrying {
            attempt: 1,
            reason: RetryReason::WorkerFailed,
            error: Some("gpu fell over".into()),
            at: t(20),
        }]);
}

#[test]
fn a_non_retryable_failure_fails_the_job_at_once() {
    Spec::with(())
        .given(vec![queued(3), started(1, 10)])
        .when(JobCommand::Fail {
            worker: worker(),
            error: "bad input".into(),
            retryable: false,
            now: t(20),
        })
        .then_expect_events(vec![JobEvent::Failed {
            attempt: 1,
            reason: RetryReason::WorkerFailed,
            error: Some("bad input".into()),
            at: t(20),
        }]);
}

#[test]
fn an_expired_lease_requeues_the_job_until_max_attempts() {
    let expired_once = JobEvent::Retrying {
        attempt: 1,
        reason: RetryReason::LeaseExpired,
        error: Some("the worker's lease expired".into()),
        at: t(41),
    };
    Spec::with(())
        .given(vec![queued(2), started(1, 10)])
        .when(JobCommand::ExpireLease { now: t(41) })
        .then_expect_events(vec![expired_once.clone()]);
    Spec::with(())
        .given(vec![
            queued(2),
            started(1, 10),
            expired_once,
            started(2, 50),
        ])
        .when(JobCommand::ExpireLease { now: t(81) })
        .then_expect_events(vec![JobEvent::Failed {
            attempt: 2,
            reason: RetryReason::LeaseExpired,
            error: Some("the worker's lease expired".into()),
            at: t(81),
        }]);
}

/// The worker whose lease ran out is told so, whether the job went back to the queue or failed,
/// until the job is leased again; another worker is told the job's state.
#[test]
fn a_worker_whose_lease_was_taken_back_is_told_it_expired() {
    let expired = |attempt, at| JobEvent::Retrying {
        attempt,
        reason: RetryReason::LeaseExpired,
        error: None,
        at: t(at),
    };
    let requeued = vec![queued(3), started(1, 10), expired(1, 41)];
    Spec::with(())
        .given(requeued.clone())
        .when(heartbeat(worker(), 45))
        .then_expect_error(JobError::LeaseExpired);
    Spec::with(())
        .given(requeued.clone())
        .when(heartbeat(other_worker(), 45))
        .then_expect_error(JobError::InvalidTransition {
            action: "heartbeat",
            from: JobStatus::Queued,
        });
    let failed = JobEvent::Failed {
        attempt: 1,
        reason: RetryReason::LeaseExpired,
        error: None,
        at: t(41),
    };
    Spec::with(())
        .given(vec![queued(1), started(1, 10), failed])
        .when(JobCommand::Complete {
            worker: worker(),
            result: json!({}),
            files: vec![],
            now: t(45),
        })
        .then_expect_error(JobError::LeaseExpired);
    // Leased again (by the same worker, even): its new lease is what counts.
    let mut again = requeued;
    again.push(started(2, 50));
    Spec::with(())
        .given(again)
        .when(heartbeat(worker(), 55))
        .then_expect_events(vec![JobEvent::Progress {
            percent: Percent::parse(40).unwrap(),
            stage: Some("encode".into()),
            message: None,
            lease_expires_at: t(85),
            at: t(55),
        }]);
}

#[test]
fn a_lease_that_has_not_expired_is_left_alone() {
    Spec::with(())
        .given(vec![queued(3), started(1, 10)])
        .when(JobCommand::ExpireLease { now: t(39) })
        .then_expect_events(vec![]);
}

#[test]
fn cancelling_a_running_job_is_seen_by_its_worker_at_the_next_heartbeat() {
    let cancelled = JobEvent::Cancelled {
        was_running: true,
        at: t(15),
    };
    Spec::with(())
        .given(vec![queued(3), started(1, 10)])
        .when(JobCommand::Cancel { now: t(15) })
        .then_expect_events(vec![cancelled.clone()]);

    let mut job = Job::default();
    for event in [queued(3), started(1, 10), cancelled] {
        cqrs_es::Aggregate::apply(&mut job, event);
    }
    assert_eq!(job.decide(heartbeat(worker(), 20)), Ok(vec![]));
    assert!(job.state().unwrap().cancel_requested);
    assert_eq!(job.state().unwrap().status, JobStatus::Cancelled);
}

#[test]
fn a_finished_job_cannot_be_cancelled() {
    Spec::with(())
        .given(vec![queued(3), started(1, 10), succeeded()])
        .when(JobCommand::Cancel { now: t(30) })
        .then_expect_error(JobError::InvalidTransition {
            action: "cancel",
            from: JobStatus::Succeeded,
        });
}

#[test]
fn only_a_succeeded_job_can_be_reviewed_and_only_once() {
    Spec::with(())
        .given(vec![queued(3), started(1, 10)])
        .when(JobCommand::Approve {
            comment: None,
            now: t(30),
        })
        .then_expect_error(JobError::InvalidTransition {
            action: "approve",
            from: JobStatus::Running,
        });
    let approved = JobEvent::Approved {
        comment: Some("looks right".into()),
        at: t(30),
    };
    Spec::with(())
        .given(vec![queued(3), started(1, 10), succeeded()])
        .when(JobCommand::Approve {
            comment: Some("looks right".into()),
            now: t(30),
        })
        .then_expect_events(vec![approved.clone()]);
    Spec::with(())
        .given(vec![queued(3), started(1, 10), succeeded(), approved])
        .when(JobCommand::Reject {
            comment: None,
            now: t(31),
        })
        .then_expect_error(JobError::AlreadyReviewed {
            action: "reject",
            approved: true,
        });
    assert_eq!(
        JobError::AlreadyReviewed {
            action: "reject",
            approved: true
        }
        .to_string(),
        "cannot reject a job that was approved already"
    );
}

#[test]
fn metadata_updates_merge_and_are_size_checked() {
    let patch = MetadataPatch::parse([("team".into(), Some("render".into()))].into()).unwrap();
    Spec::with(())
        .given(vec![queued(3)])
        .when(JobCommand::UpdateMetadata {
            patch: patch.clone(),
            now: t(5),
        })
        .then_expect_events(vec![JobEvent::MetadataUpdated {
            patch: patch.clone(),
            at: t(5),
        }]);
    // A patch that changes nothing records nothing: empty, a value it has, a key it lacks.
    let set = JobEvent::MetadataUpdated {
        patch: patch.clone(),
        at: t(5),
    };
    for unchanged in [
        MetadataPatch::default(),
        patch,
        MetadataPatch::parse([("absent".into(), None)].into()).unwrap(),
    ] {
        Spec::with(())
            .given(vec![queued(3), set.clone()])
            .when(JobCommand::UpdateMetadata {
                patch: unchanged,
                now: t(6),
            })
            .then_expect_events(vec![]);
    }
    let too_many = (0..51)
        .map(|i| (format!("k{i}"), Some("v".to_string())))
        .collect();
    let result = Spec::with(())
        .given(vec![queued(3)])
        .when(JobCommand::UpdateMetadata {
            patch: MetadataPatch::parse(too_many).unwrap(),
            now: t(5),
        })
        .inspect_result();
    assert!(matches!(result, Err(JobError::Invalid(_))));
}

#[test]
fn a_deleted_job_is_gone_for_every_command() {
    Spec::with(())
        .given(vec![queued(3)])
        .when(JobCommand::Delete { now: t(5) })
        .then_expect_events(vec![JobEvent::Deleted { at: t(5) }]);
    Spec::with(())
        .given(vec![queued(3), JobEvent::Deleted { at: t(5) }])
        .when(lease(6))
        .then_expect_error(JobError::NotFound);
}

#[test]
fn a_running_job_must_be_cancelled_before_it_is_deleted() {
    Spec::with(())
        .given(vec![queued(3), started(1, 10)])
        .when(JobCommand::Delete { now: t(12) })
        .then_expect_error(JobError::InvalidTransition {
            action: "delete",
            from: JobStatus::Running,
        });
}

#[test]
fn events_serialize_with_their_catalogue_name_as_type() {
    let value = serde_json::to_value(queued(3)).unwrap();
    assert_eq!(value["type"], "job.queued");
    let back: JobEvent = serde_json::from_value(value).unwrap();
    assert_eq!(back, queued(3));
}

#[test]
fn a_finished_job_expires_once_its_retention_has_passed() {
    let expire = |at| JobCommand::Expire {
        retention: Duration::seconds(60),
        now: t(at),
    };
    // Succeeded at t(20): due at t(80), not before, and only once.
    let finished = vec![queued(3), started(1, 1), succeeded()];
    Spec::with(())
        .given(finished.clone())
        .when(expire(79))
        .then_expect_events(vec![]);
    Spec::with(())
        .given(finished.clone())
        .when(expire(80))
        .then_expect_events(vec![JobEvent::Expired { at: t(80) }]);
    let mut expired = finished;
    expired.push(JobEvent::Expired { at: t(80) });
    Spec::with(())
        .given(expired)
        .when(expire(500))
        .then_expect_events(vec![]);
    // A job still queued or running never expires.
    Spec::with(())
        .given(vec![queued(3), started(1, 1)])
        .when(expire(10_000))
        .then_expect_events(vec![]);
}
