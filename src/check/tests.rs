use super::*;

fn input(name: &str, text: &str) -> Input {
    Input {
        name: name.into(),
        text: text.into(),
    }
}

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{name: http, port: 80}]
";

fn route(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {{name: {name}, namespace: shop}}
spec:
  hosts: [{name}.example.com]
  routes:
  - name: all
    backends: [{{serviceName: web, servicePort: 80}}]
{extra}"
    )
}

fn report(inputs: &[Input]) -> Report {
    check(inputs, &TranslateOptions::default())
}

#[test]
fn a_clean_set_has_no_finding() {
    let r = report(&[input("svc.yaml", SERVICE), input("a.yaml", &route("a", ""))]);
    assert_eq!(r.findings, []);
    assert_eq!((r.files, r.objects), (2, 2));
    assert!(!r.failed(true));
    assert_eq!(
        r.text(),
        "2 files, 2 objects: 0 errors, 0 warnings, 0 notes\n"
    );
}

#[test]
fn every_invalid_document_of_a_file_is_reported() {
    let text = format!(
        "{}---\n{}---\n{}",
        route("typo", "    timeoutz: {connect: 1s}\n"),
        route("ok", ""),
        route("wrongtype", "    websocket: maybe\n"),
    );
    let r = report(&[input("svc.yaml", SERVICE), input("routes.yaml", &text)]);
    let errors: Vec<&Finding> = r
        .findings
        .iter()
        .filter(|f| f.level == Level::Error)
        .collect();
    assert_eq!(errors.len(), 2, "{}", r.text());
    assert_eq!(errors[0].file, "routes.yaml");
    assert_eq!(errors[0].document, Some(1));
    assert_eq!(errors[0].object.as_ref().unwrap().name, "typo");
    assert!(
        errors[0].message.contains("timeoutz"),
        "{}",
        errors[0].message
    );
    assert_eq!(errors[1].document, Some(3));
    assert_eq!(errors[1].field.as_deref(), Some("spec.routes[0].websocket"));
    assert_eq!(errors[1].reason, "InvalidSpec");
    // The valid document between them is still read and translated.
    assert_eq!(r.objects, 2);
    assert!(r.failed(false));
}

#[test]
fn translator_findings_name_file_and_document() {
    let text = format!(
        "{}---\n{}",
        route("ok", ""),
        route("ref", "    pluginConfigRef: {name: missing}\n")
    );
    let r = report(&[input("svc.yaml", SERVICE), input("r.yaml", &text)]);
    let f = &r.findings[0];
    assert_eq!(r.findings.len(), 1, "{}", r.text());
    assert_eq!(
        (f.level, f.file.as_str(), f.document, f.reason.as_str()),
        (Level::Error, "r.yaml", Some(2), "PluginConfigNotFound")
    );
    assert_eq!(
        f.field.as_deref(),
        Some("spec.routes[0].pluginConfigRef.name")
    );
    assert_eq!(
        f.object,
        Some(FindingObject {
            kind: "ApiRoute".into(),
            namespace: "shop".into(),
            name: "ref".into()
        })
    );
}

#[test]
fn warnings_fail_only_when_strict() {
    // No Service "web": the route serves 503 until it exists.
    let r = report(&[input("a.yaml", &route("a", ""))]);
    assert_eq!(r.count(Level::Warning), 1, "{}", r.text());
    assert_eq!(r.findings[0].reason, "BackendNotFound");
    assert!(!r.failed(false));
    assert!(r.failed(true));
}

#[test]
fn other_kinds_are_skipped_with_a_note() {
    let deployment =
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\n";
    let r = report(&[
        input("svc.yaml", SERVICE),
        input("deploy.yaml", deployment),
        input("a.yaml", &route("a", "")),
    ]);
    assert_eq!(r.findings.len(), 1);
    let note = &r.findings[0];
    assert_eq!(
        (note.level, note.reason.as_str()),
        (Level::Note, "UnknownKind")
    );
    assert!(!r.failed(true), "a note never fails a check");
    assert!(r.text().contains(
        "note: deploy.yaml: document 1 (Deployment shop/web): kind Deployment is not used by Sluicegate; skipped [UnknownKind]"
    ));
}

#[test]
fn duplicates_and_broken_yaml_are_reported() {
    let r = report(&[
        input("svc.yaml", SERVICE),
        input("a.yaml", &route("a", "")),
        input("b.yaml", &route("a", "")),
        input("c.yaml", "kind: [unclosed"),
    ]);
    let dup = r.findings.iter().find(|f| f.reason == "Duplicate").unwrap();
    assert_eq!((dup.file.as_str(), dup.level), ("b.yaml", Level::Warning));
    assert!(dup.message.contains("a.yaml document 1"), "{}", dup.message);
    let yaml = r.findings.iter().find(|f| f.file == "c.yaml").unwrap();
    assert_eq!((yaml.reason.as_str(), yaml.document), ("InvalidYAML", None));
}

#[test]
fn json_has_counts_and_located_findings() {
    let r = report(&[
        input("svc.yaml", SERVICE),
        input("a.yaml", &route("a", "    retries: {attempts: 0}\n")),
    ]);
    let v: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(
        (v["files"].as_u64(), v["objects"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(v["errors"], 1);
    let f = &v["findings"][0];
    assert_eq!(f["severity"], "error");
    assert_eq!(f["file"], "a.yaml");
    assert_eq!(f["document"], 1);
    assert_eq!(
        f["object"],
        serde_json::json!({"kind": "ApiRoute", "namespace": "shop", "name": "a"})
    );
    assert_eq!(f["field"], "spec.routes[0].retries.attempts");
    assert_eq!(f["reason"], "InvalidSpec");
    assert_eq!(f["message"], "must be at least 1 (is 0)");
}

#[test]
fn stdin_and_directories_are_read() {
    let dir = std::env::temp_dir().join(format!("sluicegate-check-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::create_dir_all(dir.join(".hidden")).unwrap();
    std::fs::write(dir.join("sub/a.yaml"), route("a", "")).unwrap();
    std::fs::write(dir.join(".hidden/b.yaml"), "not: read").unwrap();
    std::fs::write(dir.join("notes.txt"), "not read").unwrap();
    let mut stdin = SERVICE.as_bytes();
    let inputs = read_inputs(&[dir.clone(), PathBuf::from("-")], &mut stdin).unwrap();
    let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[0].ends_with("sub/a.yaml"));
    assert_eq!(names[1], "<stdin>");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(matches!(
        read_inputs(&[empty], &mut &b""[..]),
        Err(InputError::Empty(_))
    ));
    assert!(matches!(
        read_inputs(&[dir.join("missing")], &mut &b""[..]),
        Err(InputError::Read { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}
