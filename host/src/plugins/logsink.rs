//! The host end of the log bridge: records from a plugin's `tracing` are re-emitted here under
//! the target `plugin`, with the plugin's name as a field (tracing needs `&'static` targets, so
//! the plugin's own target travels as the `plugin.target` field).

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::RArc;
use aiclient_sdk::HostContext;
use aiclient_sdk::log::{LogLevel, LogRecord, LogSink, LogSink_TO};
use tracing::level_filters::LevelFilter;

struct HostSink {
    plugin: String,
}

impl LogSink for HostSink {
    fn max_level(&self) -> LogLevel {
        LogLevel::from_filter(LevelFilter::current())
    }

    fn log(&self, r: &LogRecord<'_>) {
        let (plugin, target) = (self.plugin.as_str(), r.target.as_str());
        let (fields, spans, msg) = (r.fields.as_str(), r.spans.as_str(), r.message.as_str());
        let location = if r.file.is_empty() {
            String::new()
        } else {
            format!("{}:{}", r.file, r.line)
        };
        let location = location.as_str();
        macro_rules! emit {
            ($lvl:expr) => {
                tracing::event!(target: "plugin", $lvl, plugin, plugin.target = target,
                    plugin.spans = spans, plugin.fields = fields, plugin.location = location, "{msg}")
            };
        }
        match r.level {
            LogLevel::ERROR => emit!(tracing::Level::ERROR),
            LogLevel::WARN => emit!(tracing::Level::WARN),
            LogLevel::INFO => emit!(tracing::Level::INFO),
            LogLevel::DEBUG => emit!(tracing::Level::DEBUG),
            _ => emit!(tracing::Level::TRACE),
        }
    }
}

/// The context handed to a plugin library's `init`.
pub fn host_context(plugin: &str) -> HostContext {
    HostContext {
        plugin_name: plugin.into(),
        log_sink: LogSink_TO::from_ptr(
            RArc::new(HostSink {
                plugin: plugin.to_string(),
            }),
            TD_Opaque,
        ),
    }
}
