//! The terminal browser (`vgt-inspect FILE` / `vgt-inspect tui FILE`).
//!
//! State lives in [`app::App`]; keys and mouse events become [`app::Action`]s that change it;
//! [`app::App::prepare`] reads what the next frame shows (only the visible rows, through the
//! capture reader's random access); [`draw::draw`] renders it without touching the file. A
//! background thread ([`index`]) builds the summary table, state checkpoints and check findings
//! that filters, the timeline, the resources view and error jumps use.

pub mod app;
pub mod detail;
pub mod draw;
pub mod filter;
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
pub mod index;
pub mod preview;

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use crossterm::event::{self, DisableMouseCapture, EnableMouseCapture, Event, KeyEventKind};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::layout::Rect;
use vgt_format::CaptureReader;

use crate::cli::Outcome;
use app::{App, key_action, mouse_action};

/// Puts the terminal back: raw mode off, mouse capture off, main screen, cursor shown.
fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = execute!(
        io::stdout(),
        DisableMouseCapture,
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

/// The terminal in browser mode: raw, alternate screen, mouse captured. Dropping it (normal
/// exit, an error, or unwinding from a panic) restores the terminal; a panic hook installed by
/// [`TerminalSession::enter`] restores it before the panic message is printed.
pub struct TerminalSession {
    _private: (),
}

impl TerminalSession {
    /// Enters browser mode and returns a ratatui terminal on stdout.
    pub fn enter() -> Result<(TerminalSession, Terminal<CrosstermBackend<io::Stdout>>)> {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            // A panic must not leave the terminal in raw mode on the alternate screen.
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore_terminal();
                previous(info);
            }));
        });
        enable_raw_mode().context("cannot put the terminal in raw mode")?;
        let session = TerminalSession { _private: () };
        execute!(io::stdout(), EnterAlternateScreen, EnableMouseCapture)
            .context("cannot set up the terminal")?;
        let terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
        Ok((session, terminal))
    }
}

impl Drop for TerminalSession {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Opens `path` and runs the browser until the user quits.
pub fn run(path: &Path, _out: &mut dyn Write) -> Result<Outcome> {
    let reader =
        CaptureReader::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut app = App::new(Arc::new(reader), &name, true);
    let (_session, mut terminal) = TerminalSession::enter()?;
    terminal.clear()?;
    loop {
        let size = terminal.size()?;
        app.prepare(Rect::new(0, 0, size.width, size.height));
        terminal.draw(|f| draw::draw(f, &app))?;
        if app.quit {
            break;
        }
        // Redraw at least every 200 ms while indexing runs, to show its progress.
        if !event::poll(Duration::from_millis(200))? {
            continue;
        }
        let action = match event::read()? {
            Event::Key(k) if k.kind != KeyEventKind::Release => key_action(k, app.input.is_some()),
            Event::Mouse(m) => mouse_action(m),
            _ => None,
        };
        if let Some(a) = action {
            app.apply(a);
        }
    }
    Ok(Outcome::default())
}
