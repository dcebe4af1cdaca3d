//! `stack init`'s templates live in the committed `cli/templates.bundle`, not in a build script
//! that reads `services/`: so saving a service never makes cargo recompile `stack`. This test
//! keeps the bundle equal to what `services/` and `templates/` hold now, and checks, from
//! rustc's own dependency files, that `stack` is built from no file of another service.

use std::fs;
use std::path::Path;

#[path = "../examples/bundle_templates.rs"]
#[allow(dead_code)]
mod generator;

mod support;
use support::workspace;

#[test]
fn the_bundle_is_what_services_and_templates_hold() {
    let root = workspace();
    let committed = fs::read_to_string(generator::bundle_path(&root)).unwrap_or_default();
    let current = generator::bundle(&root);
    assert!(
        committed == current,
        "cli/templates.bundle is out of date: run `cargo run -p stack --example bundle_templates` and commit it"
    );
}

#[test]
fn stack_is_built_from_no_file_of_the_services_it_runs() {
    // This test binary sits in the target's `deps/`, beside rustc's `.d` files.
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let root = workspace();
    let mut checked = 0;
    for entry in fs::read_dir(&deps).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("stack-") && name.ends_with(".d")) {
            continue;
        }
        let inputs = fs::read_to_string(entry.path()).unwrap();
        // The library as this tree builds it (older builds may have left other `.d` files).
        if !inputs.contains("cli/src/lib.rs") || !inputs.contains("templates.bundle") {
            continue;
        }
        checked += 1;
        for input in inputs
            .split_whitespace()
            .map(|word| word.trim_end_matches(':'))
        {
            let Ok(relative) = Path::new(input).strip_prefix(&root) else {
                continue;
            };
            let inside = |dir: &str| relative.starts_with(dir);
            // The session library is a real dependency; the services it runs are not.
            let another_service = inside("services") && !inside("services/session");
            assert!(
                !another_service && !inside("templates"),
                "{name} lists {}: a save there would recompile stack",
                relative.display()
            );
        }
    }
    assert!(
        checked > 0,
        "no dependency file of the stack library in {}",
        deps.display()
    );
}
