//! Progress bars for long passes over a capture (hidden when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Captures smaller than this are read too fast for a bar to be worth drawing.
const MIN_RECORDS_FOR_BAR: u64 = 200_000;
/// Files smaller than this are rewritten too fast for a bar to be worth drawing (`repack`
/// compresses every blob: its time goes with bytes, not records).
const MIN_BYTES_FOR_BAR: u64 = 64 << 20;

/// A bar counting records; hidden for small captures and when stderr is not a terminal.
pub fn records_bar(total: u64, what: &str) -> ProgressBar {
    if total < MIN_RECORDS_FOR_BAR {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} records ({per_sec}, eta {eta})")
    {
        bar.set_style(style);
    }
    bar.set_message(what.to_string());
    bar
}

/// A bar counting bytes of the input; hidden for small files and when stderr is not a
/// terminal.
pub fn bytes_bar(total: u64, what: &str) -> ProgressBar {
    if total < MIN_BYTES_FOR_BAR {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
    ) {
        bar.set_style(style);
    }
    bar.set_message(what.to_string());
    bar
}
