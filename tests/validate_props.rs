//! Property tests of request validation: random bodies never crash the
//! validator, and a body it accepts (or the body it forwards after
//! stripping) always conforms to the schema, as judged by an independent,
//! hand-written check of the same rules.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis::validate::{Contract, compile_body};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// The demo's post schema.
fn contract(strip: bool) -> Contract {
    let doc = json!({"openapi": "3.1.0"});
    let op = json!({"requestBody": {"required": true, "content": {"application/json": {"schema": {
        "type": "object",
        "required": ["title", "content"],
        "properties": {
            "title": {"type": "string", "minLength": 1, "maxLength": 200},
            "content": {"type": "string", "minLength": 1, "maxLength": 50000},
            "tags": {"type": "array", "maxItems": 10, "items": {"type": "string", "maxLength": 50}},
            "publishedAt": {"type": "string", "format": "date-time"},
            "id": {"type": "string", "readOnly": true}
        }
    }}}}});
    let mut c = Contract::with_body(compile_body(&doc, &op, true).unwrap(), 32);
    c.strip = strip;
    c
}

const DATES_OK: [&str; 3] = [
    "2026-11-23T12:00:00Z",
    "1999-01-01T00:00:00+02:00",
    "2026-02-28T23:59:59.5Z",
];
const DATES_BAD: [&str; 4] = ["yesterday", "2026-13-01T00:00:00Z", "", "2026-11-23"];

/// The oracle: the schema's rules written out by hand (lengths count
/// characters, as JSON Schema does).
fn conforms(v: &Value) -> bool {
    let Some(o) = v.as_object() else { return false };
    let len_ok = |x: Option<&Value>, min: usize, max: usize| {
        x.and_then(Value::as_str)
            .is_some_and(|s| (min..=max).contains(&s.chars().count()))
    };
    let allowed = ["title", "content", "tags", "publishedAt"];
    o.keys().all(|k| allowed.contains(&k.as_str()))
        && len_ok(o.get("title"), 1, 200)
        && len_ok(o.get("content"), 1, 50000)
        && o.get("tags").is_none_or(|t| {
            t.as_array().is_some_and(|a| {
                a.len() <= 10
                    && a.iter()
                        .all(|x| x.as_str().is_some_and(|s| s.chars().count() <= 50))
            })
        })
        && o.get("publishedAt")
            .is_none_or(|d| d.as_str().is_some_and(|s| DATES_OK.contains(&s)))
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "\\PC{0,60}".prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn text(max: usize) -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::collection::vec(any::<char>(), 0..max)
            .prop_map(|c| Value::from(c.into_iter().collect::<String>())),
        any_json(),
    ]
}

/// Bodies near the schema: the declared fields with right and wrong
/// values, read-only and undeclared ones sometimes.
fn post() -> impl Strategy<Value = Value> {
    (
        prop::option::of(text(230)),
        prop::option::of(prop_oneof![text(60), Just(Value::from("x".repeat(50_001)))]),
        prop::option::of(prop_oneof![
            prop::collection::vec(text(60), 0..13).prop_map(Value::Array),
            any_json(),
        ]),
        prop::option::of(prop_oneof![
            prop::sample::select(DATES_OK.to_vec()).prop_map(Value::from),
            prop::sample::select(DATES_BAD.to_vec()).prop_map(Value::from),
            any_json(),
        ]),
        prop::option::of(any_json()),
        prop::option::of(("\\PC{1,10}", any_json())),
    )
        .prop_map(|(title, content, tags, date, id, extra)| {
            let mut m = Map::new();
            for (k, v) in [
                ("title", title),
                ("content", content),
                ("tags", tags),
                ("publishedAt", date),
                ("id", id),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            if let Some((k, v)) = extra {
                m.insert(k, v);
            }
            Value::Object(m)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn arbitrary_bytes_never_crash(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let c = contract(false);
        let _ = c.check_body(&bytes, &|_| true);
        let _ = contract(true).check_body(&bytes, &|_| true);
    }

    #[test]
    fn arbitrary_json_never_crashes_and_only_conforming_json_passes(v in any_json()) {
        let body = serde_json::to_vec(&v).unwrap();
        let accepted = contract(false).check_body(&body, &|_| true);
        if let Ok(None) = accepted {
            prop_assert!(conforms(&v), "accepted {v}");
        }
    }

    #[test]
    fn accepted_bodies_conform_and_conforming_bodies_are_accepted(v in post()) {
        let body = serde_json::to_vec(&v).unwrap();
        match contract(false).check_body(&body, &|_| true) {
            Ok(None) => prop_assert!(conforms(&v), "accepted {v}"),
            Ok(Some(_)) => prop_assert!(false, "refuse mode rewrote a body"),
            Err(_) => prop_assert!(!conforms(&v), "refused a conforming body {v}"),
        }
        // strip mode: what is forwarded conforms, and a body whose only
        // faults are undeclared or read-only fields is forwarded without them
        let mut declared = v.clone();
        if let Some(o) = declared.as_object_mut() {
            o.retain(|k, _| ["title", "content", "tags", "publishedAt"].contains(&k.as_str()));
        }
        match contract(true).check_body(&body, &|_| true) {
            Ok(None) => prop_assert!(conforms(&v)),
            Ok(Some(out)) => {
                let fwd: Value = serde_json::from_slice(&out).unwrap();
                prop_assert!(conforms(&fwd), "forwarded {fwd}");
                prop_assert_eq!(fwd, declared);
            }
            // (numbers that would not be checked exactly are refused
            // before anything is stripped)
            Err(_) => prop_assert!(
                !conforms(&declared) || portcullis::validate::parse_strict(&body, 32).is_err(),
                "strip refused {v}"
            ),
        }
    }
}
