//! The `portcullis` binary: parses the command line and hands over to [`portcullis::cli`].

/// mimalloc: the request path allocates many small, short-lived buffers
/// (header maps, bytes); glibc's malloc spent ~6% of a proxied request's CPU
/// time on them (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    portcullis::cli::main()
}
