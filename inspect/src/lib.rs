//! vgt-inspect: command-line analysis of vgt captures.
//!
//! The binary is a thin shell over [`cli`]; each verb lives in its own module and only reads
//! captures through `vgt_format` (UI code never parses bytes itself).

pub mod cli;
pub mod describe;
pub mod dump;
pub mod info;
pub mod progress;
