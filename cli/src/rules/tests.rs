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
    check(&set, "GET", "/stats", Some(3));
    check(&set, "GET", "/", Some(4));
    check(&set, "GET", "/x/../login", Some(0));
    check(&set, "GET", "/lo%67in", Some(0));
    check(&set, "GET", "/LOGIN", Some(4));
    check(&set, "GET", "/login/", Some(4));
    check(&set, "GET", "/loginx", Some(4));
}

#[test]
fn a_byte_order_mark_is_no_part_of_the_file() {
    let text = format!("\u{feff}{}", include_str!("../../../aliases.json"));
    check(&rules(&text), "GET", "/login", Some(0));
}

#[test]
fn rules_md_example() {
    let set = rules(
        r#"{"rules": [
            { "pathname": "/login",     "method": ["GET", "POST"], "dest": "writer" },
            { "pathname": "/increment", "dest": "writer" },
            { "pathname": "/api/**",    "method": "GET",           "dest": "http://127.0.0.1:9000" },
            { "dest": "reader" }
        ]}"#,
    );
    check(&set, "GET", "/login", Some(0));
    check(&set, "POST", "/login", Some(0));
    check(&set, "PUT", "/login", Some(3));
    check(&set, "DELETE", "/increment", Some(1));
    check(&set, "GET", "/api/x", Some(2));
    check(&set, "GET", "/api/x/y", Some(2));
    check(&set, "POST", "/api/x", Some(3));
    check(&set, "GET", "/api", Some(3));
    check(&set, "GET", "/x/api", Some(3));
    check(&set, "GET", "/", Some(3));
}

#[test]
fn docs_2017_example() {
    let set = rules(
        r#"{"rules": [
            { "pathname": "/api/register", "method": "POST", "dest": "register.now.sh" },
            { "pathname": "/api/**", "method": ["GET", "POST"], "dest": "api-abcdefghij.now.sh" },
            { "dest": "my-website.now.sh" }
        ]}"#,
    );
    check(&set, "POST", "/api/register", Some(0));
    check(&set, "GET", "/api/register", Some(1));
    check(&set, "PUT", "/api/register", Some(2));
    check(&set, "GET", "/api/users/1", Some(1));
    check(&set, "DELETE", "/api/users/1", Some(2));
    check(&set, "GET", "/about", Some(2));
}

#[test]
fn no_fallthrough_is_404() {
    let set = rules(r#"{"rules": [{ "pathname": "/api", "dest": "api" }]}"#);
    check(&set, "GET", "/api", Some(0));
    check(&set, "GET", "/api/x", None);
    check(&set, "GET", "/x/api", None);
    check(&set, "GET", "/", None);
}

#[test]
fn star_stays_inside_one_segment_double_star_does_not() {
    let set = rules(
        r#"{"rules": [
            { "pathname": "/a/*", "dest": "one" },
            { "pathname": "/b/**", "dest": "two" },
            { "pathname": "/c/*.js", "dest": "three" },
            { "pathname": "/d/**/e", "dest": "four" }
        ]}"#,
    );
    check(&set, "GET", "/a/x", Some(0));
    check(&set, "GET", "/a/", Some(0));
    check(&set, "GET", "/a/x/y", None);
    check(&set, "GET", "/b/x", Some(1));
    check(&set, "GET", "/b/x/y", Some(1));
    check(&set, "GET", "/b/", Some(1));
    check(&set, "GET", "/b", None);
    check(&set, "GET", "/c/app.js", Some(2));
    check(&set, "GET", "/c/lib/app.js", None);
    check(&set, "GET", "/c/app.json", None);
    check(&set, "GET", "/d/e", None);
    check(&set, "GET", "/d//e", None);
    check(&set, "GET", "/d/x/e", Some(3));
    check(&set, "GET", "/d/x/y/e", Some(3));
}

#[test]
fn double_star_right_after_a_name_covers_the_name_itself() {
    let set = rules(r#"{"rules": [{ "pathname": "/api**", "dest": "api" }]}"#);
    check(&set, "GET", "/api", Some(0));
    check(&set, "GET", "/api/x", Some(0));
    check(&set, "GET", "/api/x/y", Some(0));
    check(&set, "GET", "/apix", Some(0));
    check(&set, "GET", "/ap", None);
    let root = rules(r#"{"rules": [{ "pathname": "/**", "dest": "all" }]}"#);
    check(&root, "GET", "/", Some(0));
    check(&root, "GET", "/a/b", Some(0));
}

#[test]
fn regex_metacharacters_are_literal() {
    let set = rules(
        r#"{"rules": [
            { "pathname": "/a.b", "dest": "dot" },
            { "pathname": "/(x)+[y]$^|{2}", "dest": "meta" },
            { "pathname": "/v1.*/x", "dest": "glob" }
        ]}"#,
    );
    check(&set, "GET", "/a.b", Some(0));
    check(&set, "GET", "/axb", None);
    check(&set, "GET", "/(x)+[y]$^|{2}", Some(1));
    check(&set, "GET", "/xx[y]", None);
    check(&set, "GET", "/v1.2/x", Some(2));
    check(&set, "GET", "/v122/x", None);
}

#[test]
fn methods_string_array_any_case_and_head_is_not_get() {
    let set = rules(
        r#"{"rules": [
            { "pathname": "/a", "method": "get", "dest": "one" },
            { "pathname": "/b", "method": ["post", "Put"], "dest": "two" },
            { "dest": "rest" }
        ]}"#,
    );
    assert_eq!(set.rules()[0].methods, Some(vec![Method::GET]));
    assert_eq!(
        set.rules()[1].methods,
        Some(vec![Method::POST, Method::PUT])
    );
    check(&set, "GET", "/a", Some(0));
    check(&set, "HEAD", "/a", Some(2));
    check(&set, "POST", "/b", Some(1));
    check(&set, "PUT", "/b", Some(1));
    check(&set, "GET", "/b", Some(2));
    // On the wire methods are case-sensitive: `get` is an unknown method, not GET.
    check(&set, "get", "/a", Some(2));
    check(&set, "PROPFIND", "/a", Some(2));
}

#[test]
fn first_match_wins_across_literal_and_wildcard_rules() {
    let set = rules(
        r#"{"rules": [
            { "pathname": "/x/*", "method": "POST", "dest": "one" },
            { "pathname": "/x/y", "dest": "two" },
            { "pathname": "/x/**", "dest": "three" },
            { "pathname": "/x/y", "method": "POST", "dest": "four" }
        ]}"#,
    );
    check(&set, "POST", "/x/y", Some(0));
    check(&set, "GET", "/x/y", Some(1));
    check(&set, "GET", "/x/z", Some(2));
    check(&set, "POST", "/x/z/w", Some(2));
}

#[test]
fn paths_that_were_not_normalised_never_panic() {
    let set = rules(
        r#"{"rules": [
            { "pathname": "/a/*", "dest": "one" },
            { "pathname": "/**/b*/c", "dest": "two" },
            { "pathname": "/x/**", "dest": "three" }
        ]}"#,
    );
    for path in ["", "a", "*", "\u{e9}", "a/b/c"] {
        assert_eq!(set.route(&Method::GET, path), None, "{path:?}");
    }
    assert_eq!(set.route(&Method::GET, "/a/\u{e9}"), Some(0));
    assert_eq!(set.route(&Method::GET, "//b\u{e9}/c"), Some(1));
}

#[test]
fn query_string_and_host_take_no_part() {
    let set = rules(include_str!("../../../aliases.json"));
    let uri: http::Uri = "http://login.localhost/about?next=/login".parse().unwrap();
    let path = normalize_path(uri.path()).unwrap();
    assert_eq!(path, "/about");
    assert_eq!(set.route(&Method::GET, &path), Some(4));
}

#[test]
fn to_json_parses_back_to_the_same_rules() {
    let text = r#"{"rules": [
        { "pathname": "/login", "method": ["get", "POST"], "dest": "writer" },
        { "pathname": "/api/**", "method": "GET", "dest": "127.0.0.1:9000" },
        { "pathname": "/old", "dest": "writer-abcdefghij.now.sh" },
        { "dest": "reader" }
    ]}"#;
    let first = rules(text);
    let again = rules(&first.to_json());
    assert_eq!(again.to_json(), first.to_json());
    for (a, b) in first.rules().iter().zip(again.rules()) {
        assert_eq!(
            (&a.pathname, &a.methods, &a.dest),
            (&b.pathname, &b.methods, &b.dest)
        );
    }
    assert!(first.to_json().contains(r#""method": "GET""#));
    assert!(first
        .to_json()
        .contains(r#""dest": "http://127.0.0.1:9000""#));
}

/// Warnings, each as its whole line.
fn warnings(text: &str) -> Vec<String> {
    match RuleSet::parse("w.json", text) {
        Ok(loaded) => loaded.warnings.iter().map(ToString::to_string).collect(),
        Err(errors) => panic!("{errors}"),
    }
}

#[test]
fn warns_about_rules_that_never_match() {
    let text = r#"{"rules": [
  { "pathname": "/login", "method": "POST", "dest": "writer" },
  { "pathname": "/login", "method": "post", "dest": "reader" },
  { "pathname": "/api**", "dest": "api" },
  { "pathname": "/api/users/*", "method": "GET", "dest": "users" },
  { "pathname": "/apix", "dest": "x" },
  { "dest": "reader" },
  { "pathname": "/late", "dest": "late" }
]}"#;
    assert_eq!(
        warnings(text),
        [
            "w.json:3:3: rule 2: never matches: rule 1 has the same pathname and method",
            "w.json:5:3: rule 4: never matches: rule 3 (`/api**`, *) catches every request it could",
            "w.json:6:3: rule 5: never matches: rule 3 (`/api**`, *) catches every request it could",
            "w.json:8:3: rule 7: never matches: rule 6 (`[fallthrough]`, *) catches every request it could",
        ]
    );
}

#[test]
fn does_not_warn_when_a_rule_can_still_match() {
    let text = r#"{"rules": [
  { "pathname": "/login", "method": "POST", "dest": "writer" },
  { "pathname": "/login", "dest": "reader" },
  { "pathname": "/api/*", "dest": "one" },
  { "pathname": "/api/**", "dest": "two" },
  { "pathname": "/api", "dest": "three" },
  { "dest": "reader", "method": "GET" },
  { "dest": "reader" }
]}"#;
    assert_eq!(warnings(text), Vec::<String>::new());
}

#[test]
fn warns_about_a_subtree_rule_without_its_base() {
    let text = r#"{"rules": [
  { "pathname": "/api/**", "dest": "api" },
  { "pathname": "/admin", "dest": "admin" },
  { "pathname": "/admin/**", "dest": "admin" },
  { "dest": "reader" }
]}"#;
    assert_eq!(
        warnings(text),
        ["w.json:2:3: rule 1: `/api/**` does not match `/api` itself and no rule does; add a rule for `/api` or write `/api**`"]
    );
}

#[test]
fn warns_about_pathnames_and_now_sh_dests_it_rewrites() {
    let text = r#"{"rules": [
  { "pathname": "/a/../lo%67in", "dest": "writer-abcdefghij.now.sh" }
]}"#;
    assert_eq!(
        warnings(text),
        [
            "w.json:2:17: rule 1: `/a/../lo%67in` is matched as `/login`: request paths are normalised before matching",
            "w.json:2:42: rule 1: `writer-abcdefghij.now.sh` is a now.sh host: it goes to the service `writer` unless a local deployment has that id",
        ]
    );
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

    proptest! {
        /// A normalised path is a fixed point (returned borrowed), has no empty, `.` or `..`
        /// segment inside, and only encoded `/` or NUL make a path of these pieces fail.
        #[test]
        fn normalised_paths_are_fixed_points(
            pieces in proptest::collection::vec(
                prop_oneof![
                    Just("/"), Just("."), Just(".."), Just("a"), Just("%2e"), Just("%2E"),
                    Just("%41"), Just("%3a"), Just("%2F"), Just("%00"), Just("~")
                ],
                0..10,
            )
        ) {
            let path = format!("/{}", pieces.concat());
            match normalize_path(&path) {
                Ok(normalized) => {
                    let again = normalize_path(&normalized).unwrap();
                    prop_assert!(matches!(again, std::borrow::Cow::Borrowed(_)), "{} -> {}", path, normalized);
                    let inner = normalized[1..].trim_end_matches('/');
                    prop_assert!(!normalized.contains("//"), "{}", normalized);
                    prop_assert!(
                        inner.is_empty() || inner.split('/').all(|s| !s.is_empty() && s != "." && s != ".."),
                        "{} -> {}", path, normalized
                    );
                }
                Err(_) => {
                    let upper = path.to_ascii_uppercase();
                    prop_assert!(upper.contains("%2F") || upper.contains("%00"), "{}", path);
                }
            }
        }
    }

    fn rules_from(text: &str) -> RuleSet {
        super::rules(text)
    }
}
