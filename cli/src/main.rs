//! The `stack` binary: parse arguments, run, report. Everything else lives in the library.

/// mimalloc instead of glibc's malloc: the proxy allocates a few small objects per request,
/// and glibc's malloc/free were ~6% of its CPU (bench/RESULTS.md, issue 4).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    stack::run()
}
