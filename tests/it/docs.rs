//! Examples in the docs are run, so they stay true: the README's quick start runs with bash and
//! curl against a live server, using the real `herald` binary for the admin steps.

use crate::support::{TestApp, PEPPER};

/// The first ```bash block after `heading` in a markdown file of the repository.
fn bash_block(file: &str, heading: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(file);
    let text = std::fs::read_to_string(path).unwrap();
    let section = &text[text
        .find(heading)
        .unwrap_or_else(|| panic!("{heading} in {file}"))..];
    let start = section.find("```bash\n").expect("a bash block") + "```bash\n".len();
    let end = start + section[start..].find("```").expect("a closed block");
    section[start..end].to_owned()
}

#[tokio::test]
async fn the_readme_quick_start_works_against_a_live_server() {
    let app = TestApp::spawn().await;
    let script = bash_block("README.md", "## Quick start");
    let data_dir = std::env::temp_dir().join(format!("herald-docs-{}", uuid::Uuid::new_v4()));
    let output = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("HERALD", crate::projections::herald_binary())
        .env("BASE", &app.base_url)
        .env("DATABASE_URL", &app.database_url)
        .env("HERALD_API_KEY_PEPPER", PEPPER)
        .env("HERALD_DATA_DIR", &data_dir)
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
