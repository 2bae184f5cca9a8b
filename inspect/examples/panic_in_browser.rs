//! Enters the browser's terminal mode, draws a screen, then panics: the test
//! `panic_in_browser_mode_restores_the_terminal` checks that the terminal comes back.

use ratatui::widgets::Paragraph;
use vgt_inspect::tui::TerminalSession;

fn main() -> anyhow::Result<()> {
    let (_session, mut terminal) = TerminalSession::enter()?;
    terminal.draw(|f| f.render_widget(Paragraph::new("BROWSER-SCREEN"), f.area()))?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    panic!("deliberate panic inside the browser");
}
