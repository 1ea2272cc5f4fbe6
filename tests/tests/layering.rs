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

/// The modules of the core that `source` (a file of `session-store/src`, its unit tests cut
/// off) names as `crate::<module>`.
fn core_imports(source: &str) -> std::collections::BTreeSet<String> {
    let code = source
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or(source);
    let mut found = std::collections::BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let name: String = code[at + "crate::".len()..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.insert(name);
        }
    }
    found
}

#[test]
fn no_two_modules_of_the_core_import_each_other() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../session-store/src");
    let mut imports = BTreeMap::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read session-store/src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let module = path.file_stem().unwrap().to_string_lossy().into_owned();
            let source = std::fs::read_to_string(&path).expect("read a source file");
            imports.insert(module, core_imports(&source));
        }
    }
    assert!(imports.len() > 15, "read only {} modules", imports.len());
    let mut cycles = Vec::new();
    for (module, names) in &imports {
        for other in names.iter().filter(|n| *n != module) {
            if imports.get(other).is_some_and(|back| back.contains(module)) && module < other {
                cycles.push(format!("{module} <-> {other}"));
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "modules importing each other: {cycles:?}"
    );
}
