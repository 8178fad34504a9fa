//! Where the log goes and how much of it (`[log]`): a level or filter (`RUST_LOG` overrides it),
//! stderr or a file a day in `[log] dir` (the oldest removed past `files_max`), text or JSON lines.
//! A panic on any thread is logged, naming the thread, and ends the process with status 101: a
//! server with one of its stages dead must not go on looking alive.

use std::io::IsTerminal;

use anyhow::{Context, Result};
use tracing_subscriber::EnvFilter;

use crate::config::LogSection;

/// Log files kept when `[log] files_max` is not set.
pub const FILES_MAX_DEFAULT: usize = 7;

/// Installs the subscriber `cfg` asks for, and the panic hook. Call once, before anything logs.
pub fn init(cfg: &LogSection) -> Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => EnvFilter::try_new(&env).with_context(|| format!("RUST_LOG {env:?}"))?,
        _ => {
            let level = cfg.level.as_deref().unwrap_or("info");
            EnvFilter::try_new(level).with_context(|| format!("[log] level {level:?} is not a level or filter"))?
        }
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    match &cfg.dir {
        Some(dir) => {
            let files_max = cfg.files_max.unwrap_or(FILES_MAX_DEFAULT);
            if files_max == 0 {
                anyhow::bail!("[log] files_max must be at least 1");
            }
            std::fs::create_dir_all(dir).with_context(|| format!("[log] dir {}", dir.display()))?;
            let files = tracing_appender::rolling::RollingFileAppender::builder()
                .rotation(tracing_appender::rolling::Rotation::DAILY)
                .filename_prefix("viaduct")
                .filename_suffix("log")
                .max_log_files(files_max)
                .build(dir)
                .with_context(|| format!("[log] dir {}", dir.display()))?;
            // Written as each line is logged (no buffer to lose at a crash); nothing logs per order.
            let writer = std::sync::Mutex::new(files);
            match cfg.json {
                true => builder.json().with_writer(writer).init(),
                false => builder.with_ansi(false).with_writer(writer).init(),
            }
        }
        None => match cfg.json {
            true => builder.json().with_writer(std::io::stderr).init(),
            false => builder.with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr).init(),
        },
    }
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        tracing::error!("panic on thread {name}: {info}; the process exits");
        default_hook(info);
        std::process::exit(101);
    }));
    Ok(())
}
