//! The terminal browser driven by arbitrary bytes (built for the tests and with `--cfg
//! fuzzing`): a capture (any bytes; a capture attached to a bug report is untrusted) browsed
//! with a sequence of keys, typed filters, clicks, jumps and terminal sizes, each followed by
//! the main loop's `prepare` and a draw on ratatui's test backend. The `tui_browse` fuzz target
//! and its seeds in the tests. Nothing may panic, and after every step a non-empty list has a
//! selected record.

use std::sync::Arc;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::layout::Rect;
use vgt_format::CaptureReader;

use super::app::{Action, App, View, key_action};
use super::draw::draw;

/// Most steps one input takes.
const MAX_STEPS: usize = 64;

const KEYS: [KeyCode; 14] = [
    KeyCode::Enter,
    KeyCode::Esc,
    KeyCode::Tab,
    KeyCode::Backspace,
    KeyCode::Up,
    KeyCode::Down,
    KeyCode::PageUp,
    KeyCode::PageDown,
    KeyCode::Home,
    KeyCode::End,
    KeyCode::Left,
    KeyCode::Right,
    KeyCode::F(1),
    KeyCode::Delete,
];

const ACTIONS: [Action; 20] = [
    Action::Top,
    Action::Bottom,
    Action::Show(View::List),
    Action::Show(View::Resources),
    Action::Show(View::Timeline),
    Action::NextView,
    Action::ToggleHelp,
    Action::StartFilter,
    Action::FilterCommit,
    Action::FilterCancel,
    Action::ClearFilter,
    Action::ToggleCommandsOnly,
    Action::NextMark,
    Action::PrevMark,
    Action::Follow,
    Action::FollowDestroyed,
    Action::ZoomIn,
    Action::ZoomOut,
    Action::PanLeft,
    Action::ZoomReset,
];

/// Pieces of the filter language, typed whole by operation 6.
const WORDS: [&str; 16] = [
    "type:flush",
    "type:",
    "res:2",
    "res:",
    "res:99999999999999999999",
    "code:nodata",
    "code:",
    "t:0.1-0.5",
    "t:-",
    "t:1e400-",
    "err",
    "kind:command",
    "kind:",
    "8x8",
    " ",
    "é∂",
];

/// Runs one input: `steps: u8`, then `steps % 65` steps of three bytes `op, a, b`, then the
/// capture's bytes (an input whose capture does not open does nothing). The steps, by `op % 8`:
/// 0 the action `a % 20` of a table (views, filter start/commit/cancel/clear, marks, links,
/// timeline zoom and pan); 1 the key `a % 14` (Enter, Esc, Tab, arrows, pages, F1 …), or with
/// `b & 1` the character `a`, through the key map; 2 a jump to record `a << 8 | b`; 3 a click
/// at column `a`, row `b`; 4 a terminal of `a` x `b` cells; 5 up or down (`b & 1`) by `a` or
/// the detail scrolled by `a - 128`; 6 the filter word `a % 16` typed (and committed with
/// `b & 1`); 7 the character `a << 8 | b` typed (any code point the two bytes make).
pub fn run(data: &[u8]) {
    let steps = usize::from(data.first().copied().unwrap_or(0)) % (MAX_STEPS + 1);
    let Some(script) = data.get(1..1 + 3 * steps) else {
        return;
    };
    let Ok(reader) = CaptureReader::from_bytes(data[1 + 3 * steps..].to_vec()) else {
        return;
    };
    let mut app = App::new(Arc::new(reader), "fuzz.vgt", true);
    app.wait_index();
    let (mut w, mut h) = (80u16, 24u16);
    let Ok(mut terminal) = Terminal::new(TestBackend::new(w, h));
    let key = |app: &mut App, code: KeyCode| {
        let typing = app.input.is_some();
        if let Some(a) = key_action(KeyEvent::new(code, KeyModifiers::NONE), typing) {
            app.apply(a);
        }
    };
    for step in script.chunks_exact(3) {
        let (op, a, b) = (step[0], step[1], step[2]);
        match op % 8 {
            0 => app.apply(ACTIONS[usize::from(a) % ACTIONS.len()].clone()),
            1 if b & 1 == 0 => key(&mut app, KeyCode::Char(char::from(a))),
            1 => key(&mut app, KEYS[usize::from(a) % KEYS.len()]),
            2 => app.apply(Action::Jump(u64::from(a) << 8 | u64::from(b))),
            3 => app.apply(Action::Click(u16::from(a), u16::from(b))),
            4 => {
                (w, h) = (u16::from(a), u16::from(b));
                terminal.backend_mut().resize(w, h);
            }
            5 => app.apply(match b % 3 {
                0 => Action::Up(u64::from(a)),
                1 => Action::Down(u64::from(a)),
                _ => Action::ScrollDetail(i32::from(a) - 128),
            }),
            6 => {
                if app.input.is_none() {
                    app.apply(Action::StartFilter);
                }
                for c in WORDS[usize::from(a) % WORDS.len()].chars() {
                    app.apply(Action::FilterChar(c));
                }
                if b & 1 == 1 {
                    app.apply(Action::FilterCommit);
                }
            }
            _ => {
                let c = char::from_u32(u32::from(a) << 8 | u32::from(b)).unwrap_or('\u{fffd}');
                key(&mut app, KeyCode::Char(c));
            }
        }
        app.prepare(Rect::new(0, 0, w, h));
        if let Err(e) = terminal.draw(|f| draw(f, &app)) {
            panic!("drawing at {w}x{h}: {e}");
        }
        assert!(
            app.count() == 0 || app.selected_id().is_some(),
            "{} rows listed, none selected",
            app.count()
        );
    }
}

/// Seeds: the test capture of the browser's tests browsed through every view with filters,
/// marks, links and odd terminal sizes, and the same steps over a capture cut short.
#[cfg(test)]
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let capture = vgt_format::testing::boot_with_error_and_fence().unwrap_or_default();
    let steps: Vec<[u8; 3]> = vec![
        [0, 12, 0],  // next mark
        [0, 14, 0],  // follow
        [2, 0, 9],   // jump to #9
        [0, 3, 0],   // resources
        [0, 15, 0],  // follow destroyed
        [0, 4, 0],   // timeline
        [0, 16, 0],  // zoom in
        [0, 18, 0],  // pan left
        [4, 1, 1],   // a 1x1 terminal
        [4, 200, 3], // 200x3
        [4, 80, 24],
        [0, 2, 0],       // list
        [6, 0, 1],       // filter type:flush
        [5, 5, 1],       // down 5
        [6, 10, 1],      // filter err
        [1, 1, 1],       // Esc
        [6, 7, 0],       // t:0.1-0.5 typed
        [1, 3, 1],       // Backspace
        [1, 0, 1],       // Enter
        [3, 10, 5],      // click a row
        [5, 200, 2],     // detail scrolled
        [0, 6, 0],       // help
        [7, 0x26, 0x3a], // a typed character
    ];
    let mut browse = vec![u8::try_from(steps.len()).unwrap_or(0)];
    browse.extend(steps.iter().flatten());
    let mut cut = browse.clone();
    browse.extend_from_slice(&capture);
    cut.extend_from_slice(&capture[..capture.len() * 2 / 3]);
    vec![("browse", browse), ("browse_cut_capture", cut)]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn browse_seeds_run_with_every_step_count() {
        for (name, input) in seeds() {
            let steps = usize::from(input[0]);
            for n in 0..=steps {
                eprintln!("{name} with {n} steps");
                let mut v = vec![u8::try_from(n).unwrap()];
                v.extend_from_slice(&input[1..1 + 3 * n]);
                v.extend_from_slice(&input[1 + 3 * steps..]);
                run(&v);
            }
        }
    }

    #[test]
    fn browse_seeds_open_their_captures() {
        for (name, input) in seeds() {
            let steps = usize::from(input[0]);
            let reader = CaptureReader::from_bytes(input[1 + 3 * steps..].to_vec())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(reader.len() > 10, "{name}: {} records", reader.len());
        }
    }

    #[test]
    fn browse_seeds_on_disk_are_the_generated_ones() {
        // fuzz/seeds/tui_browse holds seeds() for the tui_browse fuzz target.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/tui_browse");
        vgt_format::testing::check_seed_files(&dir, &seeds());
    }
}
