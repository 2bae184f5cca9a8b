//! vgt-inspect: the terminal browser and command-line analysis of vgt captures (info, dump,
//! check, stats, export, repack).
//!
//! The binary is a thin shell over [`cli`]; each verb lives in its own module and only reads
//! captures through `vgt_format` (UI code never parses bytes itself).

pub mod check;
pub mod check_cmd;
pub mod cli;
pub mod describe;
pub mod dump;
pub mod export;
pub mod frames;
pub mod info;
pub mod progress;
pub mod repack;
pub mod stats;
pub mod tui;
