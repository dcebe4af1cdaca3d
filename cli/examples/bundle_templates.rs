//! Writes `cli/templates.bundle`: the `stack init` templates, which the binary embeds with
//! `include_str!` so an installed `stack` needs no checkout. A committed file rather than a
//! build script, so saving a service never makes cargo recompile `stack` (a build script that
//! watched `services/` did). `cli/tests/templates_bundle.rs` fails when the bundle is out of
//! date; run `cargo run -p stack --example bundle_templates` to write it again.
//!
//! One source of truth: the `rust` template is this repository's own `services/` (every file
//! but build output), the root `aliases.json`, `stack.toml` and `Cargo.lock`, a workspace `Cargo.toml`
//! generated from the root one (the services' manifests stay verbatim: their
//! `x.workspace = true` lines resolve against a `[workspace.dependencies]` holding exactly the
//! entries they use), plus the template-only files of `templates/rust/`. The `node` template is
//! `templates/node/` without `node_modules/`. Both get a `.gitignore` with at least `.env`,
//! `.stack/`, `target/` and `node_modules/`.
//!
//! The bundle is text: for each file a line `=== <template> <path> <bytes>`, then its bytes
//! and a newline, sorted by template and path (`stack::init` reads it back).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item, Table};

/// Directories never copied into a template: build output and installed packages.
const SKIPPED_DIRS: [&str; 5] = ["target", "node_modules", ".stack", ".venv", "__pycache__"];
/// What every template's `.gitignore` must ignore.
const IGNORED: [&str; 4] = [".env", ".stack/", "target/", "node_modules/"];

/// The bundle's path in the repository.
pub fn bundle_path(root: &Path) -> PathBuf {
    root.join("cli").join("templates.bundle")
}

#[allow(dead_code)]
fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ lives inside the workspace root")
        .to_path_buf();
    let bundle = bundle(&root);
    fs::write(bundle_path(&root), &bundle).expect("cli/ is writable");
    println!(
        "wrote {} ({} bytes)",
        bundle_path(&root).display(),
        bundle.len()
    );
}

/// The bundle of both templates, as `cli/templates.bundle` holds it.
pub fn bundle(root: &Path) -> String {
    let mut rust = Vec::new();
    walk(&root.join("services"), "services", &mut rust);
    walk(&root.join("templates/rust"), "", &mut rust);
    push_if_exists(root, "aliases.json", &mut rust);
    push_if_exists(root, "stack.toml", &mut rust);
    push_if_exists(root, "Cargo.lock", &mut rust);
    let workspace = workspace_manifest(root, &rust);
    rust.push(Entry {
        path: "Cargo.toml".into(),
        contents: workspace.into_bytes(),
    });
    ensure_gitignore(&mut rust);

    let mut node = Vec::new();
    walk(&root.join("templates/node"), "", &mut node);
    if !node.is_empty() {
        ensure_gitignore(&mut node);
    }

    let mut text = String::new();
    for (name, entries) in [("node", &mut node), ("rust", &mut rust)] {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        for entry in entries.iter() {
            let contents = std::str::from_utf8(&entry.contents).unwrap_or_else(|_| {
                panic!("{} is not text; the bundle holds text only", entry.path)
            });
            text.push_str(&format!("=== {name} {} {}\n", entry.path, contents.len()));
            text.push_str(contents);
            text.push('\n');
        }
    }
    text
}

/// A file of a template: where it goes in the new project, and its bytes.
struct Entry {
    path: String,
    contents: Vec<u8>,
}

fn walk(dir: &Path, prefix: &str, entries: &mut Vec<Entry>) {
    let Ok(read) = fs::read_dir(dir) else {
        return;
    };
    let mut children: Vec<_> = read.filter_map(Result::ok).collect();
    children.sort_by_key(|child| child.file_name());
    for child in children {
        let name = child.file_name().to_string_lossy().into_owned();
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let file_type = child.file_type().expect("a listed entry has a type");
        if file_type.is_dir() {
            if !SKIPPED_DIRS.contains(&name.as_str()) {
                walk(&child.path(), &path, entries);
            }
        } else if file_type.is_file() {
            entries.push(Entry {
                path,
                contents: fs::read(child.path()).expect("a template file is readable"),
            });
        }
    }
}

fn push_if_exists(root: &Path, name: &str, entries: &mut Vec<Entry>) {
    if let Ok(contents) = fs::read(root.join(name)) {
        entries.push(Entry {
            path: name.into(),
            contents,
        });
    }
}

/// The template's own `.gitignore`, with any of [`IGNORED`] it lacks appended.
fn ensure_gitignore(entries: &mut Vec<Entry>) {
    let existing = entries.iter().position(|entry| entry.path == ".gitignore");
    let mut text = existing
        .map(|i| String::from_utf8_lossy(&entries[i].contents).into_owned())
        .unwrap_or_default();
    let present: BTreeSet<String> = text.lines().map(|line| line.trim().to_string()).collect();
    for wanted in IGNORED {
        if !present.contains(wanted) {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(wanted);
            text.push('\n');
        }
    }
    if let Some(i) = existing {
        entries.remove(i);
    }
    entries.push(Entry {
        path: ".gitignore".into(),
        contents: text.into_bytes(),
    });
}

/// The template's workspace `Cargo.toml`: the root manifest's `[workspace.package]`, lints and
/// profiles, and only the `[workspace.dependencies]` entries the services name.
fn workspace_manifest(root: &Path, entries: &[Entry]) -> String {
    let root_text = fs::read_to_string(root.join("Cargo.toml")).expect("the root manifest exists");
    let root_doc: DocumentMut = root_text.parse().expect("the root manifest is valid TOML");
    let root_workspace = root_doc["workspace"]
        .as_table()
        .expect("the root manifest has [workspace]");
    let empty = Table::new();
    let root_deps = root_workspace
        .get("dependencies")
        .and_then(Item::as_table)
        .unwrap_or(&empty);

    let mut used = BTreeSet::new();
    for entry in entries {
        let is_manifest = entry.path.starts_with("services/")
            && entry.path.ends_with("/Cargo.toml")
            && entry.path.matches('/').count() == 2;
        if !is_manifest {
            continue;
        }
        let text = String::from_utf8_lossy(&entry.contents);
        let doc: DocumentMut = text
            .parse()
            .unwrap_or_else(|error| panic!("{} is not valid TOML: {error}", entry.path));
        for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
            let Some(deps) = doc.get(section).and_then(Item::as_table_like) else {
                continue;
            };
            for (name, value) in deps.iter() {
                let inherits = value
                    .as_table_like()
                    .and_then(|table| table.get("workspace"))
                    .and_then(Item::as_bool)
                    .unwrap_or(false);
                if inherits {
                    used.insert(name.to_string());
                }
            }
        }
    }

    let mut doc = DocumentMut::new();
    let mut workspace = Table::new();
    workspace["resolver"] = toml_edit::value("2");
    // Every Rust service by name, not `services/*`: a glob makes cargo read a Cargo.toml in
    // every directory under `services/`, so a Node or Python service there would break the
    // build of the whole project.
    let mut members = toml_edit::Array::new();
    for entry in entries {
        if let Some(service) = entry
            .path
            .strip_prefix("services/")
            .and_then(|rest| rest.strip_suffix("/Cargo.toml"))
            .filter(|service| !service.contains('/'))
        {
            members.push(format!("services/{service}"));
        }
    }
    workspace["members"] = toml_edit::value(members);
    for key in ["package", "lints"] {
        if let Some(item) = root_workspace.get(key) {
            workspace[key] = item.clone();
        }
    }
    let mut deps = Table::new();
    for name in &used {
        match root_deps.get(name) {
            Some(item) => deps[name.as_str()] = item.clone(),
            None => panic!(
                "a service inherits `{name}` from the workspace, but the root Cargo.toml does not declare it"
            ),
        }
    }
    workspace["dependencies"] = Item::Table(deps);
    doc["workspace"] = Item::Table(workspace);
    if let Some(profile) = root_doc.get("profile") {
        doc["profile"] = profile.clone();
    }
    let mut text = String::from(
        "# The project's workspace: the auth `writer`, the app `reader` and their shared `session`\n\
         # library. Written by `stack init` (generated from stack's own workspace); edit freely.\n\n",
    );
    text.push_str(&doc.to_string());
    text
}
