//! `stack export nginx` against a real nginx: the rendered config, served by `/usr/sbin/nginx`
//! in a temp prefix on a loopback port, must send every request to the upstream that
//! `stack::rules` routing picks (and 404 / 400 where stack answers that), and forward the path
//! stack forwards. Upstreams are small echo servers that answer with their own name.
//! Also the command itself: header, `-o`, `--check`, errors.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use http::Method;
use stack::export::nginx::{self, RenderOptions};
use stack::export::{Plan, Project, RouteTarget};
use stack::rules::normalize_path;
use stack::state::aliases::AliasTarget;
use stack::state::{Alias, State};

mod support;
use support::{free_port, raw_http, workspace, Nginx, Run};

// ---------------------------------------------------------------------------------------------
// Echo upstreams

/// An HTTP/1.1 server on a loopback port that answers every request with its own name
/// (`X-Upstream`), the method and request target it received (`X-Method`, `X-Target`), and the
/// name again as the body (none for HEAD). Keeps connections alive, as nginx's pool expects.
struct Echo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Echo {
    fn start(name: &str) -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (name, stopping) = (name.to_string(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let name = name.clone();
                thread::spawn(move || serve_echo(stream, &name));
            }
        });
        Echo { addr, stop }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve_echo(stream: TcpStream, name: &str) {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let mut content_length = 0usize;
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end().to_string();
            if line.is_empty() {
                break;
            }
            if let Some((key, value)) = line.split_once(':') {
                if key.eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse().unwrap_or(0);
                }
                headers.push((key.to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        let mut body = vec![0; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let forwarded: String = headers
            .iter()
            .filter(|(key, _)| key.starts_with("x-forwarded") || key == "x-real-ip")
            .map(|(key, value)| format!("{key}={value};"))
            .collect();
        let upgrade = headers
            .iter()
            .any(|(key, value)| key == "upgrade" && value.eq_ignore_ascii_case("websocket"));
        if upgrade {
            // Switch protocols, then echo raw bytes until the peer closes.
            let connection = headers
                .iter()
                .find(|(key, _)| key == "connection")
                .map_or("", |(_, value)| value.as_str())
                .to_string();
            let _ = write!(
                writer,
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Upstream: {name}\r\nX-Connection-Seen: {connection}\r\n\r\n"
            );
            let mut buffer = [0; 1024];
            loop {
                match reader.read(&mut buffer) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if writer.write_all(&buffer[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        }
        let connection_seen = headers
            .iter()
            .find(|(key, _)| key == "connection")
            .map_or("", |(_, value)| value.as_str())
            .to_string();
        let response_body = if method == "HEAD" { "" } else { name };
        let response = format!(
            "HTTP/1.1 200 OK\r\nX-Upstream: {name}\r\nX-Method: {method}\r\nX-Target: {target}\r\nX-Seen: {forwarded}\r\nX-Connection-Seen: {connection_seen}\r\nContent-Length: {}\r\n\r\n{response_body}",
            name.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// nginx in a temp prefix

/// nginx serving the plan's config on a free loopback port.
fn serve(plan: &Plan) -> Nginx {
    let port = free_port();
    let config = nginx::render(
        plan,
        &RenderOptions {
            listen: format!("127.0.0.1:{port}"),
            ..RenderOptions::default()
        },
    );
    Nginx::start(&config, port)
}

/// The real stack proxy (`stack::proxy::run`) serving the same alias, with each rule's target
/// the same echo upstream nginx uses; stopped on drop.
struct StackProxy {
    port: u16,
    shutdown: tokio_util::sync::CancellationToken,
    thread: Option<thread::JoinHandle<()>>,
}

impl StackProxy {
    fn start(plan: &Plan) -> StackProxy {
        use stack::proxy::{Backend, Deployment, HostRoute, Routing, RoutingTable, Target};
        let upstream_targets: Vec<Target> = plan
            .upstreams
            .iter()
            .map(|upstream| {
                let addr = upstream.servers[0]
                    .parse()
                    .expect("echo addresses are ip:port");
                Target::Deployment(Arc::new(Deployment::new(
                    upstream.name.clone(),
                    upstream.name.clone(),
                    vec![Arc::new(Backend::new(1, addr))],
                    0,
                )))
            })
            .collect();
        let alias = &plan.aliases[0];
        let targets = alias
            .targets
            .iter()
            .map(|target| match target {
                RouteTarget::Upstream(index) => upstream_targets[*index].clone(),
                RouteTarget::Alias(_) => unreachable!("these tests have no nested aliases"),
            })
            .collect();
        let mut table = RoutingTable::new();
        table.insert(
            &alias.host,
            HostRoute::rules(Arc::new(alias.rules.clone()), targets).unwrap(),
        );
        let routing = Routing::new(table);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stopping = shutdown.clone();
        let thread = thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                stack::proxy::run(listener, routing, stopping.cancelled_owned()).await;
            });
        });
        StackProxy {
            port,
            shutdown,
            thread: Some(thread),
        }
    }
}

impl Drop for StackProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 client: sends exactly the method and target given (lower case included).

fn send(port: u16, method: &str, target: &str) -> raw_http::Reply {
    raw_http::request(
        port,
        method,
        target,
        &[
            ("Host", "counter-demo.localhost:8443"),
            ("X-Forwarded-For", "10.0.0.1"),
        ],
    )
}

// ---------------------------------------------------------------------------------------------
// What stack would do

#[derive(Debug, PartialEq, Eq)]
enum Expected {
    /// The upstream's name, and the target it receives (normalised path + query).
    Upstream(String, String),
    NotFound,
    BadRequest,
}

fn expected(plan: &Plan, method: &str, target: &str) -> Expected {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let Ok(normalized) = normalize_path(path) else {
        return Expected::BadRequest;
    };
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut alias = 0;
    loop {
        let routes = &plan.aliases[alias];
        let Some(index) = routes.rules.route(&method, &normalized) else {
            return Expected::NotFound;
        };
        match routes.targets[index] {
            RouteTarget::Alias(next) => alias = next,
            RouteTarget::Upstream(upstream) => {
                let forwarded = match query {
                    Some(query) => format!("{normalized}?{query}"),
                    None => normalized.to_string(),
                };
                return Expected::Upstream(plan.upstreams[upstream].name.clone(), forwarded);
            }
        }
    }
}

/// Builds the plan for `text` as the alias `counter-demo.localhost`, with one echo server per
/// upstream (kept alive by the returned vector).
fn plan_with_echoes(text: &str, services: &[&str]) -> (Plan, Vec<Echo>) {
    plan_with_more_aliases(text, &[], services)
}

/// [`plan_with_echoes`] with more path aliases (host, rules) the main one may point at.
fn plan_with_more_aliases(
    text: &str,
    others: &[(&str, &str)],
    services: &[&str],
) -> (Plan, Vec<Echo>) {
    let mut state = State::default();
    for (host, rules) in others {
        state.aliases.insert(
            host.to_string(),
            Alias::new(AliasTarget::Rules {
                file: format!("{host}.json"),
                text: rules.to_string(),
                positions: Vec::new(),
            }),
        );
    }
    state.aliases.insert(
        "counter-demo.localhost".into(),
        Alias::new(AliasTarget::Rules {
            file: "rules.json".into(),
            text: text.into(),
            positions: Vec::new(),
        }),
    );
    let project = Project {
        state: &state,
        services: services.iter().map(|s| s.to_string()).collect(),
        running: None,
    };
    let mut plan = Plan::new(&project, "counter-demo.localhost").expect("the rules resolve");
    let mut echoes = Vec::new();
    for upstream in &mut plan.upstreams {
        let echo = Echo::start(&upstream.name);
        upstream.servers = vec![echo.addr.to_string()];
        echoes.push(echo);
    }
    (plan, echoes)
}

/// Sends every (method, target) through nginx and compares with stack's answer. Returns how
/// many requests were compared.
/// Does the same through the real stack proxy: both must agree with `stack::rules` routing.
fn compare(plan: &Plan, nginx: &Nginx, methods: &[&str], targets: &[&str]) -> usize {
    // The proxy's table has no nested path aliases: those plans are compared with nginx only.
    let nested = plan.aliases.len() > 1;
    let proxy = (!nested).then(|| StackProxy::start(plan));
    let mut servers = vec![("nginx", nginx.port)];
    if let Some(proxy) = &proxy {
        servers.push(("stack proxy", proxy.port));
    }
    let mut failures = Vec::new();
    let mut compared = 0;
    for method in methods {
        for target in targets {
            for &(server, port) in &servers {
                let want = expected(plan, method, target);
                let got = send(port, method, target);
                compared += 1;
                let agrees = match &want {
                    Expected::Upstream(name, forwarded) => {
                        got.status == 200
                            && got.header("x-upstream") == Some(name.as_str())
                            && got.header("x-method") == Some(*method)
                            && got.header("x-target") == Some(forwarded.as_str())
                            && (*method == "HEAD" || got.body == *name)
                    }
                    Expected::NotFound => {
                        got.status == 404
                            && (*method == "HEAD" || got.body.contains("\"error\":\"no_route\""))
                    }
                    Expected::BadRequest => got.status == 400,
                };
                if !agrees {
                    failures.push(format!(
                        "{method} {target}: stack::rules {want:?}, {server} {} {:?} {:?}",
                        got.status,
                        got.header("x-upstream"),
                        got.header("x-target")
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {compared} requests differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    compared
}

// ---------------------------------------------------------------------------------------------

#[test]
fn demo_rules_route_the_same_through_nginx() {
    let text = std::fs::read_to_string(workspace().join("aliases.json")).unwrap();
    let (plan, _echoes) = plan_with_echoes(&text, &["reader", "writer", "stats"]);
    let nginx = serve(&plan);
    let compared = compare(
        &plan,
        &nginx,
        &["GET", "POST", "HEAD", "DELETE"],
        &[
            "/",
            "/login",
            "/login/",
            "/loginx",
            "/LOGIN",
            "/increment",
            "/logout?next=/login",
            "/stats",
            "/x/../login",
            "//login",
            "/lo%67in",
            "/a/%2e%2e/increment",
            "/index.html",
            "/login%2F..%2Fadmin",
        ],
    );
    assert!(compared >= 40);

    // The forwarding headers, as stack sets them.
    let answer = send(nginx.port, "GET", "/login");
    let seen = answer.header("x-seen").expect("the echo says what it saw");
    assert!(
        seen.contains("x-forwarded-for=10.0.0.1, 127.0.0.1;"),
        "{seen}"
    );
    assert!(
        seen.contains("x-forwarded-host=counter-demo.localhost:8443;"),
        "{seen}"
    );
    assert!(seen.contains("x-forwarded-proto=http;"), "{seen}");
    assert!(seen.contains("x-real-ip=127.0.0.1;"), "{seen}");
}

/// `*`, `**`, `/x**`, methods that fall through to later rules, regex metacharacters that must
/// stay literal, a method-only fallthrough and paths no rule matches.
const TRICKY: &str = r#"{
  "rules": [
    { "pathname": "/x**", "method": ["GET", "HEAD"], "dest": "getter" },
    { "pathname": "/x", "dest": "xexact" },
    { "pathname": "/a.b", "dest": "dot" },
    { "pathname": "/api/*", "method": "POST", "dest": "apipost" },
    { "pathname": "/api/**", "dest": "apiall" },
    { "pathname": "/files/*.js", "dest": "js" },
    { "pathname": "/**/raw", "method": ["PUT", "DELETE"], "dest": "raw" },
    { "pathname": "/c(1)+$", "dest": "meta" },
    { "pathname": "/q/%3a/*", "dest": "escaped" },
    { "pathname": "/login", "method": ["GET", "POST"], "dest": "writer" },
    { "method": "PATCH", "dest": "patcher" },
    { "pathname": "/*", "method": ["GET", "HEAD", "POST", "OPTIONS"], "dest": "reader" }
  ]
}"#;

#[test]
fn tricky_rules_route_the_same_through_nginx() {
    let (plan, _echoes) = plan_with_echoes(
        TRICKY,
        &[
            "getter", "xexact", "dot", "apipost", "apiall", "js", "raw", "meta", "escaped",
            "writer", "patcher", "reader",
        ],
    );
    let nginx = serve(&plan);
    let compared = compare(
        &plan,
        &nginx,
        &["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"],
        &[
            "/x",
            "/x/",
            "/xy",
            "/x/y/z",
            "/a.b",
            "/axb",
            "/a.bc",
            "/api",
            "/api/",
            "/api/v",
            "/api/v/w",
            "/files/a.js",
            "/files/a/b.js",
            "/files/.js",
            "/files/ajs",
            "/raw",
            "/q/raw",
            "/q/r/raw",
            "/c(1)+$",
            "/c11",
            "/q/%3A/z",
            "/login",
            "/login?x=1",
            "/nope/deep",
            "/",
            "/a/../x",
            "/a%2Fb",
            "/a%zz",
        ],
    );
    assert!(compared >= 40, "{compared}");
}

#[test]
fn what_nginx_refuses_and_stack_routes() {
    // Two kinds of request stack routes and nginx refuses with 400 before any routing: a method
    // not in upper case (`get` is an unknown method to both; stack lets rules without `method`
    // take it, nginx refuses it) and a path whose `..` climbs above the root (stack stops at
    // the root, RFC 3986 5.2.4; nginx refuses). A difference in what each accepts, never in
    // where an accepted request goes.
    let (plan, _echoes) = plan_with_echoes(
        TRICKY,
        &[
            "getter", "xexact", "dot", "apipost", "apiall", "js", "raw", "meta", "escaped",
            "writer", "patcher", "reader",
        ],
    );
    let nginx = serve(&plan);
    let proxy = StackProxy::start(&plan);
    for (method, target, stack_routes_to) in [
        ("get", "/x", Some("stack-xexact")),
        ("get", "/login", None),
        ("post", "/api/v", Some("stack-apiall")),
        ("Get", "/a.b", Some("stack-dot")),
        ("GET", "/../login", Some("stack-writer")),
        ("POST", "/%2e%2e/a.b", Some("stack-dot")),
    ] {
        let want = expected(&plan, method, target);
        match stack_routes_to {
            Some(name) => assert!(
                matches!(&want, Expected::Upstream(n, _) if n == name),
                "{method} {target}: {want:?}"
            ),
            None => assert_eq!(want, Expected::NotFound, "{method} {target}"),
        }
        let got = send(nginx.port, method, target);
        assert_eq!(got.status, 400, "nginx on {method} {target}: {got:?}");
        // The stack proxy routes it where `stack::rules` says.
        let got = send(proxy.port, method, target);
        match stack_routes_to {
            Some(name) => {
                assert_eq!(got.status, 200, "stack proxy on {method} {target}: {got:?}");
                assert_eq!(got.header("x-upstream"), Some(name));
                assert_eq!(got.header("x-method"), Some(method));
            }
            None => assert_eq!(got.status, 404, "stack proxy on {method} {target}: {got:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The command itself (no `stack up` running: default ports).

fn demo_project() -> support::Project {
    let project = support::Project::empty();
    for service in ["writer", "reader", "stats"] {
        let dir = project.path().join("services").join(service).join("src");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("main.rs"), "fn main() {}\n").unwrap();
    }
    std::fs::copy(
        workspace().join("aliases.json"),
        project.path().join("aliases.json"),
    )
    .unwrap();
    project.stack_ok(&["alias", "counter-demo.localhost", "--rules", "aliases.json"]);
    project
}

#[test]
fn command_prints_checks_and_writes() {
    let project = demo_project();
    let Run {
        code,
        stdout,
        stderr,
    } = project.stack(&["export", "nginx", "counter-demo"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("# Generated by stack "), "{stdout}");
    assert!(
        stdout.contains("from the alias `counter-demo.localhost` (aliases.json, 5 rules)"),
        "{stdout}"
    );
    // When: an RFC 3339 UTC time on the second line.
    let second = stdout.lines().nth(1).unwrap();
    assert!(
        second.starts_with("# on 20") && second.contains("Z."),
        "{second}"
    );
    assert!(stdout
        .contains("upstream stack-writer {\n    server 127.0.0.1:8090;\n    keepalive 16;\n}"));
    assert!(stdout
        .contains("upstream stack-reader {\n    server 127.0.0.1:8080;\n    keepalive 16;\n}"));
    assert!(stdout.contains("no `stack up` was running"), "{stdout}");

    let Run {
        code,
        stdout,
        stderr,
    } = project.stack(&[
        "export",
        "nginx",
        "counter-demo.localhost",
        "-o",
        "out/demo.conf",
        "--check",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("> Success! nginx config for counter-demo.localhost written to `out/demo.conf` (3 upstreams, checked by `nginx -t`)"),
        "{stdout}"
    );
    let written = std::fs::read_to_string(project.path().join("out/demo.conf")).unwrap();
    assert!(written.contains("proxy_pass $stack_route_counter_demo_localhost;"));
}

#[test]
fn command_errors_name_what_to_do_and_write_nothing() {
    let project = demo_project();
    let Run { code, stderr, .. } = project.stack(&["export", "nginx", "nope.localhost"]);
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        "Error! no alias `nope.localhost`\nAliases: counter-demo.localhost.\n"
    );

    std::fs::write(
        project.path().join("bad.json"),
        "{\"rules\": [\n  {\"pathname\": \"/x\", \"dest\": \"ghost\"}\n]}\n",
    )
    .unwrap();
    let Run { code, stderr, .. } =
        project.stack(&["alias", "bad.localhost", "--rules", "bad.json"]);
    assert_eq!(code, 0, "{stderr}");
    let Run { code, stderr, .. } =
        project.stack(&["export", "nginx", "bad.localhost", "-o", "bad.conf"]);
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        "Error! bad.json:2:3: rule 1: `ghost` is not a service, deployment or alias of this stack (services: reader, stats, writer; aliases: bad.localhost, counter-demo.localhost)\nFix the rule's `dest`, then set the rules again with `stack alias`.\n"
    );
    assert!(!project.path().join("bad.conf").exists());
}

#[test]
fn nested_path_alias_and_websocket_upgrades_through_nginx() {
    // A rule whose dest is another path alias: that alias's rules decide, 404 when none match.
    let outer = r#"{"rules": [
        { "pathname": "/inner/**", "dest": "inner.localhost" },
        { "pathname": "/ws", "dest": "live" },
        { "dest": "reader" }
    ]}"#;
    let inner = r#"{"rules": [
        { "pathname": "/inner/a", "method": "POST", "dest": "writer" },
        { "pathname": "/inner/*", "dest": "reader" }
    ]}"#;
    let (plan, _echoes) = plan_with_more_aliases(
        outer,
        &[("inner.localhost", inner)],
        &["reader", "writer", "live"],
    );
    assert_eq!(plan.aliases.len(), 2);
    let nginx = serve(&plan);
    let compared = compare(
        &plan,
        &nginx,
        &["GET", "POST", "HEAD"],
        &[
            "/inner/a",
            "/inner/b",
            "/inner/a/b",
            "/inner",
            "/other",
            "/",
        ],
    );
    assert_eq!(compared, 18);

    // A plain request keeps the upstream connection reusable: no `Connection: upgrade`.
    let plain = send(nginx.port, "GET", "/ws");
    assert_eq!(plain.header("x-upstream"), Some("stack-live"));
    assert_eq!(plain.header("x-connection-seen"), Some(""));

    // An upgrade is passed through, and bytes flow both ways afterwards.
    let mut stream = TcpStream::connect(("127.0.0.1", nginx.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /ws HTTP/1.1\r\nHost: counter-demo.localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("X-Upstream: stack-live"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("x-connection-seen: upgrade"),
        "{head}"
    );
    stream.write_all(b"ping over the tunnel").unwrap();
    let mut echoed = [0; 20];
    reader.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"ping over the tunnel");
}

#[test]
fn outside_urls_and_pinned_deployments_pass_nginx_t() {
    let mut state = State::default();
    state.aliases.insert(
        "app.localhost".into(),
        Alias::new(AliasTarget::Rules {
            file: "app.json".into(),
            text: r#"{"rules": [
                { "pathname": "/api/**", "dest": "http://127.0.0.1:9000" },
                { "pathname": "/tls/**", "dest": "https://127.0.0.1:9443" },
                { "pathname": "/old", "dest": "writer-abcdefghij.localhost" },
                { "pathname": "/now", "dest": "writer-abcdefghij.now.sh" },
                { "dest": "writer" }
            ]}"#
            .into(),
            positions: Vec::new(),
        }),
    );
    let project = Project {
        state: &state,
        services: vec!["writer".into()],
        running: None,
    };
    let plan = Plan::new(&project, "app.localhost").unwrap();
    let config = nginx::render(&plan, &RenderOptions::default());
    assert!(
        config.contains("map $stack_route_app_localhost $stack_upstream_host {"),
        "{config}"
    );
    assert!(
        config.contains("\"http://ext-127.0.0.1-9000\" \"127.0.0.1:9000\";"),
        "{config}"
    );
    assert!(config.contains("proxy_ssl_server_name on;"), "{config}");
    assert!(
        config.contains("upstream stack-writer-abcdefghij {"),
        "{config}"
    );
    nginx::check(&config).unwrap_or_else(|error| panic!("{error}\n{config}"));
}

#[test]
fn a_tls_server_block_with_the_given_files_passes_nginx_t() {
    support::require("nginx");
    let project = demo_project();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=counter-demo.localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed (apt-get install openssl)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let Run {
        code,
        stdout,
        stderr,
    } = project.stack(&[
        "export",
        "nginx",
        "counter-demo.localhost",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--check",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("    listen 443 ssl http2;\n"), "{stdout}");
    assert!(
        stdout.contains(&format!("    ssl_certificate \"{}\";\n", cert.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("    ssl_certificate_key \"{}\";\n", key.display())),
        "{stdout}"
    );
    assert_eq!(
        stdout
            .matches("server_name counter-demo.localhost;")
            .count(),
        2,
        "{stdout}"
    );
    assert_eq!(
        stdout
            .matches("proxy_set_header X-Forwarded-Proto $scheme;")
            .count(),
        2,
        "{stdout}"
    );

    let half = project.stack(&[
        "export",
        "nginx",
        "counter-demo.localhost",
        "--tls-cert",
        "x.pem",
    ]);
    assert_eq!(half.code, 2, "{}", half.stderr);
}
