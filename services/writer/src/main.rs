//! The writer binary: configuration from the environment, then serve until SIGTERM/SIGINT.
fn main() -> std::process::ExitCode {
    session::service::main("writer", writer::DEFAULT_PORT, writer::app)
}
