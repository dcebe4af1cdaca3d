//! The hello fixture (`tests/fixtures/watch-hello`): one std-only Rust service that rebuilds
//! in about a second, for tests that need a second deployment (watch, rollback, the
//! dashboard's actions).

use std::fs;
use std::path::PathBuf;

use super::{workspace, Project, Up, BUILD_DEADLINE, COMMAND_DEADLINE};

impl Project {
    /// A copy of the hello fixture with a target dir of its own (`name`): cargo gives copies
    /// of one package in different directories the same unit hash, so tests running in
    /// parallel would otherwise build over each other's binaries.
    pub fn hello(name: &str) -> Project {
        Project::fixture("watch-hello")
            .with_target_dir(workspace().join("target/watch-fixture").join(name))
    }

    pub fn main_rs(&self) -> PathBuf {
        self.path().join("services/hello/src/main.rs")
    }

    /// The hello service's source with another answer.
    pub fn source_with(&self, message: &str) -> String {
        let text = fs::read_to_string(self.main_rs()).unwrap();
        let start = text.find("const MESSAGE").unwrap();
        let end = start + text[start..].find('\n').unwrap();
        format!(
            "{}const MESSAGE: &str = \"{message}\";{}",
            &text[..start],
            &text[end..]
        )
    }

    /// Rewrites the answer of the hello service in place.
    pub fn set_message(&self, message: &str) {
        fs::write(self.main_rs(), self.source_with(message)).unwrap();
    }
}

impl Up {
    /// Waits for the first `stack up` to be serving and watching.
    pub fn wait_watching(&mut self, services: &[&str]) {
        for service in services {
            self.wait_for(&format!("> Ready! http://{service}-"), BUILD_DEADLINE);
        }
        self.wait_for("Watching for changes", COMMAND_DEADLINE);
    }
}
