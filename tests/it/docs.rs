//! Examples in the docs are run, so they stay true: the README's quick start runs with bash and
//! curl against a live server, using the real `herald` binary for the admin steps.

use crate::support::{TestApp, PEPPER};

/// The first ```bash block after `heading` in a markdown file of the repository.
fn bash_block(file: &str, heading: &str) -> String {
    block(file, heading, "bash")
}

/// The first ```<language> block after `heading` in a markdown file of the repository.
pub fn block(file: &str, heading: &str, language: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(file);
    let text = std::fs::read_to_string(path).unwrap();
    let section = &text[text
        .find(heading)
        .unwrap_or_else(|| panic!("{heading} in {file}"))..];
    let fence = format!("```{language}\n");
    let start = section.find(&fence).expect("a code block") + fence.len();
    let end = start + section[start..].find("```").expect("a closed block");
    section[start..end].to_owned()
}

#[tokio::test]
async fn the_readme_quick_start_works_against_a_live_server() {
    let app = TestApp::spawn().await;
    let script = bash_block("README.md", "## Quick start");
    let data_dir = crate::support::scratch::ScratchDir::new("herald-docs");
    let output = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("HERALD", crate::projections::herald_binary())
        .env("BASE", &app.base_url)
        .env("DATABASE_URL", &app.database_url)
        .env("HERALD_API_KEY_PEPPER", PEPPER)
        .env("HERALD_DATA_DIR", &*data_dir)
        .env("HERALD_LOG", "warn")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(r#""status":"succeeded""#), "{stdout}");
    assert!(
        stdout.contains(r#""url":"s3://renders/intro.mp4""#),
        "{stdout}"
    );
    assert!(stdout.contains("job.succeeded"), "{stdout}");
}

/// Runs one example of the authentication guide against a live server.
async fn run_auth_example(language: &str, program: &str, args: &[&str]) {
    let app = TestApp::spawn().await;
    let (_, key) = app
        .project_with_key(&["keys:read", "keys:write", "jobs:read"])
        .await;
    app.create_user("docs@example.com", crate::support::PASSWORD, false)
        .await;
    let code = block(
        "docs/AUTHENTICATION.md",
        &format!("### {language}"),
        program_fence(language),
    );
    let dir = crate::support::scratch::ScratchDir::new("herald-example");
    let file = dir.join(match language {
        "Python (standard library only)" => "example.py",
        "JavaScript (Node.js 18+)" => "example.mjs",
        _ => "example.sh",
    });
    std::fs::write(&file, code).unwrap();
    let output = tokio::process::Command::new(program)
        .args(args)
        .arg(&file)
        .env("BASE", &app.base_url)
        .env("KEY", &key)
        .env("EMAIL", "docs@example.com")
        .env("PASSWORD", crate::support::PASSWORD)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{program} must be installed (scripts/test installs it): {e}"));
    assert!(
        output.status.success(),
        "{language} example failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn program_fence(language: &str) -> &'static str {
    match language {
        "Python (standard library only)" => "python",
        "JavaScript (Node.js 18+)" => "javascript",
        _ => "bash",
    }
}

#[tokio::test]
async fn the_authentication_guide_curl_example_works() {
    run_auth_example("curl", "bash", &["-euo", "pipefail"]).await;
}

#[tokio::test]
async fn the_authentication_guide_python_example_works() {
    run_auth_example("Python (standard library only)", "python3", &[]).await;
}

#[tokio::test]
async fn the_authentication_guide_javascript_example_works() {
    run_auth_example("JavaScript (Node.js 18+)", "node", &[]).await;
}

#[tokio::test]
async fn the_api_guide_limits_audit_and_usage_example_works() {
    let app = TestApp::spawn().await;
    let (_, key) = app
        .project_with_key(&["jobs:read", "audit:read", "usage:read"])
        .await;
    let script = bash_block(
        "docs/API.md",
        "### Example: limits, the audit trail and usage",
    );
    let output = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("BASE", &app.base_url)
        .env("KEY", &key)
        .env("ADMIN_KEY", &app.admin_key)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_lowercase();
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "x-ratelimit-limit: ",
        "ratelimit-policy: \"read\";q=",
        "\"route\":\"/api/v1/jobs\"",
        "\"ok\":true",
        "\"jobs_submitted\":0",
        "\"remaining_today\":",
        "seq,occurred_at,request_id",
    ] {
        assert!(stdout.contains(expected), "{expected} in:\n{stdout}");
    }
}
