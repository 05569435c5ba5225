//! The `portcullis` binary: parses the command line and hands over to [`portcullis::cli`].

fn main() -> std::process::ExitCode {
    portcullis::cli::main()
}
