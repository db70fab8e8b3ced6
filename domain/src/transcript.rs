//! Transcripts and the download formats they render to. A job whose result is
//! `{"segments": [{"start", "end", "text"}], "language"}` (times in seconds) can be downloaded
//! as plain text, SubRip (SRT), WebVTT or the JSON itself. Pure functions, no IO.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every download format: name, MIME type, file extension, what it is.
pub const FORMATS: &[(&str, &str, &str, &str)] = &[
    (
        "json",
        "application/json",
        "json",
        "The transcript as JSON.",
    ),
    (
        "txt",
        "text/plain; charset=utf-8",
        "txt",
        "The text, one segment per line.",
    ),
    (
        "srt",
        "application/x-subrip; charset=utf-8",
        "srt",
        "SubRip subtitles.",
    ),
    ("vtt", "text/vtt; charset=utf-8", "vtt", "WebVTT subtitles."),
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    pub segments: Vec<Segment>,
    #[serde(default)]
    pub language: Option<String>,
}

impl Transcript {
    /// The transcript in a job result, if the result is one (times non-negative, each segment
    /// ending no earlier than it starts).
    pub fn from_result(result: &Value) -> Option<Self> {
        let transcript: Transcript = serde_json::from_value(result.clone()).ok()?;
        let valid = transcript.segments.iter().all(|s| {
            s.start.is_finite() && s.end.is_finite() && s.start >= 0.0 && s.end >= s.start
        });
        valid.then_some(transcript)
    }

    /// The transcript in `format` (one of `FORMATS`), or `None` for an unknown format.
    pub fn render(&self, format: &str) -> Option<String> {
        Some(match format {
            "json" => serde_json::to_string_pretty(self).ok()?,
            "txt" => self
                .segments
                .iter()
                .map(|s| format!("{}\n", s.text.trim()))
                .collect(),
            "srt" => self
                .segments
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    format!(
                        "{}\n{} --> {}\n{}\n\n",
                        i + 1,
                        timestamp(s.start, ','),
                        timestamp(s.end, ','),
                        cue_text(&s.text)
                    )
                })
                .collect(),
            "vtt" => {
                let mut out = String::from("WEBVTT\n\n");
                for s in &self.segments {
                    out.push_str(&format!(
                        "{} --> {}\n{}\n\n",
                        timestamp(s.start, '.'),
                        timestamp(s.end, '.'),
                        cue_text(&s.text)
                    ));
                }
                out
            }
            _ => return None,
        })
    }
}

/// `HH:MM:SS,mmm` (SRT) or `HH:MM:SS.mmm` (WebVTT), rounded to the millisecond.
fn timestamp(seconds: f64, separator: char) -> String {
    let millis = (seconds * 1000.0).round() as u64;
    let (h, m, s, ms) = (
        millis / 3_600_000,
        millis / 60_000 % 60,
        millis / 1000 % 60,
        millis % 1000,
    );
    format!("{h:02}:{m:02}:{s:02}{separator}{ms:03}")
}

/// A cue's text: trimmed, without blank lines (which would end the cue early) or `-->`
/// (which marks a timing line).
fn cue_text(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
        .replace("-->", "->")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Transcript {
        Transcript::from_result(&json!({
            "language": "en",
            "segments": [
                {"start": 0.0, "end": 2.5, "text": " Hello there. "},
                {"start": 3661.2345, "end": 3662.0, "text": "Two\n\nlines --> arrow"}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn srt_numbers_cues_with_comma_milliseconds_and_no_arrow_in_text() {
        assert_eq!(
            sample().render("srt").unwrap(),
            "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n\
             2\n01:01:01,235 --> 01:01:02,000\nTwo\nlines -> arrow\n\n"
        );
    }

    #[test]
    fn vtt_has_its_header_and_dot_milliseconds() {
        assert_eq!(
            sample().render("vtt").unwrap(),
            "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n\n\
             01:01:01.235 --> 01:01:02.000\nTwo\nlines -> arrow\n\n"
        );
    }

    #[test]
    fn text_is_one_line_per_segment_and_unknown_formats_are_none() {
        assert_eq!(
            sample().render("txt").unwrap(),
            "Hello there.\nTwo\n\nlines --> arrow\n"
        );
        assert!(sample().render("docx").is_none());
    }

    #[test]
    fn results_that_are_not_transcripts_are_refused() {
        assert!(Transcript::from_result(&json!({"ok": true})).is_none());
        assert!(Transcript::from_result(
            &json!({"segments": [{"start": 2.0, "end": 1.0, "text": "backwards"}]})
        )
        .is_none());
        assert!(Transcript::from_result(
            &json!({"segments": [{"start": -1.0, "end": 1.0, "text": "negative"}]})
        )
        .is_none());
    }
}
