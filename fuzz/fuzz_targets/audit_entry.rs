//! The audit log's entries: events whose fields come from clients (RA identities, request
//! ids, comments, serials), their canonical text and hash chain, and the usage counts put
//! back from entries' detail JSON. The input is a control byte and then entries in their
//! JSON form (`[{"seq":1,"at":...,"event":{...},"prev_hash":"...","hash":"..."}]`).
//! `verify_chain` on the entries as given accepts only entries whose hashes are theirs; a
//! chain rebuilt from their events verifies; its canonical text reads back field for field
//! (no value can forge a line); an entry round-trips through JSON; changing one field of
//! one entry (chosen by the control byte) breaks the chain exactly there; and usage counts
//! put back from the events' details are counted again, never lost or wrapped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signet::audit::{
    AuditEntry, AuditEvent, UsageCounter, entry_hash, entry_hash_v1, genesis_hash, verify_chain,
};

/// Read an entry's canonical text back: nine `name: value` lines in a fixed order, the
/// event's fields as JSON string literals.
fn read_text(text: &str) -> (i64, i64, AuditEvent, String) {
    let body = text.strip_suffix('\n').expect("the text ends in a newline");
    let lines: Vec<&str> = body.split('\n').collect();
    assert_eq!(lines.len(), 9, "{text:?}");
    assert_eq!(lines[0], "signet-audit-entry-v2");
    let field = |i: usize, name: &str| -> &str {
        lines[i]
            .strip_prefix(name)
            .and_then(|l| l.strip_prefix(": "))
            .unwrap_or_else(|| panic!("line {i} is not {name}: {:?}", lines[i]))
    };
    let string = |i: usize, name: &str| -> String {
        serde_json::from_str(field(i, name)).expect("a JSON string literal")
    };
    let seq = field(1, "seq").parse().expect("seq");
    let at = field(2, "at").parse().expect("at");
    let request_digest: Option<String> =
        serde_json::from_str(field(6, "request_digest")).expect("a JSON string or null");
    let event = AuditEvent {
        actor: string(3, "actor"),
        action: string(4, "action"),
        object: string(5, "object"),
        request_digest,
        detail: string(7, "detail"),
    };
    (seq, at, event, field(8, "prev_hash").to_owned())
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, json)) = data.split_first() else {
        return;
    };
    let Ok(given) = serde_json::from_slice::<Vec<AuditEntry>>(json) else {
        return;
    };
    let given = &given[..given.len().min(16)];

    // The entries as given: accepted only if each is what its hash says.
    if let Ok(n) = verify_chain(given) {
        assert_eq!(n, given.len());
        for e in given {
            assert!(
                e.hash == entry_hash(&e.prev_hash, e.seq, e.at, &e.event)
                    || e.hash == entry_hash_v1(&e.prev_hash, e.seq, e.at, &e.event),
                "entry {} verified with a hash that is not its own",
                e.seq
            );
        }
    }

    // A chain rebuilt from the same events.
    let mut chain: Vec<AuditEntry> = Vec::with_capacity(given.len());
    let mut prev = genesis_hash();
    for (i, g) in given.iter().enumerate() {
        let seq = i as i64 + 1;
        let hash = entry_hash(&prev, seq, g.at, &g.event);
        let entry = AuditEntry {
            seq,
            at: g.at,
            event: g.event.clone(),
            prev_hash: prev.clone(),
            hash: hash.clone(),
        };
        let (s, at, back, p) = read_text(&entry.text());
        assert_eq!((s, at, &back, &p), (seq, g.at, &entry.event, &prev));
        let json = serde_json::to_string(&entry).expect("an entry serialises");
        let again: AuditEntry = serde_json::from_str(&json).expect("and deserialises");
        assert_eq!(again, entry);
        chain.push(entry);
        prev = hash;
    }
    assert_eq!(verify_chain(&chain), Ok(chain.len()));

    let which = control & 7;
    if which < 5 && !chain.is_empty() {
        let k = usize::from(control >> 3) % chain.len();
        let mut edited = chain.clone();
        let e = &mut edited[k].event;
        let slot = match which {
            0 => &mut e.actor,
            1 => &mut e.action,
            2 => &mut e.object,
            3 => e.request_digest.get_or_insert_with(String::new),
            _ => &mut e.detail,
        };
        slot.push('\n');
        let broken = verify_chain(&edited).expect_err("an edited chain verified");
        assert_eq!(broken.seq, k as i64 + 1, "{broken}");
    }

    // Usage counts put back after a failed append come out in the next period's entries.
    let counter = UsageCounter::new(0);
    let events: Vec<AuditEvent> = given.iter().map(|e| e.event.clone()).collect();
    counter.restore(&events);
    let counted = counter
        .take(1)
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(&e.detail).expect("detail is JSON");
            v["count"].as_u64().expect("a count")
        })
        .fold(0, u64::saturating_add);
    let put_back = events
        .iter()
        .map(|e| {
            serde_json::from_str::<serde_json::Value>(&e.detail)
                .ok()
                .and_then(|v| v["count"].as_u64())
                .unwrap_or(0)
        })
        .fold(0, u64::saturating_add);
    assert_eq!(counted, put_back, "counts put back are counted again");
});
