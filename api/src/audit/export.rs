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

/// The export as a stream of chunks (a CSV export starts with its header line).
pub fn stream(
    pool: PgPool,
    range: Range,
    format: Format,
) -> impl Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static {
    let header = (format == Format::Csv).then(|| (COLUMNS.join(",") + "\r\n").into_bytes());
    // The state: the last sequence number exported and the log's end when the export began
    // (`None` before the first page); `None` when done.
    let pages = futures::stream::try_unfold(Some((0_i64, None)), move |state| {
        let (pool, range) = (pool.clone(), range.clone());
        async move {
            let Some((after, end)) = state else {
                return Ok(None);
            };
            let end = match end {
                Some(end) => end,
                None => log_end(&pool).await.map_err(std::io::Error::other)?,
            };
            let records = page(&pool, &range, after, end)
                .await
                .map_err(std::io::Error::other)?;
            if records.is_empty() {
                return Ok(None);
            }
            let next =
                (records.len() as i64 == PAGE).then(|| records.last().map(|r| (r.seq, Some(end))));
            let mut out = Vec::new();
            for record in &records {
                match format {
                    Format::Ndjson => {
                        serde_json::to_writer(&mut out, record).map_err(std::io::Error::other)?;
                        out.push(b'\n');
                    }
                    Format::Csv => out.extend(csv_line(record).into_bytes()),
                }
            }
            Ok(Some((out, next.flatten())))
        }
    });
    futures::StreamExt::chain(futures::stream::iter(header.map(Ok)), pages)
}

/// The sequence number of the log's last record (0 when it has none).
async fn log_end(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM request_log")
        .fetch_one(pool)
        .await
}

/// Up to `PAGE` records in `range` after `after`, up to `end`. Sent unprepared, as the list's
/// page is (`super::LIST_SQL`): planned with its values, a project's export reads through
/// `request_log_by_project`, where a kept generic plan would scan the whole log.
async fn page(pool: &PgPool, range: &Range, after: i64, end: i64) -> sqlx::Result<Vec<Record>> {
    let filters = &range.filters;
    sqlx::query_as(
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
    .fetch_all(pool)
    .await
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
