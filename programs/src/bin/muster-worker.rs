//! `muster-worker`: register a member of a muster group and keep it alive, on its own or as
//! the sidecar of a command. See `muster-worker --help`.

fn main() -> std::process::ExitCode {
    muster_programs::cmd::worker::main()
}
