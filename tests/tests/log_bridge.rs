//! The log bridge: `tracing` events inside a plugin reach the host's subscriber under the target
//! `plugin`, tagged with the plugin's name; plugin panics are reported with their location.
//! (Its own test binary: the subscriber must be installed before the plugin is first loaded.)

use std::sync::{Arc, Mutex};

use aiclient::plugins::{create_storage, loader};
use serde_json::json;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(String, String)>>>);

struct Fields(String);
impl Visit for Fields {
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={v:?} ", f.name()));
    }
    fn record_str(&mut self, f: &Field, v: &str) {
        self.0.push_str(&format!("{}={v} ", f.name()));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, e: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut f = Fields(String::new());
        e.record(&mut f);
        self.0
            .lock()
            .expect("lock")
            .push((e.metadata().target().to_string(), f.0));
    }
}

#[tokio::test]
async fn plugin_events_and_panics_reach_the_host_subscriber() {
    let cap = Capture::default();
    let sub = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::DEBUG)
        .with(cap.clone());
    tracing::subscriber::set_global_default(sub).expect("install subscriber");

    let lib =
        loader::load_storage(aiclient_tests::artifacts::get().lib("aiclient_fixture_panic_plugin"))
            .expect("load");
    let s = create_storage(&lib, &json!({})).await.expect("create");
    s.status().await.expect_err("the first status call panics");

    let events = cap.0.lock().expect("lock").clone();
    let created = events
        .iter()
        .find(|(t, f)| t == "plugin" && f.contains("panic fixture created"));
    let (_, fields) =
        created.unwrap_or_else(|| panic!("the plugin's info event arrived: {events:#?}"));
    assert!(
        fields.contains("plugin=panic-fixture"),
        "tagged with the plugin's name: {fields}"
    );
    assert!(
        fields.contains("plugin.target=aiclient_fixture_panic_plugin"),
        "keeps the plugin's target: {fields}"
    );
    assert!(
        fields.contains("answer=42"),
        "keeps the event's fields: {fields}"
    );

    let panicked = events
        .iter()
        .find(|(t, f)| t == "plugin" && f.contains("panicked: status call 0 panics on purpose"));
    let (_, fields) = panicked.unwrap_or_else(|| panic!("the panic was reported: {events:#?}"));
    assert!(
        fields.contains("panic-plugin/src/lib.rs"),
        "with its location: {fields}"
    );
}
