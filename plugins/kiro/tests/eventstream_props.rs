//! Property tests of the AWS event-stream decoder: encoded frames cut into any chunks decode to
//! exactly themselves; flipping any single bit of a frame is a clean error (both CRCs cover
//! everything); arbitrary bytes never panic and never buffer past one frame plus a chunk.

use aiclient_provider_kiro::eventstream::{Decoder, encode_event};
use proptest::prelude::*;

fn decode_all(bytes: &[u8], cuts: &[usize], max: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut d = Decoder::new(max);
    let mut out = Vec::new();
    let mut at = 0;
    let feed = |d: &mut Decoder, chunk: &[u8], out: &mut Vec<Vec<u8>>| -> Result<(), String> {
        d.push(chunk);
        while let Some(f) = d.next_frame().map_err(|e| e.to_string())? {
            out.push(f.payload);
        }
        Ok(())
    };
    for c in cuts {
        let end = (at + c).min(bytes.len());
        feed(&mut d, &bytes[at..end], &mut out)?;
        at = end;
    }
    feed(&mut d, &bytes[at..], &mut out)?;
    d.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn frames_round_trip_through_any_chunking(payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..6), cuts in prop::collection::vec(1usize..97, 0..30)) {
        let mut bytes = Vec::new();
        for p in &payloads {
            bytes.extend(encode_event("assistantResponseEvent", p));
        }
        let got = decode_all(&bytes, &cuts, 1 << 20).expect("valid frames decode");
        prop_assert_eq!(got, payloads);
    }

    #[test]
    fn any_single_bit_flip_is_a_clean_error(payload in prop::collection::vec(any::<u8>(), 1..200), bit in any::<prop::sample::Index>()) {
        let mut bytes = encode_event("assistantResponseEvent", &payload);
        let i = bit.index(bytes.len() * 8);
        bytes[i / 8] ^= 1 << (i % 8);
        // A flip in the length fields may also make the frame look longer than the bytes given.
        if let Ok(frames) = decode_all(&bytes, &[], 1 << 20) {
            prop_assert!(frames.is_empty(), "a corrupted frame must never decode: {frames:?}");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20)) {
        let max = 4096;
        let mut d = Decoder::new(max);
        for c in &chunks {
            d.push(c);
            loop {
                match d.next_frame() {
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(_) => return Ok(()),
                }
            }
            prop_assert!(d.buffered() <= d.max_frame() + c.len());
        }
    }
}
