//! Route lookup cost (issue 3): the worst case of a lookup is the last rule matching or none.
//!
//! Each case is measured for the compiled `RuleSet::route` and, in the same run, for the
//! baseline a first implementation would write: one anchored regex per rule, tried in order.
//! `cargo bench -p stack --bench rules`; figures go to `bench/RESULTS.md` ("Issue 3: rules").

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use http::Method;
use regex::Regex;
use stack::rules::{normalize_path, RuleSet};

/// The baseline: every rule's pattern as its own regex, scanned in file order.
struct LinearRegexScan {
    rules: Vec<(Option<Regex>, Option<Vec<Method>>)>,
}

impl LinearRegexScan {
    fn new(set: &RuleSet) -> LinearRegexScan {
        let rules = set
            .rules()
            .iter()
            .map(|rule| {
                let regex = rule.pathname.as_deref().map(|pattern| {
                    let mut re = String::from("^");
                    let mut rest = pattern;
                    while !rest.is_empty() {
                        if let Some(after) = rest.strip_prefix("**") {
                            re.push_str("(?s:.*)");
                            rest = after;
                        } else if let Some(after) = rest.strip_prefix('*') {
                            re.push_str("[^/]*");
                            rest = after;
                        } else {
                            let end = rest.find('*').unwrap_or(rest.len());
                            re.push_str(&regex::escape(&rest[..end]));
                            rest = &rest[end..];
                        }
                    }
                    re.push('$');
                    Regex::new(&re).expect("escaped patterns are valid regexes")
                });
                (regex, rule.methods.clone())
            })
            .collect();
        LinearRegexScan { rules }
    }

    fn route(&self, method: &Method, path: &str) -> Option<usize> {
        self.rules.iter().position(|(regex, methods)| {
            methods.as_ref().is_none_or(|m| m.contains(method))
                && regex.as_ref().is_none_or(|re| re.is_match(path))
        })
    }
}

/// 1,000 rules of the shapes real files have: literal pages with methods, `/x/**` subtrees,
/// `*` inside a segment, `**` in the middle. Rule 1000 (`/last/**/end`) is the only one that
/// matches `/last/a/b/end`; no rule matches `/nothing/here`.
fn thousand_rules() -> String {
    let mut rules = Vec::new();
    for i in 0..999 {
        let rule = match i % 5 {
            0 => format!(
                r#"{{ "pathname": "/page{i}", "method": ["GET", "POST"], "dest": "writer" }}"#
            ),
            1 => format!(r#"{{ "pathname": "/svc{i}/**", "dest": "svc{i}" }}"#),
            2 => {
                format!(r#"{{ "pathname": "/api/v{i}/users/*", "method": "GET", "dest": "api" }}"#)
            }
            3 => format!(r#"{{ "pathname": "/static{i}/*.js", "dest": "static" }}"#),
            _ => format!(r#"{{ "pathname": "/docs{i}/**/index.html", "dest": "docs" }}"#),
        };
        rules.push(rule);
    }
    rules.push(r#"{ "pathname": "/last/**/end", "dest": "last" }"#.to_string());
    format!("{{\"rules\": [\n{}\n]}}", rules.join(",\n"))
}

/// 1,000 rules that all need the regex engine and all share the prefix of the request path:
/// what a hostile or very unusual file costs.
fn thousand_hard_rules() -> String {
    let rules: Vec<String> = (0..1000)
        .map(|i| format!(r#"{{ "pathname": "/a*/b-{i}-*/*c", "dest": "svc" }}"#))
        .collect();
    format!("{{\"rules\": [\n{}\n]}}", rules.join(",\n"))
}

/// 20,000 rules of the shape that broke the regex set (issue 20): `/pN/*/**`, a `*` and a
/// `**` each, so each needs more than prefix filters.
fn twenty_thousand_rules() -> String {
    let rules: Vec<String> = (1..=20_000)
        .map(|n| format!(r#"{{ "pathname": "/p{n}/*/**", "dest": "s{n}" }}"#))
        .collect();
    format!("{{\"rules\": [\n{}\n]}}", rules.join(",\n"))
}

fn bench_case(
    c: &mut Criterion,
    name: &str,
    text: &str,
    method: Method,
    path: &str,
    expected: Option<usize>,
) {
    let set = RuleSet::parse("bench.json", text)
        .expect("the bench files are valid")
        .rules;
    let baseline = LinearRegexScan::new(&set);
    assert_eq!(set.route(&method, path), expected, "{name}");
    assert_eq!(baseline.route(&method, path), expected, "{name} baseline");
    let mut group = c.benchmark_group(name);
    group.bench_function("RuleSet::route", |b| {
        b.iter(|| set.route(black_box(&method), black_box(path)))
    });
    group.bench_function("baseline: regex per rule, linear", |b| {
        b.iter(|| baseline.route(black_box(&method), black_box(path)))
    });
    group.finish();
}

fn lookups(c: &mut Criterion) {
    let demo = include_str!("../../aliases.json");
    bench_case(
        c,
        "demo 4 rules, fallthrough (last) matches",
        demo,
        Method::GET,
        "/counter/page",
        Some(3),
    );
    bench_case(
        c,
        "demo 4 rules, literal /logout matches",
        demo,
        Method::POST,
        "/logout",
        Some(2),
    );
    let thousand = thousand_rules();
    bench_case(
        c,
        "1000 rules, last matches",
        &thousand,
        Method::GET,
        "/last/a/b/end",
        Some(999),
    );
    bench_case(
        c,
        "1000 rules, none matches",
        &thousand,
        Method::GET,
        "/nothing/here",
        None,
    );
    let hard = thousand_hard_rules();
    bench_case(
        c,
        "1000 regex-only rules sharing a prefix, last matches",
        &hard,
        Method::GET,
        "/a1/b-999-x/yc",
        Some(999),
    );
    bench_case(
        c,
        "1000 regex-only rules sharing a prefix, none matches",
        &hard,
        Method::GET,
        "/a1/b-5x/y",
        None,
    );
    let twenty = twenty_thousand_rules();
    bench_case(
        c,
        "20000 /pN/*/** rules, last matches",
        &twenty,
        Method::GET,
        "/p20000/x/y/z",
        Some(19_999),
    );
    bench_case(
        c,
        "20000 /pN/*/** rules, none matches",
        &twenty,
        Method::GET,
        "/q/x/y/z",
        None,
    );
    let mut group = c.benchmark_group("loading");
    group.sample_size(10);
    group.bench_function(
        "RuleSet::parse of 20000 /pN/*/** rules (parse, compile, lint)",
        |b| {
            b.iter(|| {
                RuleSet::parse("bench.json", black_box(&twenty))
                    .map(|loaded| loaded.rules.rules().len())
            })
        },
    );
    group.bench_function("RuleSet::parse of the 1000-rule file", |b| {
        b.iter(|| {
            RuleSet::parse("bench.json", black_box(&thousand))
                .map(|loaded| loaded.rules.rules().len())
        })
    });
    group.finish();
}

fn normalization(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalize_path");
    group.bench_function("already normal /api/users/42", |b| {
        b.iter(|| normalize_path(black_box("/api/users/42")).map(|p| p.len()))
    });
    group.bench_function("rewritten /x/../lo%67in//a", |b| {
        b.iter(|| normalize_path(black_box("/x/../lo%67in//a")).map(|p| p.len()))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = lookups, normalization
}
criterion_main!(benches);
