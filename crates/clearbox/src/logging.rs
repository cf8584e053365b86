//! Logging as runc does it: text or JSON lines (`{"level":…,"msg":…,"time":…}`) to `--log` or
//! stderr. containerd's shim reads the last `"level":"error"` line of the JSON log on failure.

use std::fmt;
use std::fs::OpenOptions;
use std::sync::Mutex;

use anyhow::Context;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::cli::GlobalOpts;

pub fn init(g: &GlobalOpts) -> anyhow::Result<()> {
    let level = match g.log_level.as_deref() {
        Some(l) => l
            .parse::<Level>()
            .map_err(|_| anyhow::anyhow!("invalid --log-level {l:?}"))?,
        None if g.debug => Level::DEBUG,
        None => Level::WARN,
    };
    // libcontainer/libcgroups warn about every cgroup v1 controller this host lacks; runc is
    // silent about those, so their warnings only show with --debug.
    // On stderr their errors would also repeat what clearbox's own one-line error says.
    let quiet_deps = match (level < Level::DEBUG, g.log.is_some()) {
        (false, _) => "",
        (true, true) => ",libcgroups=error,libcontainer=error",
        (true, false) => ",libcgroups=off,libcontainer=off",
    };
    let filter = tracing_subscriber::EnvFilter::new(format!(
        "{}{quiet_deps}",
        level.as_str().to_ascii_lowercase()
    ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    let json = g.log_format == "json";
    match &g.log {
        Some(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open log file {}", path.display()))?;
            let b = builder.with_writer(Mutex::new(file));
            if json {
                b.event_format(RuncJson).try_init()
            } else {
                b.event_format(RuncText).try_init()
            }
        }
        None => {
            let b = builder.with_writer(std::io::stderr);
            if json {
                b.event_format(RuncJson).try_init()
            } else {
                b.event_format(RuncText).try_init()
            }
        }
    }
    .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// runc's JSON log line.
struct RuncJson;

/// runc's (logrus') text log line: `time="…" level=debug msg="…"`.
struct RuncText;

impl<S, N> FormatEvent<S, N> for RuncText
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut msg = MessageOnly(String::new());
        event.record(&mut msg);
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let level = event.metadata().level().as_str().to_ascii_lowercase();
        // Go's %q quoting, which JSON string escaping matches for what we log.
        let quoted = serde_json::Value::String(msg.0.trim_start().to_string());
        writeln!(writer, "time=\"{time}\" level={level} msg={quoted}")
    }
}

struct MessageOnly(String);

impl tracing::field::Visit for MessageOnly {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        use std::fmt::Write;
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl<S, N> FormatEvent<S, N> for RuncJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut msg = MessageOnly(String::new());
        event.record(&mut msg);
        let line = serde_json::json!({
            "level": event.metadata().level().as_str().to_ascii_lowercase(),
            "msg": msg.0.trim_start(),
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        });
        writeln!(writer, "{line}")
    }
}
