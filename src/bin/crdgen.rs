//! Writes the CRD manifests under `crds/` from the Rust types.
//!
//! `crdgen` writes the files; `crdgen --check` exits non-zero when the
//! committed files differ from what the types produce, which CI runs so the
//! schema shipped to clusters can never drift from the code.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut check = false;
    let mut dir = PathBuf::from("crds");
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("usage: crdgen [--check] [DIR]   (DIR defaults to ./crds)");
                return ExitCode::SUCCESS;
            }
            other => dir = PathBuf::from(other),
        }
    }
    let mut stale = Vec::new();
    for crd in sluicegate::api::crds() {
        let name = crd.spec.names.plural.clone();
        let text = match sluicegate::api::crd_yaml(&crd) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("crdgen: cannot render {name}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let path = dir.join(format!("{name}.yaml"));
        if check {
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current != text {
                stale.push(path);
            }
        } else if let Err(e) =
            std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, text))
        {
            eprintln!("crdgen: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if !stale.is_empty() {
        for p in &stale {
            eprintln!(
                "crdgen: {} is stale; run `cargo run --bin crdgen`",
                p.display()
            );
        }
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
