//! `stack alias` and `stack route`, run as the real binary against a temporary project.
//! Error output is compared as whole text (insta snapshots in `tests/snapshots/`).

mod support;
use support::Project;

const DEMO_RULES: &str = include_str!("../../aliases.json");

/// Services named `names` in `project`'s `stack.toml`, so the rules' `dest`s name something
/// (an alias recorded with no `stack up` warns about a `dest` that names nothing).
fn with_services(project: &Project, names: &[&str]) {
    let mut toml = String::new();
    for name in names {
        project.write(&format!("services/{name}/index.html"), "");
        toml.push_str(&format!("[services.{name}]\nrun = \"true\"\n\n"));
    }
    project.write("stack.toml", &toml);
}

#[test]
fn rules_alias_prints_success_and_is_stored() {
    let project = Project::empty();
    with_services(&project, &["writer", "reader", "stats"]);
    project.write("aliases.json", DEMO_RULES);
    let run = project.stack(&["alias", "counter-demo.localhost", "--rules", "aliases.json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "> Success! 5 rules configured for counter-demo.localhost\n\
         > No `stack up` is running: the alias applies at the next `stack up`.\n"
    );
    assert_eq!(run.stderr, "");
    let state: serde_json::Value = serde_json::from_str(&project.state().unwrap()).unwrap();
    let alias = &state["aliases"]["counter-demo.localhost"];
    assert_eq!(alias["kind"], "rules");
    assert_eq!(alias["file"], "aliases.json");
    // The rules, not the file's text, and where each starts in the file.
    let stored: serde_json::Value = serde_json::from_str(alias["text"].as_str().unwrap()).unwrap();
    let file: serde_json::Value = serde_json::from_str(DEMO_RULES).unwrap();
    assert_eq!(stored, file);
    assert_eq!(
        alias["positions"],
        serde_json::json!([[3, 5], [4, 5], [5, 5], [6, 5], [7, 5]])
    );
    assert!(alias["created"].as_u64().unwrap() > 1_600_000_000_000);
}

#[test]
fn warnings_are_printed_and_the_alias_is_still_set() {
    let project = Project::empty();
    with_services(&project, &["api", "reader", "writer"]);
    project.write(
        "rules.json",
        r#"{"rules": [
  { "pathname": "/api/**", "dest": "api" },
  { "dest": "reader" },
  { "pathname": "/late", "dest": "writer" }
]}"#,
    );
    let run = project.stack(&["alias", "demo.localhost", "--rules", "rules.json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stderr,
        "> Warning! rules.json:2:3: rule 1: `/api/**` does not match `/api` itself and no rule does; add a rule for `/api` or write `/api**`\n\
         > Warning! rules.json:4:3: rule 3: never matches: rule 2 (`[fallthrough]`, *) catches every request it could\n"
    );
    assert!(run
        .stdout
        .starts_with("> Success! 3 rules configured for demo.localhost\n"));
}

#[test]
fn hosts_are_case_insensitive_and_a_single_label_gets_localhost() {
    let project = Project::empty();
    project.write("aliases.json", DEMO_RULES);
    project.stack_ok(&["alias", "Counter-Demo.LOCALHOST", "--rules", "aliases.json"]);
    project.stack_ok(&["alias", "Plain", "writer"]);
    let listed = project.stack_ok(&["alias", "ls"]);
    assert!(listed.contains("counter-demo.localhost"), "{listed}");
    assert!(listed.contains("plain.localhost"), "{listed}");
    project.stack_ok(&["alias", "ls", "COUNTER-demo.localhost"]);

    for bad in [
        "http://x.localhost",
        "x.localhost:3000",
        "a_b.localhost",
        "x-.localhost",
    ] {
        let run = project.stack(&["alias", bad, "writer"]);
        assert_eq!(run.code, 1, "{bad}");
        assert!(run.stderr.starts_with("Error! `"), "{}", run.stderr);
        assert!(
            run.stderr.contains("counter-demo.localhost"),
            "a hint: {}",
            run.stderr
        );
    }
}

#[test]
fn plain_alias_points_at_a_service_or_deployment() {
    let project = Project::empty();
    let run = project.stack(&["alias", "w.localhost", "writer-gkdldldejq"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "> Success! w.localhost now points to writer-gkdldldejq\n\
         > No `stack up` is running: the alias applies at the next `stack up`.\n"
    );
    // Nothing of that name in this empty project: said now rather than as a 502 later.
    assert!(
        run.stderr.contains(
            "> Warning! `writer-gkdldldejq` names no service, deployment or alias of this project"
        ),
        "{}",
        run.stderr
    );
    project.write("services/writer/index.html", "");
    project.write("stack.toml", "[services.writer]\nrun = \"true\"\n");
    let known = project.stack(&["alias", "v.localhost", "writer"]);
    assert_eq!(known.code, 0, "{}", known.stderr);
    assert!(!known.stderr.contains("Warning!"), "{}", known.stderr);
    let table = project.stack_ok(&["alias", "ls", "w.localhost"]);
    assert_eq!(
        table,
        "> 1 rule for w.localhost (a plain alias)\n  \
           pathname       method  dest\n  \
           [fallthrough]  *       writer-gkdldldejq\n"
    );

    let outside = project.stack(&["alias", "x.localhost", "http://127.0.0.1:9000"]);
    assert_eq!(outside.code, 1);
    insta::assert_snapshot!("plain_alias_outside_the_stack", outside.stderr);
    let bad = project.stack(&["alias", "x.localhost", "not a name"]);
    assert_eq!(bad.code, 1);
    insta::assert_snapshot!("plain_alias_bad_target", bad.stderr);
}

#[test]
fn alias_ls_lists_source_url_and_age() {
    let project = Project::empty();
    assert_eq!(project.stack_ok(&["alias", "ls"]), "> 0 aliases found\n");
    project.write("aliases.json", DEMO_RULES);
    project.stack_ok(&["alias", "counter-demo.localhost", "--rules", "aliases.json"]);
    project.stack_ok(&["alias", "w.localhost", "writer"]);
    let listed = project.stack_ok(&["alias", "ls"]);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines[0], "> 2 aliases found");
    assert_eq!(lines[1], "  source     url                     age");
    // Ages depend on the clock; everything before them does not.
    assert!(
        lines[2].starts_with("  [5 rules]  counter-demo.localhost  "),
        "{listed}"
    );
    assert!(
        lines[3].starts_with("  writer     w.localhost             "),
        "{listed}"
    );
    for line in &lines[2..] {
        let age = line.rsplit(' ').next().unwrap();
        assert!(
            age.ends_with('s') && age[..age.len() - 1].parse::<u64>().is_ok(),
            "{age}"
        );
    }

    let json: serde_json::Value =
        serde_json::from_str(&project.stack_ok(&["alias", "ls", "--json"])).unwrap();
    assert_eq!(json[0]["host"], "counter-demo.localhost");
    assert_eq!(json[0]["source"], "[5 rules]");
    assert_eq!(json[1]["target"], "writer");
}

#[test]
fn alias_ls_host_prints_the_rules_in_order() {
    let project = Project::empty();
    project.write(
        "rules.json",
        r#"{"rules": [
            { "pathname": "/login", "method": ["get", "POST"], "dest": "writer" },
            { "pathname": "/api/**", "method": "GET", "dest": "127.0.0.1:9000" },
            { "pathname": "/api", "dest": "writer-abcdefghij.now.sh" },
            { "dest": "reader" }
        ]}"#,
    );
    project.stack_ok(&["alias", "demo.localhost", "--rules", "rules.json"]);
    assert_eq!(
        project.stack_ok(&["alias", "ls", "demo.localhost"]),
        "> 4 rules for demo.localhost (from rules.json)\n  \
           pathname       method    dest\n  \
           /login         GET,POST  writer\n  \
           /api/**        GET       http://127.0.0.1:9000\n  \
           /api           *         writer-abcdefghij.now.sh\n  \
           [fallthrough]  *         reader\n"
    );
    let missing = project.stack(&["alias", "ls", "nope.localhost"]);
    assert_eq!(missing.code, 1);
    assert_eq!(
        missing.stderr,
        "Error! no alias `nope.localhost`\nAliases: demo.localhost.\n"
    );
}

#[test]
fn json_output_round_trips_to_the_same_table() {
    let project = Project::empty();
    with_services(&project, &["writer", "static", "reader"]);
    project.write(
        "rules.json",
        r#"{"rules": [
            { "pathname": "/lo%67in", "method": ["get", "post", "GET"], "dest": "writer" },
            { "pathname": "/api**", "method": "delete", "dest": "https://example.com:8443/" },
            { "pathname": "/s/*.js", "dest": "static.localhost" },
            { "dest": "reader" }
        ]}"#,
    );
    project.stack_ok(&["alias", "h.localhost", "--rules", "rules.json"]);
    let json = project.stack_ok(&["alias", "ls", "h.localhost", "--json"]);
    project.write("exported.json", &json);
    let run = project.stack(&["alias", "h2.localhost", "--rules", "exported.json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stderr, "", "the exported file loads without warnings");

    let table = |host: &str| {
        let out = project.stack_ok(&["alias", "ls", host]);
        out.lines().skip(1).collect::<Vec<_>>().join("\n")
    };
    assert_eq!(table("h.localhost"), table("h2.localhost"));
    assert!(table("h.localhost").contains("/login         GET,POST"));
    assert_eq!(
        project.stack_ok(&["alias", "ls", "h2.localhost", "--json"]),
        json
    );
}

#[test]
fn alias_rm_removes_and_unknown_is_an_error() {
    let project = Project::empty();
    project.stack_ok(&["alias", "w.localhost", "writer"]);
    project.stack_ok(&["alias", "r.localhost", "reader"]);
    assert_eq!(
        project.stack_ok(&["alias", "rm", "W.localhost"]),
        "> Success! Alias w.localhost removed\n> No `stack up` is running: the alias applies at the next `stack up`.\n"
    );
    let listed = project.stack_ok(&["alias", "ls"]);
    assert!(listed.starts_with("> 1 alias found\n"), "{listed}");
    assert!(!listed.contains("w.localhost"));
    let again = project.stack(&["alias", "rm", "w.localhost"]);
    assert_eq!(again.code, 1);
    assert_eq!(
        again.stderr,
        "Error! no alias `w.localhost`\nAliases: r.localhost.\n"
    );
}

#[test]
fn bad_arguments_exit_2() {
    let project = Project::empty();
    let run = project.stack(&["alias", "h.localhost", "writer", "--rules", "x.json"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let run = project.stack(&["route", "h.localhost", "GET"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
}

#[test]
fn missing_target_is_explained() {
    let project = Project::empty();
    let run = project.stack(&["alias", "h.localhost"]);
    assert_eq!(run.code, 1);
    insta::assert_snapshot!("alias_without_target", run.stderr);
}

/// Sets a good alias, then tries a bad file on the same host: exit 1, nothing on stdout, the
/// state file byte for byte as before. Returns stderr for the snapshot.
fn rejected(file_text: Option<&str>) -> String {
    let project = Project::empty();
    project.write("aliases.json", DEMO_RULES);
    project.stack_ok(&["alias", "counter-demo.localhost", "--rules", "aliases.json"]);
    let before = project.state().expect("state written");
    if let Some(text) = file_text {
        project.write("bad.json", text);
    }
    let run = project.stack(&["alias", "counter-demo.localhost", "--rules", "bad.json"]);
    assert_eq!(run.code, 1, "stderr: {}", run.stderr);
    assert_eq!(run.stdout, "");
    assert_eq!(
        project.state().as_deref(),
        Some(before.as_str()),
        "state changed"
    );
    run.stderr
}

macro_rules! error_snapshot {
    ($name:ident, $text:expr) => {
        #[test]
        fn $name() {
            insta::assert_snapshot!(stringify!($name), rejected($text));
        }
    };
}

error_snapshot!(error_file_not_found, None);
error_snapshot!(
    error_invalid_json,
    Some("{\n  \"rules\": [\n    { \"dest\": \"reader\", }\n  ]\n}\n")
);
error_snapshot!(error_empty_file, Some(""));
error_snapshot!(error_not_an_object, Some("[{ \"dest\": \"reader\" }]\n"));
error_snapshot!(error_no_rules_key, Some("{\n  \"rule\": []\n}\n"));
error_snapshot!(
    error_unknown_file_key,
    Some("{\n  \"rules\": [{ \"dest\": \"reader\" }],\n  \"version\": 2\n}\n")
);
error_snapshot!(
    error_rules_not_an_array,
    Some("{\n  \"rules\": { \"dest\": \"reader\" }\n}\n")
);
error_snapshot!(error_rules_empty, Some("{\n  \"rules\": []\n}\n"));
error_snapshot!(
    error_rule_not_an_object,
    Some("{\n  \"rules\": [\n    \"/login\",\n    { \"dest\": \"reader\" }\n  ]\n}\n")
);
error_snapshot!(
    error_missing_dest,
    Some("{\n  \"rules\": [\n    { \"pathname\": \"/login\" }\n  ]\n}\n")
);
error_snapshot!(
    error_empty_dest,
    Some("{\n  \"rules\": [\n    { \"pathname\": \"/login\", \"dest\": \"\" }\n  ]\n}\n")
);
error_snapshot!(
    error_dest_not_a_string,
    Some("{\n  \"rules\": [\n    { \"dest\": [\"writer\"] }\n  ]\n}\n")
);
error_snapshot!(
    error_invalid_dest,
    Some("{\n  \"rules\": [\n    { \"dest\": \"http://127.0.0.1:9000/api\" },\n    { \"dest\": \"ftp://files\" },\n    { \"dest\": \"my_service\" }\n  ]\n}\n")
);
error_snapshot!(
    error_unknown_key_methods,
    Some("{\n  \"rules\": [\n    { \"pathname\": \"/login\", \"methods\": [\"POST\"], \"dest\": \"writer\" }\n  ]\n}\n")
);
error_snapshot!(
    error_unknown_key_path,
    Some("{\n  \"rules\": [\n    { \"path\": \"/login\", \"dest\": \"writer\" }\n  ]\n}\n")
);
error_snapshot!(
    error_unknown_key_other,
    Some("{\n  \"rules\": [\n    { \"pathname\": \"/login\", \"dest\": \"writer\", \"weight\": 2 }\n  ]\n}\n")
);
error_snapshot!(
    error_duplicate_key,
    Some("{\n  \"rules\": [\n    { \"dest\": \"writer\", \"dest\": \"reader\" }\n  ]\n}\n")
);
error_snapshot!(
    error_unknown_method,
    Some("{\n  \"rules\": [\n    { \"pathname\": \"/login\", \"method\": [\"GET\", \"FETCH\"], \"dest\": \"writer\" }\n  ]\n}\n")
);
error_snapshot!(
    error_method_not_a_string,
    Some("{\n  \"rules\": [\n    { \"pathname\": \"/login\", \"method\": 1, \"dest\": \"writer\" }\n  ]\n}\n")
);
error_snapshot!(
    error_method_empty_array,
    Some("{\n  \"rules\": [\n    { \"pathname\": \"/login\", \"method\": [], \"dest\": \"writer\" }\n  ]\n}\n")
);
error_snapshot!(
    error_pathname_not_absolute,
    Some("{\n  \"rules\": [\n    { \"pathname\": \"login\", \"dest\": \"writer\" }\n  ]\n}\n")
);
error_snapshot!(
    error_pathname_not_a_string,
    Some("{\n  \"rules\": [\n    { \"pathname\": null, \"dest\": \"writer\" }\n  ]\n}\n")
);
error_snapshot!(
    error_pathname_invalid,
    Some("{\n  \"rules\": [\n    { \"pathname\": \"/a%2Fb\", \"dest\": \"writer\" },\n    { \"pathname\": \"/a?b=1\", \"dest\": \"writer\" }\n  ]\n}\n")
);
error_snapshot!(
    error_several_in_one_file,
    Some(
        r#"{
  "rules": [
    { "pathname": "/login", "methods": ["GET", "POST"], "dest": "writer" },
    { "path": "/increment", "dest": "writer" },
    { "pathname": "logout", "method": "GRT", "dest": "writer" },
    { "pathname": "/api/**" },
    42,
    { "dest": "" }
  ],
  "version": 1
}
"#
    )
);

#[test]
fn route_explains_the_decision() {
    let project = Project::empty();
    project.write(
        "rules.json",
        r#"{
  "rules": [
    { "pathname": "/login", "method": ["GET", "POST"], "dest": "writer" },
    { "pathname": "/api/**", "method": "GET", "dest": "http://127.0.0.1:9000" },
    { "pathname": "/old", "dest": "writer-abcdefghij.now.sh" }
  ]
}
"#,
    );
    project.stack_ok(&["alias", "counter-demo.localhost", "--rules", "rules.json"]);
    let route = |method: &str, path: &str| {
        project.stack_ok(&["route", "Counter-Demo.localhost", method, path])
    };
    assert_eq!(
        route("POST", "/x/../lo%67in?next=/api"),
        "> POST /x/../lo%67in?next=/api on counter-demo.localhost\n  \
           path    /login (normalised from `/x/../lo%67in`; the query string takes no part)\n  \
           rule    1: pathname /login, method GET,POST (rules.json:3:5)\n  \
           dest    `writer`: a service, deployment or alias of this stack (resolved by `stack up`)\n"
    );
    assert_eq!(
        route("GET", "/api/users"),
        "> GET /api/users on counter-demo.localhost\n  \
           path    /api/users\n  \
           rule    2: pathname /api/**, method GET (rules.json:4:5)\n  \
           dest    `http://127.0.0.1:9000`: outside the stack, proxied as is\n"
    );
    assert_eq!(
        route("GET", "/old"),
        "> GET /old on counter-demo.localhost\n  \
           path    /old\n  \
           rule    3: pathname /old, method * (rules.json:5:5)\n  \
           dest    `writer-abcdefghij.now.sh`: a now.sh deployment; falls back to the service `writer` when no local deployment has that id\n"
    );
    assert_eq!(
        route("PUT", "/login"),
        "> PUT /login on counter-demo.localhost\n  \
           path    /login\n  \
           rule    no rule matches: 404\n"
    );
    assert_eq!(
        route("get", "/login"),
        "> get /login on counter-demo.localhost\n  \
           path    /login\n  \
           method  `get` is not `GET`: methods are case-sensitive on the wire, so only rules without `method` match it\n  \
           rule    no rule matches: 404\n"
    );
    assert_eq!(
        route("GET", "/login%2F..%2Fadmin"),
        "> GET /login%2F..%2Fadmin on counter-demo.localhost\n  \
           path    `/login%2F..%2Fadmin` is refused: an encoded `/` (`%2F`) is not allowed in a path\n  \
           answer  400 Bad Request\n"
    );

    let unknown = project.stack(&["route", "other.localhost", "GET", "/"]);
    assert_eq!(unknown.code, 1);
    assert_eq!(
        unknown.stderr,
        "Error! no alias `other.localhost`\nAliases: counter-demo.localhost.\n"
    );
    let bad_method = project.stack(&["route", "counter-demo.localhost", "G E T", "/"]);
    assert_eq!(bad_method.code, 1);
    assert_eq!(
        bad_method.stderr,
        "Error! `G E T` is not an HTTP method\nUse a method such as GET, POST or DELETE.\n"
    );
}

#[test]
fn twenty_thousand_wildcard_rules_load_and_route_and_an_oversized_file_is_refused() {
    let project = Project::empty();
    let rules: Vec<String> = (1..=20_000)
        .map(|n| format!(r#"{{"pathname": "/p{n}/*/**", "dest": "s{n}"}}"#))
        .collect();
    project.write(
        "many.json",
        &format!("{{\"rules\": [{}]}}", rules.join(",\n")),
    );
    let started = std::time::Instant::now();
    let run = project.stack(&["alias", "many.localhost", "--rules", "many.json"]);
    let loaded = started.elapsed();
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("20000 rules configured"),
        "{}",
        run.stdout
    );
    assert!(loaded < std::time::Duration::from_secs(10), "{loaded:?}");
    let route = project.stack_ok(&["route", "many.localhost", "GET", "/p19999/x/y/z"]);
    assert!(
        route.contains("rule    19999: pathname /p19999/*/**"),
        "{route}"
    );
    assert!(route.contains("(many.json:19999:1)"), "{route}");
    let none = project.stack_ok(&["route", "many.localhost", "GET", "/p19999/x"]);
    assert!(none.contains("no rule matches: 404"), "{none}");

    // Past 4 MiB a file is refused before it is read, and nothing is stored.
    let padded = format!(
        "{{\"rules\": [{{\"dest\": \"reader\"}}]{}}}",
        " ".repeat(5 << 20)
    );
    project.write("padded.json", &padded);
    let run = project.stack(&["alias", "padded.localhost", "--rules", "padded.json"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr.contains(
            "padded.json:1:1: the file is 5121 KiB; a rules file may be at most 4096 KiB"
        ),
        "{}",
        run.stderr
    );
    assert!(!project.state().unwrap().contains("padded.localhost"));
    println!("20,000 wildcard rules: stack alias {loaded:?} (debug build)");
}
