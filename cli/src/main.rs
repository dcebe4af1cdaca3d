//! The `stack` binary: parse arguments, run, report. Everything else lives in the library.

fn main() -> std::process::ExitCode {
    stack::run()
}
