//! The `aiclient` executable: parses the command line and hands over to the library.

/// Request handling allocates many short-lived buffers across threads; glibc malloc spent ~30%
/// of the gateway's CPU on them under load (perf, `benches/gateway_load.rs`). Only the binary
/// sets it: plugins keep their own allocator, and every value crossing the boundary is freed
/// by the side that allocated it (abi_stable types carry their deallocator).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    aiclient::cli::main()
}
