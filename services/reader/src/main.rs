//! The reader binary: configuration from the environment, then serve until SIGTERM/SIGINT.
fn main() -> std::process::ExitCode {
    session::service::main("reader", reader::DEFAULT_PORT, reader::app)
}
