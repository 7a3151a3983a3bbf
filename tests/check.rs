//! `sluicegate check` as CI runs it: the real binary on the fixture
//! directories under tests/fixtures/check, its exit status, its text and
//! its JSON.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/check"))
}

/// Runs `sluicegate check ARGS` in the fixture directory, with `stdin`.
fn check(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluicegate"))
        .arg("check")
        .args(args)
        .current_dir(fixtures())
        // The controller's environment must not change what CI sees here.
        .env_remove("SLUICEGATE_INGRESS_CLASS")
        .env_remove("SLUICEGATE_WATCH_INGRESS_WITHOUT_CLASS")
        .env_remove("SLUICEGATE_GLOBAL_PLUGIN_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sluicegate");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("sluicegate check")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", stdout(o)))
}

#[test]
fn a_clean_directory_passes_and_notes_other_kinds() {
    let out = check(&["clean"], "");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(
        text,
        "note: clean/app.yaml: document 1 (Deployment shop/shop): kind Deployment is not used \
         by Sluicegate; skipped [UnknownKind]\n\
         2 files, 4 objects: 0 errors, 0 warnings, 1 note\n"
    );
    // Notes never fail, even with --strict.
    assert_eq!(check(&["--strict", "clean"], "").status.code(), Some(0));
}

#[test]
fn typos_wrong_types_and_bad_references_fail_with_their_location() {
    let out = check(&["broken"], "");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for line in [
        "error: broken/plugins.yaml: document 1 (ApiRoute shop/badref) field \
         spec.routes[0].pluginConfigRef.name: PluginConfig shop/no-such-config not found",
        "error: broken/routes.yaml: document 1 (ApiRoute shop/typo) field \
         spec.routes[0].timeout: unknown field `timeout`, expected one of",
        "error: broken/routes.yaml: document 3 (ApiRoute shop/wrongtype) field \
         spec.routes[0].backends[0].weight: invalid type: string \"heavy\", expected u32",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(line)),
            "no line starting with\n{line}\nin\n{text}"
        );
    }
    assert!(
        text.ends_with("3 files, 3 objects: 3 errors, 0 warnings, 0 notes\n"),
        "{text}"
    );

    let out = check(&["--output", "json", "broken"], "");
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert_eq!(
        (v["errors"].as_u64(), v["warnings"].as_u64()),
        (Some(3), Some(0))
    );
    let findings = v["findings"].as_array().expect("findings");
    let located: Vec<(String, u64, String, String, String)> = findings
        .iter()
        .map(|f| {
            (
                f["file"].as_str().unwrap_or_default().to_owned(),
                f["document"].as_u64().unwrap_or_default(),
                f["object"]["name"].as_str().unwrap_or_default().to_owned(),
                f["field"].as_str().unwrap_or_default().to_owned(),
                f["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let want = |file: &str, doc: u64, name: &str, field: &str, reason: &str| {
        (
            file.to_owned(),
            doc,
            name.to_owned(),
            field.to_owned(),
            reason.to_owned(),
        )
    };
    assert_eq!(
        located,
        [
            want(
                "broken/plugins.yaml",
                1,
                "badref",
                "spec.routes[0].pluginConfigRef.name",
                "PluginConfigNotFound"
            ),
            want(
                "broken/routes.yaml",
                1,
                "typo",
                "spec.routes[0].timeout",
                "InvalidSpec"
            ),
            want(
                "broken/routes.yaml",
                3,
                "wrongtype",
                "spec.routes[0].backends[0].weight",
                "InvalidSpec"
            ),
        ]
    );
    assert!(findings.iter().all(|f| f["severity"] == "error"
        && f["object"]["kind"] == "ApiRoute"
        && f["object"]["namespace"] == "shop"));
}

#[test]
fn warnings_fail_only_with_strict() {
    let out = check(&["warnings"], "");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.starts_with(
            "warning: warnings/route.yaml: document 1 (ApiRoute shop/orders) field \
             spec.routes[0].backends[0]"
        ),
        "{text}"
    );
    assert!(text.contains("[BackendNotFound]"), "{text}");
    let out = check(&["--strict", "--output", "json", "warnings"], "");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out)["warnings"], 1);
}

#[test]
fn stdin_is_read_with_the_directories() {
    // The Service the warning asked for, piped in: the check is clean.
    let service = "apiVersion: v1\nkind: Service\nmetadata: {name: orders, namespace: shop}\n\
                   spec:\n  ports: [{port: 80}]\n";
    let out = check(&["--strict", "warnings", "-"], service);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(
        stdout(&out),
        "2 files, 2 objects: 0 errors, 0 warnings, 0 notes\n"
    );
    // A broken document on stdin is named as such.
    let out = check(
        &["-"],
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: 7\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with("error: <stdin>: document 1 (Service x) field spec:"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn unreadable_input_exits_2() {
    let out = check(&["no-such-dir"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read no-such-dir"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}
