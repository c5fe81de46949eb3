//! The JSON Schemas of PROTOCOL.md (`schemas/*.schema.json` at the repository root) against
//! the real encoder and decoder:
//!
//! - every value muster writes validates: the values are taken from the transactions
//!   `Keyspace` builds (register, update, evict), over edge cases (empty and many labels,
//!   names at the length limit in 1- to 4-byte characters, every address form, the integer
//!   limits) and over generated metadata;
//! - what the decoder rejects, the schema rejects too (an incarnation written as a string, a
//!   negative or too large number, a missing name, a wrong type);
//! - where the two knowingly differ (PROTOCOL.md, "What a reader accepts"), a test pins each
//!   difference, so that a change to the decoder or a schema shows up here and the document
//!   is updated with it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use muster_core::{
    validate_addr, EvictionMarker, Incarnation, KeyValue, Keyspace, MemberInfo, Op, Record, Txn,
    MAX_NAME_LEN,
};
use proptest::prelude::*;
use serde_json::Value;

/// The three schemas, compiled.
struct Schemas {
    compiled: boon::Schemas,
    record: boon::SchemaIndex,
    liveness: boon::SchemaIndex,
    marker: boon::SchemaIndex,
}

/// Which value a document is.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Record,
    Liveness,
    Marker,
}

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

impl Schemas {
    fn load() -> Schemas {
        let mut compiler = boon::Compiler::new();
        let mut compiled = boon::Schemas::new();
        let mut index = |file: &str| {
            let path = schema_dir().join(file);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            let json: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            let url = format!("file:///muster/schemas/{file}");
            compiler
                .add_resource(&url, json)
                .unwrap_or_else(|e| panic!("add {file}: {e}"));
            compiler
                .compile(&url, &mut compiled)
                .unwrap_or_else(|e| panic!("compile {file}: {e:#}"))
        };
        let record = index("record.schema.json");
        let liveness = index("liveness.schema.json");
        let marker = index("eviction-marker.schema.json");
        Schemas {
            compiled,
            record,
            liveness,
            marker,
        }
    }

    /// `Ok` when `bytes` is JSON valid against the schema of `kind`, else why not.
    fn check(&self, kind: Kind, bytes: &[u8]) -> Result<(), String> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let index = match kind {
            Kind::Record => self.record,
            Kind::Liveness => self.liveness,
            Kind::Marker => self.marker,
        };
        self.compiled
            .validate(&value, index)
            .map_err(|e| format!("{e:#}"))
    }

    /// Panics unless `bytes` validates as `kind`.
    fn assert_valid(&self, kind: Kind, bytes: &[u8]) {
        if let Err(why) = self.check(kind, bytes) {
            panic!(
                "muster wrote a {kind:?} its schema rejects: {}\n{why}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}

fn keyspace() -> Keyspace {
    Keyspace::new("/muster/schemas/").expect("a valid prefix")
}

fn kv(key: &str, value: &[u8]) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: value.to_vec(),
        create_revision: 1,
        mod_revision: 1,
        version: 1,
        lease: 0,
    }
}

/// Every value `txn` puts, with its key.
fn puts(txn: &Txn) -> Vec<(String, Vec<u8>)> {
    txn.then
        .iter()
        .filter_map(|op| match op {
            Op::Put { key, value, .. } => Some((key.clone(), value.clone())),
            Op::Delete { .. } => None,
        })
        .collect()
}

/// Validates every value the register and update transactions of `record` write, and reads
/// each back with the real decoder.
fn check_written_record(schemas: &Schemas, record: &Record) {
    assert!(
        record.info.validate().is_ok(),
        "{record:?} must be writable"
    );
    let ks = keyspace();
    let name = &record.info.name;
    let register = puts(&ks.register_txn(record, 42));
    let shared = puts(&ks.register_shared_txn(record, 42));
    let update = puts(&ks.update_txn(record, 42));
    assert_eq!(register.len(), 2, "register writes both keys");
    assert_eq!(shared.len(), 2, "a shared-lease register writes both keys");
    assert_eq!(update.len(), 1, "update writes the record");
    let shared_liveness = shared.iter().find(|(key, _)| *key == ks.liveness_key(name));
    let shared_liveness = &shared_liveness.expect("a liveness key").1;
    assert!(
        ks.decode_liveness(&kv(&ks.liveness_key(name), shared_liveness))
            .expect("decodes")
            .shared,
        "a shared-lease registration says so"
    );
    for (key, value) in register.into_iter().chain(shared).chain(update) {
        if key == ks.record_key(name) {
            schemas.assert_valid(Kind::Record, &value);
            let back = ks.decode_record(name, &kv(&key, &value)).expect("decodes");
            assert_eq!(&back, record);
        } else {
            assert_eq!(key, ks.liveness_key(name), "no third key");
            schemas.assert_valid(Kind::Liveness, &value);
            let back = ks.decode_liveness(&kv(&key, &value)).expect("decodes");
            assert_eq!(back.incarnation, record.incarnation);
        }
    }
}

/// Validates the eviction marker an eviction writes.
fn check_written_marker(schemas: &Schemas, marker: &EvictionMarker) {
    let ks = keyspace();
    let txn = ks.evict_txn("a", 5, Some(6), marker, 7);
    let written = puts(&txn);
    assert_eq!(written.len(), 1, "an eviction puts only its marker");
    let (key, value) = &written[0];
    assert_eq!(key, &ks.eviction_key("a", marker.incarnation));
    schemas.assert_valid(Kind::Marker, value);
    assert_eq!(
        &ks.decode_eviction(&kv(key, value)).expect("decodes"),
        marker
    );
}

/// Names at the edges: the shortest, the longest in 1-, 2-, 3- and 4-byte characters, and
/// the punctuation JSON must escape or a key could confuse.
fn edge_names() -> Vec<String> {
    let mut names: Vec<String> = ["a", "api-1", "node_7.zone-b", "ünïcode", "...", ".a", "a:b"]
        .map(String::from)
        .into();
    names.extend(["a\"b", "a\\b", "a=b", "名前", "🦀"].map(String::from));
    for c in ['x', 'é', '名', '🦀'] {
        names.push(c.to_string().repeat(MAX_NAME_LEN));
    }
    names
}

/// Every address form registration accepts.
fn edge_addrs() -> Vec<&'static str> {
    vec![
        "",
        "10.0.0.5:8080",
        "127.0.0.1:1",
        "h:65535",
        "api.internal:443",
        "api.example.com.:443",
        "web_1:80",
        "xn--bcher-kva.example:80",
        "[::1]:8080",
        "[2001:db8::7]:443",
        "[::ffff:10.0.0.1]:80",
    ]
}

/// Label sets: none, one, an empty value, values JSON must escape, odd but valid keys, many.
fn edge_labels() -> Vec<BTreeMap<String, String>> {
    let one = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
    let mut many = BTreeMap::new();
    for i in 0..1000 {
        many.insert(format!("label-{i:04}"), format!("value {i}"));
    }
    vec![
        BTreeMap::new(),
        one("zone", "a"),
        one("zone", ""),
        one("note", "line 1\nline 2\t\"quoted\" \\ \u{7} é 🦀"),
        one("key with spaces", "v"),
        one("k:ü/名", "v"),
        many,
    ]
}

#[test]
fn every_record_and_liveness_muster_writes_validates() {
    let schemas = Schemas::load();
    let mut checked = 0;
    for name in edge_names() {
        for addr in edge_addrs() {
            assert!(validate_addr(addr).is_ok(), "{addr}");
            for (cpus, draining) in [(0, false), (1, true), (64, false), (u32::MAX, true)] {
                let info = MemberInfo {
                    name: name.clone(),
                    addr: addr.to_string(),
                    cpus,
                    labels: Default::default(),
                    draining,
                };
                for incarnation in [0, 1, (1 << 53) + 1, u64::MAX] {
                    let record = Record {
                        info: info.clone(),
                        incarnation: Incarnation(incarnation),
                    };
                    check_written_record(&schemas, &record);
                    checked += 1;
                }
            }
        }
        for labels in edge_labels() {
            let record = Record {
                info: MemberInfo {
                    labels: labels.into(),
                    ..MemberInfo::new(name.clone(), "h:1")
                },
                incarnation: Incarnation(7),
            };
            check_written_record(&schemas, &record);
            checked += 1;
        }
    }
    assert!(checked > 1000, "{checked}");
}

#[test]
fn every_eviction_marker_muster_writes_validates() {
    let schemas = Schemas::load();
    for incarnation in [0, 1, u64::MAX] {
        for at_unix_ms in [0, 1_764_000_000_000, u64::MAX] {
            for hold_ms in [0, 2_000, 3_600_000, u64::MAX] {
                check_written_marker(
                    &schemas,
                    &EvictionMarker {
                        incarnation: Incarnation(incarnation),
                        at_unix_ms,
                        hold_ms,
                    },
                );
            }
        }
    }
}

/// Any character a name may hold: ASCII, Latin, CJK, emoji, and the odd ones out.
fn name_char() -> impl Strategy<Value = char> {
    prop_oneof![
        proptest::char::range('!', '~'),
        proptest::char::any(),
        Just('é'),
        Just('名'),
        Just('🦀'),
    ]
}

fn valid_name() -> impl Strategy<Value = String> {
    proptest::collection::vec(name_char(), 1..=MAX_NAME_LEN)
        .prop_map(|chars| chars.into_iter().collect::<String>())
        .prop_filter("a valid name", |n| muster_core::validate_name(n).is_ok())
}

fn valid_label_key() -> impl Strategy<Value = String> {
    "[^=\\p{Cc}]{1,20}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever valid metadata a worker registers, what it writes validates.
    #[test]
    fn generated_metadata_validates(
        name in valid_name(),
        addr in proptest::sample::select(edge_addrs()),
        cpus in any::<u32>(),
        labels in proptest::collection::btree_map(valid_label_key(), any::<String>(), 0..8),
        incarnation in any::<u64>(),
        draining in any::<bool>(),
    ) {
        let schemas = Schemas::load();
        let record = Record {
            info: MemberInfo { name, addr: addr.into(), cpus, labels: labels.into(), draining },
            incarnation: Incarnation(incarnation),
        };
        check_written_record(&schemas, &record);
    }
}

/// Documents muster's decoder accepts that a writer following PROTOCOL.md may write: the
/// schema accepts each too.
#[test]
fn what_a_writer_may_write_both_accept() {
    let schemas = Schemas::load();
    let ks = keyspace();
    for doc in [
        r#"{"name":"a"}"#,
        r#"{"name":"a","addr":"h:1"}"#,
        r#"{"name":"a","incarnation":7}"#,
        r#"{"name":"a","labels":{}}"#,
        r#"{"name":"a","addr":"","cpus":0,"labels":{"zone":"a"},"incarnation":0}"#,
        r#"{"incarnation":18446744073709551615,"name":"a","future":{"x":[1,2]},"pid":1}"#,
        " {\"name\" : \"a\"}\n",
    ] {
        ks.decode_record("a", &kv(&ks.record_key("a"), doc.as_bytes()))
            .unwrap_or_else(|e| panic!("the decoder rejects {doc}: {e}"));
        schemas
            .check(Kind::Record, doc.as_bytes())
            .unwrap_or_else(|e| panic!("the schema rejects {doc}: {e}"));
    }
    for doc in [
        r#"{"incarnation":0}"#,
        r#"{"incarnation":18446744073709551615}"#,
        r#"{"incarnation":7,"pid":42,"started":"today"}"#,
    ] {
        ks.decode_liveness(&kv(&ks.liveness_key("a"), doc.as_bytes()))
            .unwrap_or_else(|e| panic!("the decoder rejects {doc}: {e}"));
        schemas
            .check(Kind::Liveness, doc.as_bytes())
            .unwrap_or_else(|e| panic!("the schema rejects {doc}: {e}"));
    }
    for doc in [
        r#"{"incarnation":7}"#,
        r#"{"incarnation":7,"at_unix_ms":1,"hold_ms":2,"by":"ops"}"#,
    ] {
        ks.decode_eviction(&kv(
            "/muster/schemas/evicted/a/0000000000000007",
            doc.as_bytes(),
        ))
        .unwrap_or_else(|e| panic!("the decoder rejects {doc}: {e}"));
        schemas
            .check(Kind::Marker, doc.as_bytes())
            .unwrap_or_else(|e| panic!("the schema rejects {doc}: {e}"));
    }
}

/// Whether muster's decoder accepts `doc` as `kind` (a record of member `a`).
fn decodes(kind: Kind, doc: &str) -> bool {
    let ks = keyspace();
    match kind {
        Kind::Record => ks
            .decode_record("a", &kv(&ks.record_key("a"), doc.as_bytes()))
            .is_ok(),
        Kind::Liveness => ks
            .decode_liveness(&kv(&ks.liveness_key("a"), doc.as_bytes()))
            .is_ok(),
        Kind::Marker => ks
            .decode_eviction(&kv(&ks.eviction_key("a", Incarnation(7)), doc.as_bytes()))
            .is_ok(),
    }
}

/// What the decoder skips as undecodable, the schema rejects: the two cannot drift apart on
/// types, ranges, required fields or names.
#[test]
fn what_the_decoder_rejects_the_schema_rejects() {
    let schemas = Schemas::load();
    let long = "x".repeat(MAX_NAME_LEN + 1);
    let too_long = format!(r#"{{"name":"{long}"}}"#);
    let cases: Vec<(Kind, &str)> = vec![
        // The incarnation as a string: the mistake PROTOCOL.md warns about.
        (Kind::Record, r#"{"name":"a","incarnation":"7"}"#),
        (Kind::Liveness, r#"{"incarnation":"7"}"#),
        (Kind::Marker, r#"{"incarnation":"7"}"#),
        // Out of range or of the wrong sign.
        (Kind::Record, r#"{"name":"a","incarnation":-1}"#),
        (Kind::Liveness, r#"{"incarnation":-1}"#),
        (Kind::Record, r#"{"name":"a","cpus":-1}"#),
        (Kind::Record, r#"{"name":"a","cpus":4294967296}"#),
        (Kind::Record, r#"{"name":"a","cpus":"4"}"#),
        (Kind::Record, r#"{"name":"a","cpus":4.5}"#),
        (Kind::Marker, r#"{"incarnation":7,"hold_ms":-1}"#),
        (Kind::Marker, r#"{"incarnation":7,"at_unix_ms":"now"}"#),
        // Required fields.
        (Kind::Record, "{}"),
        (Kind::Record, r#"{"addr":"h:1"}"#),
        (Kind::Liveness, "{}"),
        (Kind::Marker, r#"{"hold_ms":1}"#),
        // Wrong types, null included (null is not "absent").
        (Kind::Record, r#"{"name":7}"#),
        (Kind::Record, r#"{"name":null}"#),
        (Kind::Record, r#"{"name":"a","addr":null}"#),
        (Kind::Record, r#"{"name":"a","addr":8080}"#),
        (Kind::Record, r#"{"name":"a","labels":null}"#),
        (Kind::Record, r#"{"name":"a","labels":["zone"]}"#),
        (Kind::Record, r#"{"name":"a","labels":{"zone":1}}"#),
        (Kind::Record, r#"{"name":"a","labels":{"zone":null}}"#),
        (Kind::Record, r#"{"name":"a","incarnation":null}"#),
        (Kind::Liveness, r#"{"incarnation":null}"#),
        (Kind::Liveness, r#"{"incarnation":true}"#),
        // Not an object at all.
        (Kind::Record, r#""a""#),
        (Kind::Record, "null"),
        (Kind::Liveness, "7"),
        (Kind::Record, "[]"),
        // Invalid names.
        (Kind::Record, r#"{"name":""}"#),
        (Kind::Record, r#"{"name":"a/b"}"#),
        (Kind::Record, r#"{"name":"a b"}"#),
        (Kind::Record, r#"{"name":"a\tb"}"#),
        (Kind::Record, r#"{"name":"a\u0000"}"#),
        (Kind::Record, r#"{"name":"a\u0085"}"#),
        (Kind::Record, r#"{"name":"a\u00a0"}"#),
        (Kind::Record, r#"{"name":"a\u3000"}"#),
        (Kind::Record, r#"{"name":"a\u2028"}"#),
        (Kind::Record, r#"{"name":"."}"#),
        (Kind::Record, r#"{"name":".."}"#),
        (Kind::Record, &too_long),
    ];
    for (kind, doc) in cases {
        assert!(!decodes(kind, doc), "the decoder accepts {kind:?} {doc}");
        assert!(
            schemas.check(kind, doc.as_bytes()).is_err(),
            "the decoder rejects {kind:?} {doc}, but the schema accepts it"
        );
    }
}

/// Where the schema and the decoder knowingly differ, each pinned, as PROTOCOL.md lists them
/// ("What a reader accepts"). A failure here means one of them changed: update the document.
#[test]
fn known_differences_are_as_documented() {
    let schemas = Schemas::load();
    let schema_ok = |kind, doc: &str| schemas.check(kind, doc.as_bytes()).is_ok();

    // 1. The schema is stricter than the decoder about what writers must write: an address
    //    that is not HOST:PORT, a label key with '=' or empty. The decoder reads them (a
    //    record already in the store is read whatever it says); registration refuses them.
    for doc in [
        r#"{"name":"a","addr":"pid:4000000x"}"#,
        r#"{"name":"a","addr":"10.0.0.1"}"#,
        r#"{"name":"a","labels":{"a=b":"c"}}"#,
        r#"{"name":"a","labels":{"":"c"}}"#,
    ] {
        assert!(decodes(Kind::Record, doc), "the decoder now rejects {doc}");
        assert!(
            !schema_ok(Kind::Record, doc),
            "the schema now accepts {doc}"
        );
    }

    // 2. (No longer a difference: a JSON array of the fields, which serde would read as a
    //    struct, is refused by the decoder as by the schema.)
    for (kind, doc) in [
        (Kind::Record, r#"["a","h:1",4,{},7]"#),
        (Kind::Record, r#"["a"]"#),
        (Kind::Record, r#" ["a"]"#),
        (Kind::Liveness, "[7]"),
    ] {
        assert!(!decodes(kind, doc), "the decoder now accepts {doc}");
        assert!(!schema_ok(kind, doc), "the schema now accepts {doc}");
    }

    // 3. JSON Schema's "integer" is any number with no fractional part, so 4.0 and 4e0 pass
    //    the schema; muster's decoder wants an integer literal. Write integers as integers.
    for (kind, doc) in [
        (Kind::Record, r#"{"name":"a","cpus":4.0}"#),
        (Kind::Record, r#"{"name":"a","incarnation":7.0}"#),
        (Kind::Liveness, r#"{"incarnation":7e0}"#),
    ] {
        assert!(!decodes(kind, doc), "the decoder now accepts {doc}");
        assert!(schema_ok(kind, doc), "the schema now rejects {doc}");
    }

    // 4. A field given twice is undecodable; a schema validator sees one of the two.
    let twice = r#"{"name":"a","incarnation":7,"incarnation":8}"#;
    assert!(
        !decodes(Kind::Record, twice),
        "the decoder now accepts {twice}"
    );
    assert!(
        schema_ok(Kind::Record, twice),
        "the schema now rejects {twice}"
    );
    // ...but a label given twice is not: the last one counts.
    let label_twice = r#"{"name":"a","labels":{"z":"1","z":"2"}}"#;
    let ks = keyspace();
    let record = ks
        .decode_record("a", &kv(&ks.record_key("a"), label_twice.as_bytes()))
        .expect("decodes");
    assert_eq!(&record.info.labels["z"], "2");

    // 5. One past the largest incarnation: the schema's validator reads numbers that do not
    //    fit 64 bits as floating point, where 2^64 - 1 and 2^64 are the same number.
    let past = r#"{"name":"a","incarnation":18446744073709551616}"#;
    assert!(
        !decodes(Kind::Record, past),
        "the decoder now accepts {past}"
    );
    assert!(
        schema_ok(Kind::Record, past),
        "the schema now rejects {past}"
    );
    let far_past = r#"{"name":"a","incarnation":18446744073709600000}"#;
    assert!(
        !schema_ok(Kind::Record, far_past),
        "the schema accepts {far_past}"
    );

    // 6. A record whose name is not its key's name is undecodable; no schema can see the key.
    let other = r#"{"name":"b"}"#;
    assert!(!decodes(Kind::Record, other), "a record of b under a's key");
    assert!(schema_ok(Kind::Record, other));
}
