//! The layers of ARCHITECTURE.md, checked on the real manifests: the core depends on no other
//! crate of the workspace, and stores, integrations and compat depend on the core only.

use std::collections::BTreeMap;
use std::process::Command;

/// The workspace crates each library crate may depend on (normal and build dependencies;
/// dev-dependencies are the tests' business). Leaves (demo, tests, benches, interop,
/// reliability) may depend on anything and are not listed.
const ALLOWED: &[(&str, &[&str])] = &[
    ("session-store", &[]),
    ("session-store-redis", &["session-store"]),
    ("session-store-sqlx", &["session-store"]),
    ("session-store-mongodb", &["session-store"]),
    ("session-store-compat", &["session-store"]),
    ("session-store-tower", &["session-store"]),
    ("session-store-actix", &["session-store"]),
    ("session-store-hyper", &["session-store"]),
];

#[test]
fn library_crates_depend_only_downward() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let packages = metadata["packages"].as_array().expect("packages");
    let workspace: Vec<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let mut checked = BTreeMap::new();
    for package in packages {
        let name = package["name"].as_str().expect("a name");
        let Some((_, allowed)) = ALLOWED.iter().find(|(crate_name, _)| *crate_name == name) else {
            continue;
        };
        let inward: Vec<&str> = package["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter(|d| d["kind"].as_str() != Some("dev"))
            .filter_map(|d| d["name"].as_str())
            .filter(|d| workspace.contains(d))
            .collect();
        for dependency in &inward {
            assert!(
                allowed.contains(dependency),
                "{name} depends on {dependency}: against the layers of ARCHITECTURE.md"
            );
        }
        checked.insert(name, inward);
    }
    // Every listed crate was found, so a renamed one cannot slip out of the check.
    assert_eq!(checked.len(), ALLOWED.len(), "{checked:?}");
    assert_eq!(checked["session-store-tower"], ["session-store"]);
}
