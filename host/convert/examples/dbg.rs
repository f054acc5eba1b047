use aiclient_convert::*;
use serde_json::json;
fn main() {
    let evs = vec![
        json!({"type":"response.output_item.added","sequence_number":11,"output_index":2,"item":{"id":"fc_1","type":"function_call","call_id":"call_A","name":"shell","arguments":""}}),
        json!({"type":"response.function_call_arguments.delta","sequence_number":12,"item_id":"fc_1","output_index":2,"delta":"{\"cmd\":"}),
        json!({"type":"response.output_item.done","sequence_number":15,"output_index":2,"item":{"id":"fc_1","type":"function_call","call_id":"call_A","name":"shell","arguments":"{\"cmd\":\"ls\"}"}}),
    ];
    let mut c = StreamConverter::new(Protocol::OpenAiResponses, Protocol::Claude, "m");
    for e in &evs { for o in c.push(e["type"].as_str(), e) { println!("{}", o.data); } }
    for o in c.finish() { println!("{}", o.data); }
}
