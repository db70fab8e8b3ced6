//! The examples of `docs/FILES.md` (curl, Python, JavaScript) run against a live server: each
//! uploads a file in chunks, submits jobs (one as a form), plays the worker that reads the
//! input and attaches a result file and a transcript, downloads the result (whole, by range,
//! as subtitles), follows the job's event stream and retries a keyed submission; each ends by
//! printing `verified` after its checks.

use crate::docs::block;
use crate::files_support::bytes;
use crate::support::TestApp;

async fn run_example(heading: &str, fence: &str, program: &str, file_name: &str) {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:write", "jobs:read"]).await;
    let worker = app.create_key(Some(project), &["jobs:work"]).await;
    let code = block("docs/FILES.md", heading, fence);
    let dir = crate::support::scratch::ScratchDir::new("herald-files-doc");
    let script = dir.join(file_name);
    std::fs::write(&script, code).unwrap();
    let input = dir.join("talk.wav");
    std::fs::write(&input, bytes(250_000, 11)).unwrap();
    let mut command = tokio::process::Command::new(program);
    if program == "bash" {
        command.args(["-euo", "pipefail"]);
    }
    let output = command
        .arg(&script)
        .current_dir(&dir)
        .env("BASE", &app.base_url)
        .env("KEY", &key)
        .env("WORKER", &worker)
        .env("FILE", &input)
        .env("CHUNK", "100000")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.trim_end().ends_with("verified"),
        "{heading} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    app.stop().await;
}

#[tokio::test]
async fn the_curl_example_uploads_processes_and_downloads() {
    run_example("### curl", "bash", "bash", "example.sh").await;
}

#[tokio::test]
async fn the_python_example_uploads_processes_and_downloads() {
    run_example(
        "### Python (standard library only)",
        "python",
        "python3",
        "example.py",
    )
    .await;
}

#[tokio::test]
async fn the_javascript_example_uploads_processes_and_downloads() {
    run_example(
        "### JavaScript (Node.js 18+)",
        "javascript",
        "node",
        "example.mjs",
    )
    .await;
}
