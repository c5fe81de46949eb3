//! The two programs: each a clap command line and a `run` returning the exit status. The
//! binaries in `src/bin/` only call `main()`.

pub mod master;
pub mod worker;
