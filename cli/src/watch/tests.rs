//! The watcher on a real temp directory with real inotify events.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;

use super::*;

/// Long enough that a second change set, if any were coming, would have arrived.
const SILENCE: Duration = Duration::from_millis(700);
const DEADLINE: Duration = Duration::from_secs(5);

struct Fixture {
    dir: tempfile::TempDir,
    _watcher: Watcher,
    changes: UnboundedReceiver<ChangeSet>,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with_quiet(DEFAULT_QUIET)
    }

    fn with_quiet(quiet: Duration) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let web = dir.path().join("services/web");
        let lib = dir.path().join("services/lib");
        fs::create_dir_all(web.join("src")).unwrap();
        fs::create_dir_all(web.join("target/debug")).unwrap();
        fs::create_dir_all(lib.join("src")).unwrap();
        fs::write(web.join("src/main.rs"), "fn main() {}\n").unwrap();
        fs::write(web.join(".gitignore"), "*.log\ngenerated/\n").unwrap();
        fs::write(lib.join("src/lib.rs"), "\n").unwrap();
        fs::write(dir.path().join(".env"), "A=1\n").unwrap();
        let (watcher, changes) = Watcher::start(WatchConfig {
            services: vec![
                WatchedService {
                    name: "web".into(),
                    dirs: vec![web.clone(), lib.clone()],
                    only: None,
                    ignore: None,
                },
                WatchedService {
                    name: "api".into(),
                    dirs: vec![lib],
                    only: None,
                    ignore: None,
                },
            ],
            dotenv: Some(dir.path().join(".env")),
            config: Vec::new(),
            quiet,
        })
        .unwrap();
        Fixture {
            dir,
            _watcher: watcher,
            changes,
        }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    async fn next(&mut self) -> ChangeSet {
        tokio::time::timeout(DEADLINE, self.changes.recv())
            .await
            .expect("a change set within the deadline")
            .expect("the watcher runs")
    }

    async fn assert_silent(&mut self) {
        if let Ok(Some(changes)) = tokio::time::timeout(SILENCE, self.changes.recv()).await {
            panic!("unexpected change set: {changes:?}");
        }
    }
}

fn names(changes: &ChangeSet) -> Vec<&str> {
    changes.services.iter().map(String::as_str).collect()
}

#[tokio::test]
async fn twenty_saves_in_200_ms_are_one_change() {
    // A quiet period well above the 10 ms between saves: with the default 100 ms, a test
    // thread stalled for 90 ms on a loaded machine split the burst (seen once in CI).
    let quiet = Duration::from_millis(400);
    let mut fixture = Fixture::with_quiet(quiet);
    let main = fixture.path("services/web/src/main.rs");
    // The longest pause between two saves: past the quiet period (a machine so loaded that
    // this thread slept that long), two change sets are what the watcher must send.
    let mut longest = Duration::ZERO;
    let mut last = std::time::Instant::now();
    for round in 0..20 {
        fs::write(&main, format!("fn main() {{ /* {round} */ }}\n")).unwrap();
        longest = longest.max(last.elapsed());
        last = std::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let changes = fixture.next().await;
    assert_eq!(names(&changes), ["web"]);
    assert!(!changes.dotenv);
    if longest < quiet {
        fixture.assert_silent().await;
    }
}

#[tokio::test]
async fn editor_temp_files_build_output_and_gitignored_files_are_no_change() {
    let mut fixture = Fixture::new();
    for noise in [
        "services/web/src/.main.rs.swp",
        "services/web/src/main.rs~",
        "services/web/src/#main.rs#",
        "services/web/src/.#main.rs",
        "services/web/src/4913",
        "services/web/target/debug/web",
        "services/web/server.log",
        "services/web/generated/code.rs",
        "services/web/node_modules/x/index.js",
        "services/web/.git/HEAD",
    ] {
        let path = fixture.path(noise);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "noise").unwrap();
    }
    fs::remove_file(fixture.path("services/web/src/4913")).unwrap();
    fixture.assert_silent().await;
}

#[tokio::test]
async fn an_atomic_rename_save_is_one_change_and_the_next_save_another() {
    let mut fixture = Fixture::new();
    let main = fixture.path("services/web/src/main.rs");
    for round in 0..2 {
        let temp = fixture.path("services/web/src/.main.rs.tmp-save");
        fs::write(&temp, format!("fn main() {{ /* v{round} */ }}\n")).unwrap();
        fs::rename(&temp, &main).unwrap();
        let changes = fixture.next().await;
        assert_eq!(names(&changes), ["web"], "save {round}");
        assert!(changes.paths.contains(&main.canonicalize().unwrap()));
        fixture.assert_silent().await;
    }
}

#[tokio::test]
async fn delete_and_recreate_is_one_change() {
    let mut fixture = Fixture::new();
    let main = fixture.path("services/web/src/main.rs");
    fs::remove_file(&main).unwrap();
    fs::write(&main, "fn main() { /* again */ }\n").unwrap();
    assert_eq!(names(&fixture.next().await), ["web"]);
    fixture.assert_silent().await;
}

#[tokio::test]
async fn a_shared_library_change_names_every_service_that_uses_it() {
    let mut fixture = Fixture::new();
    fs::write(fixture.path("services/lib/src/lib.rs"), "// changed\n").unwrap();
    assert_eq!(names(&fixture.next().await), ["api", "web"]);
    fixture.assert_silent().await;
}

#[tokio::test]
async fn a_dotenv_change_is_flagged_and_an_atomic_dotenv_save_too() {
    let mut fixture = Fixture::new();
    fs::write(fixture.path(".env"), "A=2\n").unwrap();
    let changes = fixture.next().await;
    assert!(changes.dotenv);
    assert!(changes.services.is_empty());
    fs::write(fixture.path(".env.tmp"), "A=3\n").unwrap();
    fs::rename(fixture.path(".env.tmp"), fixture.path(".env")).unwrap();
    assert!(fixture.next().await.dotenv);
    fixture.assert_silent().await;
}

#[test]
fn editor_temp_names() {
    for (name, temp) in [
        (".main.rs.swp", true),
        ("main.rs.swo", true),
        ("main.rs~", true),
        ("#main.rs#", true),
        (".#main.rs", true),
        ("4913", true),
        ("main.rs", false),
        ("#", false),
        ("49130", false),
    ] {
        assert_eq!(
            filter::is_editor_temp(std::ffi::OsStr::new(name)),
            temp,
            "{name}"
        );
    }
}

#[test]
fn cargo_metadata_finds_local_path_dependencies() {
    let dir = tempfile::tempdir().unwrap();
    let write = |relative: &str, text: &str| {
        let path = dir.path().join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    };
    write(
        "Cargo.toml",
        "[workspace]\nmembers = [\"services/*\"]\nresolver = \"2\"\n",
    );
    for name in ["writer", "reader"] {
        write(
            &format!("services/{name}/Cargo.toml"),
            &format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nsession = {{ path = \"../session\" }}\n"),
        );
        write(&format!("services/{name}/src/main.rs"), "fn main() {}\n");
    }
    write(
        "services/session/Cargo.toml",
        "[package]\nname = \"session\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    );
    write("services/session/src/lib.rs", "\n");
    let services = crate::supervisor::build::discover(dir.path(), &[]).unwrap();
    let watched = watched_dirs(dir.path(), &services).unwrap();
    let root = dir.path().canonicalize().unwrap();
    let dirs = |name: &str| -> Vec<PathBuf> {
        watched
            .iter()
            .find(|service| service.name == name)
            .unwrap()
            .dirs
            .clone()
    };
    let expected = |name: &str| -> Vec<PathBuf> {
        let mut dirs = vec![
            root.join(Path::new("services").join(name)),
            root.join("services/session"),
        ];
        dirs.sort();
        dirs
    };
    assert_eq!(dirs("writer"), expected("writer"));
    assert_eq!(dirs("reader"), expected("reader"));
}

#[test]
fn a_service_at_the_root_leaves_the_services_inside_it_to_them() {
    let root = PathBuf::from("/project");
    let service = |name: &str, dir: &str| WatchedService {
        name: name.into(),
        dirs: vec![root.join(dir)],
        only: None,
        ignore: None,
    };
    let classifier = Classifier {
        services: vec![
            service("web", ""),
            service("clock", ""),
            service("writer", "services/writer"),
        ],
        dotenv: None,
        config: Vec::new(),
        filter: Filter::new(&[]),
    };
    let saved = |path: &str| {
        let mut changes = ChangeSet::default();
        classifier.add_path(&root.join(path), &mut changes);
        changes.services.into_iter().collect::<Vec<_>>()
    };
    assert_eq!(saved("services/writer/src/main.rs"), ["writer"]);
    assert_eq!(saved("app.py"), ["clock", "web"]);
    assert_eq!(saved("services/README.md"), ["clock", "web"]);
}
