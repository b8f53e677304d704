//! `openapi.yaml` and the API agree, both ways: schemathesis (pinned, in
//! `.venv/schemathesis`) generates requests from the document, sends them to
//! the admin API of a `local up` stack, and checks every answer against the
//! document: status codes, bodies and headers, schema-valid requests
//! accepted and schema-violating ones refused, and stateful sequences
//! (create, read, replace, delete) through the document's links. The seed
//! is pinned in `tests/openapi/schemathesis.toml`; the hooks and the few
//! configured exceptions are explained there and in `hooks.py`.

use crate::up::Up;
use std::path::PathBuf;
use std::process::Output;

fn schemathesis() -> PathBuf {
    let bin = local::stack::project_root().join(".venv/schemathesis/bin/schemathesis");
    assert!(
        bin.exists(),
        "{} is missing: `make test` installs it (bash scripts/venv.sh schemathesis)",
        bin.display()
    );
    bin
}

/// Runs schemathesis on `document` against `url`; `extra` narrows the run.
async fn run(document: &std::path::Path, url: &str, extra: &[&str]) -> Output {
    let dir = local::stack::project_root().join("tests/openapi");
    tokio::process::Command::new(schemathesis())
        .current_dir(&dir)
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("NO_COLOR", "1")
        .arg("--config-file")
        .arg(dir.join("schemathesis.toml"))
        .arg("run")
        .arg(document)
        .args(["--url", url])
        .args(extra)
        .output()
        .await
        .expect("schemathesis runs")
}

fn admin_url(up: &Up) -> String {
    up.line("admin API")
        .split_whitespace()
        .last()
        .expect("url")
        .to_owned()
}

#[tokio::test]
async fn every_answer_of_the_api_to_requests_generated_from_openapi_yaml_is_as_documented() {
    let prefix = format!("oa{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let up = Up::start(&prefix).await;
    let url = admin_url(&up);
    let document = local::stack::project_root().join("openapi.yaml");

    // The check can fail: a document that allows one thing the API refuses
    // (any email address, where the API takes printable ASCII) is caught.
    let text = std::fs::read_to_string(&document).expect("openapi.yaml");
    let pattern = text
        .lines()
        .find(|l| l.trim_start().starts_with("pattern: '^[!#-+"))
        .expect("the EmailAddress pattern")
        .to_owned();
    let loose = text.replace(&pattern, "      pattern: '^.+@.+$'");
    let loose_file = report_delivery_tests::work_dir().join(format!("{prefix}-loose-openapi.yaml"));
    std::fs::create_dir_all(report_delivery_tests::work_dir()).expect("dir");
    std::fs::write(&loose_file, loose).expect("written");
    let o = run(
        &loose_file,
        &url,
        &[
            // POST /targets alone (include filters of different kinds OR),
            // with enough draws that an address the API refuses comes up
            // whatever else the document holds.
            "--include-operation-id",
            "createTarget",
            "--max-examples",
            "150",
            "--phases",
            "fuzzing",
            "--checks",
            "positive_data_acceptance",
        ],
    )
    .await;
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        !o.status.success() && out.contains("Schema-valid request rejected"),
        "a loosened document was not caught:\n{out}"
    );

    // The document as it is: every phase, every check.
    let o = run(&document, &url, &[]).await;
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "openapi.yaml and the API disagree:\n{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let generated = out
        .lines()
        .find(|l| l.contains(" generated, "))
        .unwrap_or_default()
        .to_owned();
    eprintln!("schemathesis: {}", generated.trim());
    assert!(generated.contains("passed"), "{out}");
    up.interrupt().await;
}
