//! `vgt-inspect`: look inside a vgt capture from the command line.

use std::process::ExitCode;

fn main() -> ExitCode {
    vgt_inspect::cli::main()
}
