//! Matching, table-driven over RULES.md's examples.

use http::Method;

use super::*;

fn rules(text: &str) -> RuleSet {
    match RuleSet::parse("test.json", text) {
        Ok(loaded) => loaded.rules,
        Err(errors) => panic!("{errors}"),
    }
}

/// `expected` is the 0-based index of the rule that serves the request, or `None` for 404.
fn check(set: &RuleSet, method: &str, path: &str, expected: Option<usize>) {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let normalized = normalize_path(path).unwrap();
    assert_eq!(set.route(&method, &normalized), expected, "{method} {path}");
}

#[test]
fn demo_file() {
    let set = rules(include_str!("../../../aliases.json"));
    check(&set, "GET", "/login", Some(0));
    check(&set, "POST", "/login", Some(0));
    check(&set, "POST", "/increment", Some(1));
    check(&set, "GET", "/logout", Some(2));
    check(&set, "GET", "/", Some(3));
    check(&set, "GET", "/x/../login", Some(0));
    check(&set, "GET", "/lo%67in", Some(0));
    check(&set, "GET", "/LOGIN", Some(3));
    check(&set, "GET", "/login/", Some(3));
    check(&set, "GET", "/loginx", Some(3));
}

mod property {
    use proptest::prelude::*;

    use super::super::pattern::reference_match;
    use super::*;

    fn pattern() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("/"),
                Just("*"),
                Just("**"),
                Just("."),
                Just("a"),
                Just("b"),
                Just("ab")
            ],
            0..7,
        )
        .prop_map(|parts| format!("/{}", parts.concat()))
    }

    fn path() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![Just("/"), Just("."), Just("a"), Just("b"), Just("ab")],
            0..8,
        )
        .prop_map(|parts| format!("/{}", parts.concat()))
    }

    fn method() -> impl Strategy<Value = Option<&'static str>> {
        prop_oneof![Just(None), Just(Some("GET")), Just(Some("POST"))]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// The compiled matcher picks the same rule as trying each rule in order with the
        /// reference matcher, over the patterns as they were normalised at load.
        #[test]
        fn compiled_matcher_agrees_with_reference(
            rules_spec in proptest::collection::vec((proptest::option::of(pattern()), method()), 1..6),
            paths in proptest::collection::vec(path(), 1..8),
            request_method in prop_oneof![Just("GET"), Just("POST"), Just("HEAD")],
        ) {
            let rules: Vec<serde_json::Value> = rules_spec
                .iter()
                .map(|(pathname, method)| {
                    let mut rule = serde_json::json!({ "dest": "svc" });
                    if let Some(pathname) = pathname {
                        rule["pathname"] = pathname.clone().into();
                    }
                    if let Some(method) = method {
                        rule["method"] = (*method).into();
                    }
                    rule
                })
                .collect();
            let text = serde_json::json!({ "rules": rules }).to_string();
            let set = rules_from(&text);
            let method = Method::from_bytes(request_method.as_bytes()).unwrap();
            for path in &paths {
                let path = normalize_path(path).unwrap();
                let expected = set.rules().iter().position(|rule| {
                    rule.pathname.as_deref().is_none_or(|p| reference_match(p, &path))
                        && rule.methods.as_ref().is_none_or(|m| m.contains(&method))
                });
                prop_assert_eq!(set.route(&method, &path), expected, "{} {}", method, path);
            }
        }
    }

    fn rules_from(text: &str) -> RuleSet {
        super::rules(text)
    }
}
