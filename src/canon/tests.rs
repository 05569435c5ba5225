use proptest::prelude::*;

use super::*;

const MAX: usize = 2048;

fn ok(raw: &str) -> String {
    match canonicalize(raw, MAX) {
        Ok(s) => s,
        Err(e) => panic!("{raw:?} refused: {e:?}"),
    }
}

fn refused(raw: &str) {
    assert!(
        canonicalize(raw, MAX).is_err(),
        "{raw:?} should be refused, got {:?}",
        canonicalize(raw, MAX)
    );
}

#[test]
fn accepts_and_normalizes() {
    assert_eq!(ok("/"), "/");
    assert_eq!(ok("/api/v1/users/42"), "/api/v1/users/42");
    assert_eq!(ok("/api/"), "/api/");
    assert_eq!(ok("/a%7Eb"), "/a~b");
    assert_eq!(ok("/a%41"), "/aA");
    assert_eq!(ok("/caf%c3%a9"), "/caf%C3%A9");
    assert_eq!(ok("/a%20b"), "/a%20b");
    assert_eq!(ok("/a%3Fb"), "/a%3Fb");
    assert_eq!(ok("/a%23b"), "/a%23b");
    assert_eq!(ok("/file.txt"), "/file.txt");
    assert_eq!(ok("/..."), "/...");
    assert_eq!(ok("/a..b"), "/a..b");
    assert_eq!(ok("/100%25"), "/100%25");
    assert_eq!(ok("/a:b@c"), "/a:b@c");
}

#[test]
fn refuses_every_bypass_form() {
    for raw in [
        "/a%2Fb",
        "/a%2fb",
        "/a%5Cb",
        "/a%5cb",
        "/a\\b",
        "/a/../b",
        "/a/./b",
        "/..",
        "/.",
        "/a/..",
        "/a/%2e%2e/b",
        "/a/%2E%2E/b",
        "/a/%2e/b",
        "/a/.%2e/b",
        "/a/%2e./b",
        "//a",
        "/a//b",
        "/a%00b",
        "/a%0ab",
        "/a%0d%0ab",
        "/a%7f",
        "/a%c0%afb",
        "/a%ffb",
        "/a%c3",
        "/a;jsessionid=1",
        "/a%3bb",
        "/a%3Bb",
        "/a#frag",
        "/a%252e%252e/b",
        "/a%252Fb",
        "/a%2",
        "/a%zz",
        "/a%",
        "a/b",
        "",
        "*",
        "/a%c2%85b",
    ] {
        refused(raw);
    }
    assert_eq!(
        canonicalize(&"/a".repeat(2000), MAX),
        Err(PathError::TooLong)
    );
}

#[test]
fn decode_segment_roundtrips() {
    assert_eq!(decode_segment("caf%C3%A9"), "café");
    assert_eq!(decode_segment("a%20b"), "a b");
    assert_eq!(decode_segment("plain"), "plain");
}

/// Forms that must never appear in a canonical path.
fn assert_clean(c: &str) {
    let lower = c.to_ascii_lowercase();
    for bad in ["%2f", "%5c", "\\", "//", ";", "#", "%00", "%3b"] {
        assert!(!lower.contains(bad), "{c:?} contains {bad:?}");
    }
    for seg in c.split('/').skip(1) {
        let d = decode_segment(seg);
        assert!(d != "." && d != "..", "{c:?} has a dot segment");
    }
    assert!(
        c.bytes().all(|b| b.is_ascii_graphic()),
        "{c:?} has a non-graphic byte"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn arbitrary_strings_never_panic_and_stay_clean(s in "\\PC{0,64}") {
        if let Ok(c) = canonicalize(&s, MAX) {
            assert_clean(&c);
            prop_assert_eq!(canonicalize(&c, MAX), Ok(c.clone()));
        }
    }

    #[test]
    fn path_like_inputs_idempotent(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("/".to_string()), Just(".".to_string()), Just("..".to_string()),
                Just("%2e".to_string()), Just("%2F".to_string()), Just("%25".to_string()),
                Just("%5c".to_string()), Just("\\".to_string()), Just(";".to_string()),
                Just("%00".to_string()), Just("%c3%a9".to_string()), Just("%C0%AF".to_string()),
                "[a-zA-Z0-9._~!$&'()*+,=:@-]{1,6}",
                "%[0-9a-fA-F]{2}",
            ],
            0..12,
        )
    ) {
        let raw = format!("/{}", parts.concat());
        if let Ok(c) = canonicalize(&raw, MAX) {
            assert_clean(&c);
            prop_assert_eq!(canonicalize(&c, MAX), Ok(c.clone()));
        }
    }

    #[test]
    fn bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
        let s = String::from_utf8_lossy(&b);
        let _ = canonicalize(&s, MAX);
    }
}
