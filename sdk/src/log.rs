//! The log bridge: `tracing` events inside a plugin reach the host's subscriber.
//!
//! A cdylib has its own copy of `tracing` with its own global dispatcher, so without this a
//! plugin's events go nowhere. At `init` the host hands the plugin a [`LogSink`]; the plugin
//! installs a subscriber whose only layer formats each event into a [`LogRecord`] and calls the
//! sink, and a panic hook that reports plugin panics (with their location) the same way. The
//! host re-emits each record under the target `plugin`, tagged with the plugin's name.
//!
//! The plugin reads the host's level once, at `init`; events below it are filtered inside the
//! plugin and never cross the boundary.

use std::fmt::Write as _;
use std::sync::OnceLock;

use abi_stable::{
    StableAbi, sabi_trait,
    std_types::{RArc, RStr, RString},
};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// Log levels as they cross the boundary (`tracing`'s order: lower is more severe).
#[repr(transparent)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogLevel(pub u8);

impl LogLevel {
    pub const OFF: Self = Self(0);
    pub const ERROR: Self = Self(1);
    pub const WARN: Self = Self(2);
    pub const INFO: Self = Self(3);
    pub const DEBUG: Self = Self(4);
    pub const TRACE: Self = Self(5);

    pub fn from_tracing(level: &tracing::Level) -> Self {
        match *level {
            tracing::Level::ERROR => Self::ERROR,
            tracing::Level::WARN => Self::WARN,
            tracing::Level::INFO => Self::INFO,
            tracing::Level::DEBUG => Self::DEBUG,
            tracing::Level::TRACE => Self::TRACE,
        }
    }

    pub fn from_filter(filter: tracing::level_filters::LevelFilter) -> Self {
        match filter.into_level() {
            None => Self::OFF,
            Some(l) => Self::from_tracing(&l),
        }
    }

    pub fn to_filter(self) -> tracing::level_filters::LevelFilter {
        use tracing::level_filters::LevelFilter as F;
        match self.0 {
            0 => F::OFF,
            1 => F::ERROR,
            2 => F::WARN,
            3 => F::INFO,
            4 => F::DEBUG,
            _ => F::TRACE,
        }
    }
}

/// One log event from a plugin.
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct LogRecord<'a> {
    pub level: LogLevel,
    /// The event's target inside the plugin (usually its module path).
    pub target: RStr<'a>,
    pub message: RStr<'a>,
    /// The event's other fields, `key=value` separated by spaces.
    pub fields: RStr<'a>,
    /// The names of the spans the event happened in, outermost first, `:`-separated.
    pub spans: RStr<'a>,
    pub file: RStr<'a>,
    pub line: u32,
}

/// Implemented by the host; receives a plugin's log records.
#[sabi_trait]
pub trait LogSink: Send + Sync {
    /// The most verbose level the host wants.
    fn max_level(&self) -> LogLevel;

    #[sabi(last_prefix_field)]
    fn log(&self, record: &LogRecord<'_>);
}

/// A host-provided sink as it crosses the boundary.
pub type LogSinkObject = LogSink_TO<'static, RArc<()>>;

/// What the host gives a plugin library at `init`.
#[repr(C)]
#[derive(StableAbi)]
pub struct HostContext {
    /// The name the host knows the plugin by (used for thread names and panic messages).
    pub plugin_name: RString,
    pub log_sink: LogSinkObject,
}

static SINK: OnceLock<LogSinkObject> = OnceLock::new();

/// Installs the forwarding subscriber and the panic hook. Called by the export macros from the
/// plugin's `init`; only the first call in a library takes effect.
pub fn install(sink: LogSinkObject) {
    if SINK.set(sink).is_err() {
        return;
    }
    let sink = SINK.get().expect("just set");
    let level = sink.max_level().to_filter();
    let subscriber = tracing_subscriber::registry()
        .with(level)
        .with(ForwardLayer);
    let _ = tracing::subscriber::set_global_default(subscriber);
    std::panic::set_hook(Box::new(|info| {
        let msg = if let Some(s) = info.payload().downcast_ref::<&'static str>() {
            (*s).to_string()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "non-string panic payload".to_string()
        };
        let (file, line) = info
            .location()
            .map(|l| (l.file(), l.line()))
            .unwrap_or(("?", 0));
        forward(
            LogLevel::ERROR,
            "panic",
            &format!("panicked: {msg}"),
            "",
            "",
            file,
            line,
        );
    }));
}

fn forward(
    level: LogLevel,
    target: &str,
    message: &str,
    fields: &str,
    spans: &str,
    file: &str,
    line: u32,
) {
    if let Some(sink) = SINK.get() {
        sink.log(&LogRecord {
            level,
            target: target.into(),
            message: message.into(),
            fields: fields.into(),
            spans: spans.into(),
            file: file.into(),
            line,
        });
    }
}

struct ForwardLayer;

impl<S> tracing_subscriber::Layer<S> for ForwardLayer
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut v = FieldText::default();
        event.record(&mut v);
        let mut spans = String::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if !spans.is_empty() {
                    spans.push(':');
                }
                spans.push_str(span.name());
            }
        }
        forward(
            LogLevel::from_tracing(meta.level()),
            meta.target(),
            &v.message,
            &v.fields,
            &spans,
            meta.file().unwrap_or(""),
            meta.line().unwrap_or(0),
        );
    }
}

#[derive(Default)]
struct FieldText {
    message: String,
    fields: String,
}

impl Visit for FieldText {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            if !self.fields.is_empty() {
                self.fields.push(' ');
            }
            let _ = write!(self.fields, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            if !self.fields.is_empty() {
                self.fields.push(' ');
            }
            let _ = write!(self.fields, "{}={value}", field.name());
        }
    }
}
