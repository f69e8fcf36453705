//! Logging for the prolog, epilog and CLI: `tracing` events with fields, written to stderr and
//! appended to the node's extnet log file (slurmd discards a prolog's output).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use tracing_subscriber::fmt::MakeWriter;

struct Tee {
    file: Option<Mutex<std::fs::File>>,
}

struct TeeWriter<'a>(&'a Tee);

impl Write for TeeWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        if let Some(f) = &self.0.file {
            if let Ok(mut f) = f.lock() {
                let _ = f.write_all(buf);
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Tee {
    type Writer = TeeWriter<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        TeeWriter(self)
    }
}

/// Starts logging for program `prog`; `file` is appended to when it can be opened.
/// `EXTNET_LOG` (e.g. `debug`) sets the level; the default is `info`.
pub fn init(prog: &'static str, file: Option<PathBuf>) {
    let file = file.and_then(|p| {
        if let Some(d) = p.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(p)
            .ok()
            .map(Mutex::new)
    });
    let level = std::env::var("EXTNET_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_target(false)
        .with_writer(Tee { file })
        .try_init();
    tracing::debug!(prog, "logging started");
}
