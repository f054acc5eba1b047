//! The `aiclient` executable: parses the command line and hands over to the library.

fn main() -> std::process::ExitCode {
    aiclient::cli::main()
}
