//! `herald`: parse the command line, set up logging, run the command.

use clap::Parser;

/// mimalloc instead of the system allocator: glibc's malloc and free took about a sixth of the
/// server's CPU under load (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = herald_api::cli::Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("a Tokio runtime");
    match runtime.block_on(herald_api::commands::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("herald: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
