//! Streaming the request log out, as NDJSON (one JSON record per line) or CSV, oldest first.
//! Pages of a thousand records are read one after another by sequence number, so an export of
//! any size holds one page in memory and no connection between pages. An export ends where the
//! log ended when its first page was read: records appended while it streams (on a busy server,
//! possibly faster than it streams) are left to the next export, so every export ends.

use chrono::{DateTime, Utc};
use futures::Stream;
use sqlx::PgPool;
use uuid::Uuid;

use super::Record;

const PAGE: i64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
}

/// Which records to export.
#[derive(Debug, Clone, Default)]
pub struct Range {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// The projects whose records are visible; `None`: all.
    pub projects: Option<Vec<Uuid>>,
    pub filters: Filters,
}

/// The list's filters (`GET /audit/requests`); `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// `api_key` or `user`, with `actor` (its id).
    pub actor_type: Option<&'static str>,
    pub actor: Option<String>,
    pub project: Option<Uuid>,
    pub route: Option<String>,
    /// Matched as given or upper-cased, as the list matches it.
    pub method: Option<String>,
    pub status: Option<i32>,
    pub outcome: Option<String>,
}

const COLUMNS: [&str; 20] = [
    "seq",
    "occurred_at",
    "request_id",
    "actor_type",
    "actor_id",
    "project_id",
    "route",
    "method",
    "path",
    "status",
    "latency_us",
    "request_bytes",
    "response_bytes",
    "client_ip",
    "user_agent",
    "outcome",
    "error_code",
    "prev_hash",
    "hash",
    "chain_format",
];

/// The export as a stream of chunks (a CSV export starts with its header line). The database
/// is asked once before it is returned, so one that does not answer gets an error answer, not
/// a 200. The log's end is read with the first page, when the first chunk is asked for: after
/// the export's own record, which is committed before the response leaves. A page that cannot
/// be read, or that retention overtook (it pruned records after the last one exported while
/// the export ran), ends the export with an error line in place of the rest (`error_line`):
/// the transfer itself ends cleanly (the server ends a failed stream as a finished one), so
/// this line is what tells a client the export is not whole.
pub async fn stream(
    pool: PgPool,
    range: Range,
    format: Format,
) -> sqlx::Result<impl Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static> {
    log_end(&pool).await?;
    let header = (format == Format::Csv).then(|| (COLUMNS.join(",") + "\r\n").into_bytes());
    let pages = futures::stream::try_unfold(Step::Start, move |step| {
        let (pool, range) = (pool.clone(), range.clone());
        async move {
            let (after, end) = match step {
                Step::Done => return Ok(None),
                Step::Start => match log_end(&pool).await {
                    Ok(end) => (0, end),
                    Err(error) => return Ok(Some(cut_short(format, &error, 0))),
                },
                Step::After { after, end } => (after, end),
            };
            let records = match page(&pool, &range, after, end).await {
                Ok(Page::Records(records)) => records,
                Ok(Page::Pruned(to)) => {
                    tracing::warn!(after, to, "an export was overtaken by retention");
                    let detail = format!(
                        "retention pruned the records up to {to} while this export was at \
                             {after}: export again"
                    );
                    return Ok(Some((error_line(format, &detail), Step::Done)));
                }
                Err(error) => return Ok(Some(cut_short(format, &error, after))),
            };
            if records.is_empty() {
                return Ok(None);
            }
            let next = match records.last() {
                Some(last) if records.len() as i64 == PAGE => Step::After {
                    after: last.seq,
                    end,
                },
                _ => Step::Done,
            };
            Ok(Some((render(&records, format)?, next)))
        }
    });
    Ok(futures::StreamExt::chain(
        futures::stream::iter(header.map(Ok)),
        pages,
    ))
}

/// The line that ends an export cut short, in place of the records it could not give: in
/// NDJSON an object with `error` (`code` `EXPORT_INCOMPLETE` and a `detail`) and no `seq`; in
/// CSV a row whose first cell is `error`, then the code and the detail.
fn error_line(format: Format, detail: &str) -> Vec<u8> {
    const CODE: &str = "EXPORT_INCOMPLETE";
    match format {
        Format::Ndjson => {
            let line = serde_json::json!({"error": {"code": CODE, "detail": detail}});
            format!("{line}\n").into_bytes()
        }
        Format::Csv => format!("error,{CODE},{}\r\n", csv_field(detail)).into_bytes(),
    }
}

/// The error line for a page after `after` the database failed to give.
fn cut_short(format: Format, error: &sqlx::Error, after: i64) -> (Vec<u8>, Step) {
    tracing::error!(%error, after, "an export could not read its next page");
    let detail = format!("the records after {after} could not be read: export again");
    (error_line(format, &detail), Step::Done)
}

/// Where an export stands between chunks.
enum Step {
    Start,
    /// The next page starts after `after` and the export ends at `end`.
    After {
        after: i64,
        end: i64,
    },
    Done,
}

fn render(records: &[Record], format: Format) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    for record in records {
        match format {
            Format::Ndjson => {
                serde_json::to_writer(&mut out, record).map_err(std::io::Error::other)?;
                out.push(b'\n');
            }
            Format::Csv => out.extend(csv_line(record).into_bytes()),
        }
    }
    Ok(out)
}

/// The sequence number of the log's last record (0 when it has none).
async fn log_end(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM request_log")
        .fetch_one(pool)
        .await
}

/// A page of an export, or how far retention pruned past where the export was.
enum Page {
    Records(Vec<Record>),
    Pruned(i64),
}

/// Up to `PAGE` records in `range` after `after`, up to `end`, unless retention pruned
/// records after `after` (the anchor is past it): read in one snapshot with the anchor, so a
/// page never silently starts later than the export was. Sent unprepared, as the list's page
/// is (`super::LIST_SQL`): planned with its values, a project's export reads through
/// `request_log_by_project`, where a kept generic plan would scan the whole log.
async fn page(pool: &PgPool, range: &Range, after: i64, end: i64) -> sqlx::Result<Page> {
    let mut snapshot = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *snapshot)
        .await?;
    let pruned: i64 = sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM request_log_anchor")
        .fetch_one(&mut *snapshot)
        .await?;
    if after > 0 && pruned > after {
        return Ok(Page::Pruned(pruned));
    }
    let filters = &range.filters;
    let records = sqlx::query_as(
        "SELECT r.*, \
                coalesce((SELECT p.hash FROM request_log p WHERE p.seq = r.seq - 1), \
                         (SELECT a.hash FROM request_log_anchor a WHERE a.seq = r.seq - 1), \
                         CASE WHEN r.seq = 1 THEN repeat('0', 64) END, '') AS prev_hash \
           FROM request_log r WHERE seq > $1 AND seq <= $6 \
           AND ($2::timestamptz IS NULL OR occurred_at >= $2) \
           AND ($3::timestamptz IS NULL OR occurred_at < $3) \
           AND ($4::uuid[] IS NULL OR project_id = ANY($4)) \
           AND ($7::text IS NULL OR actor_type = $7) AND ($8::text IS NULL OR actor_id = $8) \
           AND ($9::uuid IS NULL OR project_id = $9) AND ($10::text IS NULL OR route = $10) \
           AND ($11::text IS NULL OR method IN ($11, upper($11))) \
           AND ($12::int IS NULL OR status = $12) AND ($13::text IS NULL OR outcome = $13) \
         ORDER BY seq LIMIT $5",
    )
    .persistent(false)
    .bind(after)
    .bind(range.from)
    .bind(range.to)
    .bind(range.projects.clone())
    .bind(PAGE)
    .bind(end)
    .bind(filters.actor_type)
    .bind(&filters.actor)
    .bind(filters.project)
    .bind(&filters.route)
    .bind(&filters.method)
    .bind(filters.status)
    .bind(&filters.outcome)
    .fetch_all(&mut *snapshot)
    .await?;
    snapshot.commit().await?;
    Ok(Page::Records(records))
}

fn csv_line(r: &Record) -> String {
    // Text a caller chose (its request id, user agent, path) is defused; numbers are not, so
    // the -1 of an unknown size stays a number.
    let text = |v: &str| defused(v).into_owned();
    let opt = |v: &Option<String>| text(v.as_deref().unwrap_or_default());
    let fields = [
        r.seq.to_string(),
        r.occurred_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        text(&r.request_id),
        opt(&r.actor_type),
        opt(&r.actor_id),
        r.project_id.map(|p| p.to_string()).unwrap_or_default(),
        text(&r.route),
        text(&r.method),
        text(&r.path),
        r.status.to_string(),
        r.latency_us.to_string(),
        r.request_bytes.to_string(),
        r.response_bytes.to_string(),
        opt(&r.client_ip),
        opt(&r.user_agent),
        text(&r.outcome),
        opt(&r.error_code),
        r.prev_hash.clone(),
        r.hash.clone(),
        r.chain_format.to_string(),
    ];
    let mut line = fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

/// A text cell a spreadsheet would run as a formula (it starts with `=`, `+`, `-`, `@`, a tab
/// or a carriage return) gets a leading `'`, which spreadsheets show as text: a user agent of
/// `=HYPERLINK(…)` must not become a live link in an auditor's sheet. NDJSON keeps every value
/// as recorded.
fn defused(value: &str) -> std::borrow::Cow<'_, str> {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}").into()
    } else {
        value.into()
    }
}

/// RFC 4180: a field with a comma, quote or line break is quoted, its quotes doubled (and each
/// line ends with CRLF).
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::{csv_field, defused};

    #[test]
    fn text_a_spreadsheet_would_run_is_defused() {
        assert_eq!(
            defused("=HYPERLINK(\"http://x\")"),
            "'=HYPERLINK(\"http://x\")"
        );
        assert_eq!(defused("+1"), "'+1");
        assert_eq!(defused("-cmd"), "'-cmd");
        assert_eq!(defused("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(defused("\tx"), "'\tx");
        assert_eq!(defused("curl/8.5"), "curl/8.5");
        assert_eq!(defused("/api/v1/jobs"), "/api/v1/jobs");
    }

    #[test]
    fn fields_with_separators_or_quotes_are_quoted() {
        assert_eq!(csv_field("curl/8.5"), "curl/8.5");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }
}
