//! The `hfcachefs` program: mounts a shared Hugging Face cache, or runs an administration
//! command on one. Everything lives in the library (`lib.rs`); this only hands it argv.

fn main() -> std::process::ExitCode {
    hfcachefs::cli::run(std::env::args_os().skip(1))
}
