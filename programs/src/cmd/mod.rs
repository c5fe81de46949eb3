//! The two programs: each a clap command line and a `run` returning the exit status. The
//! binaries in `src/bin/` only call `main()`.

pub mod master;
pub mod worker;

use std::future::Future;
use std::process::ExitCode;

use crate::fatal::Fatal;

/// Runs a program's `run` on a two-thread runtime and turns its outcome into the exit status
/// (a fatal error is reported on stderr under the program's `name`).
pub(crate) fn block_on(name: &str, run: impl Future<Output = Result<u8, Fatal>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return Fatal::failure(format!("cannot start the runtime: {e}")).report(name),
    };
    match runtime.block_on(run) {
        Ok(code) => ExitCode::from(code),
        Err(fatal) => fatal.report(name),
    }
}
