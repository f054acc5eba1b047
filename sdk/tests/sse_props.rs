//! Property tests of the SSE parser: any well-formed event stream, with any line endings and
//! cut into any chunks, parses to exactly its events; any bytes at all never panic and never
//! grow the parser past its limit.

use aiclient_sdk::sse::{SseEvent, SseParser};
use proptest::prelude::*;

fn field_text() -> impl Strategy<Value = String> {
    // No line breaks inside a field (they would end the line); anything else, unicode included.
    "[^\r\n]{0,40}"
}

fn events() -> impl Strategy<Value = Vec<(String, Vec<String>)>> {
    prop::collection::vec(
        (
            prop::option::of("[a-z_.]{1,20}").prop_map(Option::unwrap_or_default),
            prop::collection::vec(field_text(), 1..4),
        ),
        0..8,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn well_formed_streams_parse_exactly(evs in events(), ending in prop::sample::select(vec!["\n", "\r\n", "\r"]), cuts in prop::collection::vec(1usize..64, 0..20)) {
        let mut text = String::new();
        let mut want = Vec::new();
        for (name, data) in &evs {
            if !name.is_empty() {
                text.push_str(&format!("event: {name}{ending}"));
            }
            for d in data {
                text.push_str(&format!("data: {d}{ending}"));
            }
            text.push_str(ending);
            want.push(SseEvent { event: name.clone(), data: data.join("\n") });
        }
        let bytes = text.as_bytes();
        let mut p = SseParser::default();
        let mut got = Vec::new();
        let mut at = 0;
        for c in cuts {
            let end = (at + c).min(bytes.len());
            p.push(&bytes[at..end], &mut got).expect("well-formed input");
            at = end;
        }
        p.push(&bytes[at..], &mut got).expect("well-formed input");
        p.finish(&mut got).expect("finish");
        prop_assert_eq!(got, want);
    }

    #[test]
    fn any_bytes_never_panic_and_stay_bounded(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..30)) {
        let mut p = SseParser::new(1024);
        let mut out = Vec::new();
        for c in &chunks {
            if p.push(c, &mut out).is_err() {
                // Over the limit or not UTF-8: a clean error, and the caller stops here.
                return Ok(());
            }
        }
        let _ = p.finish(&mut out);
        for e in &out {
            prop_assert!(e.data.len() <= 1024);
        }
    }
}
