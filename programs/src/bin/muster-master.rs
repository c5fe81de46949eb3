//! `muster-master`: watch a muster group, print and serve its live membership; `list` and
//! `evict` for operators. See `muster-master --help`.

fn main() -> std::process::ExitCode {
    muster_programs::cmd::master::main()
}
