//! `stack redis keys|get|del|flush|watch`, run as the real binary against a real `redis-server`
//! (started per test on a free port by `session::testing::RedisServer`), with
//! `REDIS_SESSION_URL` set and `--cwd` a temp dir. `watch` is checked against the real `writer`
//! binary (`cargo build --workspace --bins` puts it beside `stack`).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use session::cookie::{encode_uri_component, sign};
use session::testing::RedisServer;

mod support;
use support::{
    free_port, listening, raw_http, require, wait_until, ChildGuard, Project, Run, Up, STACK,
};

const SECRET: &str = "canary-secret-7f3a";
const LINE_DEADLINE: Duration = Duration::from_secs(10);

/// A temp project whose `stack` commands get `REDIS_SESSION_URL=redis_url`.
fn redis_project(redis_url: &str) -> Project {
    Project::empty().with_env("REDIS_SESSION_URL", redis_url)
}

fn session_json(user: Option<f64>, count: Option<u32>) -> String {
    let mut text =
        r#"{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"}"#.to_owned();
    if let Some(user) = user {
        text.push_str(&format!(r#","user":{{"id":{user}}}"#));
    }
    if let Some(count) = count {
        text.push_str(&format!(r#","count":{count}"#));
    }
    text.push('}');
    text
}

/// Keys that are not sessions; nothing may ever touch them.
const OTHER_KEYS: [&str; 5] = [
    "user:1",
    "sessions:7",
    "sess",
    "xsess:abc",
    "cache:sess:abc",
];

fn put_other_keys(redis: &mut redis::Connection) {
    for key in OTHER_KEYS {
        redis::cmd("SET")
            .arg(key)
            .arg(format!("value of {key}"))
            .exec(redis)
            .expect("SET");
    }
}

fn assert_other_keys_intact(redis: &mut redis::Connection) {
    for key in OTHER_KEYS {
        let value: Option<String> = redis::cmd("GET").arg(key).query(redis).expect("GET");
        assert_eq!(
            value.as_deref(),
            Some(format!("value of {key}").as_str()),
            "{key}"
        );
    }
}

/// Writes `n` sessions in one pipeline; returns their ids.
fn populate(redis: &mut redis::Connection, n: usize) -> BTreeSet<String> {
    let mut pipe = redis::pipe();
    let mut ids = BTreeSet::new();
    for index in 0..n {
        let id = format!("id{index:06}-abcdefghijklmnopqrstuv");
        pipe.cmd("SET")
            .arg(format!("sess:{id}"))
            .arg(session_json(Some(index as f64 / 1e4), Some(index as u32)))
            .arg("EX")
            .arg(3600)
            .ignore();
        ids.insert(id);
    }
    pipe.exec(redis).expect("pipelined SETs");
    ids
}

/// How many times each command ran since the last `CONFIG RESETSTAT`.
fn command_calls(redis: &mut redis::Connection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(redis)
        .expect("INFO");
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().expect("a number of calls"))
}

fn reset_stats(redis: &mut redis::Connection) {
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .exec(redis)
        .expect("RESETSTAT");
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("not JSON ({error}): {text}"))
}

#[test]
fn keys_lists_zero_one_and_ten_thousand_sessions_with_scan_only() {
    let server = RedisServer::start();
    let mut redis = server.connection();
    put_other_keys(&mut redis);
    let project = redis_project(&server.url());

    let run = project.stack(&["redis", "keys"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("No sessions matching `sess:*`"),
        "{}",
        run.stdout
    );
    let listed = json(&project.stack(&["redis", "keys", "--json"]).stdout);
    assert_eq!(listed["total"], 0);

    redis::cmd("SET")
        .arg("sess:only-one")
        .arg(session_json(Some(0.36535326065695717), Some(3)))
        .arg("EX")
        .arg(600)
        .exec(&mut redis)
        .expect("SET");
    let run = project.stack(&["redis", "keys"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    assert!(lines[0].starts_with("ID"), "{}", lines[0]);
    for column in ["only-one", r#"{"id":0.36535326065695717}"#, "count"] {
        assert!(lines[1].contains(column), "{column} in {}", lines[1]);
    }
    assert!(
        lines[1].contains("9m") || lines[1].contains("10m"),
        "{}",
        lines[1]
    );
    assert!(lines[2].starts_with("> 1 session in "), "{}", lines[2]);

    let mut ids = populate(&mut redis, 10_000);
    ids.insert("only-one".to_owned());
    reset_stats(&mut redis);
    let started = Instant::now();
    let run = project.stack(&["redis", "keys", "--json"]);
    let elapsed = started.elapsed();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let listed = json(&run.stdout);
    assert_eq!(listed["total"], 10_001);
    let sessions = listed["sessions"].as_array().expect("an array");
    let listed_ids: BTreeSet<String> = sessions
        .iter()
        .map(|s| s["id"].as_str().expect("an id").to_owned())
        .collect();
    assert_eq!(listed_ids, ids);
    let first = &sessions[0];
    assert_eq!(first["fields"], serde_json::json!(["count"]));
    assert_eq!(first["user"], serde_json::json!({"id": 0}));
    assert!(first["ttl"].as_i64().expect("a ttl") > 3500, "{first}");
    assert_eq!(command_calls(&mut redis, "keys"), 0, "KEYS was used");
    assert!(
        command_calls(&mut redis, "scan") >= 10,
        "SCAN was not used in batches"
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "10,000 sessions took {elapsed:?}"
    );

    // A pattern stays inside `sess:`.
    let run = project.stack(&["redis", "keys", "id00000*", "--json"]);
    assert_eq!(json(&run.stdout)["total"], 10, "{}", run.stdout);
    let run = project.stack(&["redis", "keys", "*", "--json"]);
    assert_eq!(json(&run.stdout)["total"], 10_001);
    assert_other_keys_intact(&mut redis);
}

#[test]
fn del_and_flush_touch_only_sessions() {
    let server = RedisServer::start();
    let mut redis = server.connection();
    put_other_keys(&mut redis);
    populate(&mut redis, 2_500);
    let project = redis_project(&server.url());

    let run = project.stack(&[
        "redis",
        "del",
        "id000001-abcdefghijklmnopqrstuv",
        "sess:id000002-abcdefghijklmnopqrstuv",
        "nope",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains("Deleted 2 sessions"), "{}", run.stdout);
    assert!(
        run.stderr.contains("no such session: `nope`"),
        "{}",
        run.stderr
    );
    let exists: u64 = redis::cmd("EXISTS")
        .arg("sess:id000001-abcdefghijklmnopqrstuv")
        .arg("sess:id000002-abcdefghijklmnopqrstuv")
        .arg("sess:id000003-abcdefghijklmnopqrstuv")
        .query(&mut redis)
        .expect("EXISTS");
    assert_eq!(exists, 1);

    let run = project.stack(&["redis", "del", "user:1", "nope"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr.contains("Error! no such session"),
        "{}",
        run.stderr
    );
    assert_other_keys_intact(&mut redis);

    // No terminal and no --yes: refused, nothing deleted.
    let run = project.stack(&["redis", "flush"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr.contains("needs a confirmation"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--yes"), "{}", run.stderr);
    let size: u64 = redis::cmd("DBSIZE").query(&mut redis).expect("DBSIZE");
    assert_eq!(size, 2_498 + OTHER_KEYS.len() as u64);

    reset_stats(&mut redis);
    let run = project.stack(&["redis", "flush", "--yes"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("Deleted 2498 sessions"),
        "{}",
        run.stdout
    );
    assert_eq!(command_calls(&mut redis, "keys"), 0, "KEYS was used");
    assert!(
        command_calls(&mut redis, "unlink") >= 2,
        "UNLINK in batches"
    );
    let size: u64 = redis::cmd("DBSIZE").query(&mut redis).expect("DBSIZE");
    assert_eq!(size, OTHER_KEYS.len() as u64);
    assert_other_keys_intact(&mut redis);

    let run = project.stack(&["redis", "flush", "--yes"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains("nothing to delete"), "{}", run.stdout);
}

#[test]
fn get_by_id_cookie_value_and_header_verifies_signatures() {
    let server = RedisServer::start();
    let mut redis = server.connection();
    let id = "q5t7q67lzOsCJDca-kvT63Yk6n6kVvpL";
    redis::cmd("SET")
        .arg(format!("sess:{id}"))
        .arg(session_json(Some(0.36535326065695717), Some(7)))
        .arg("EX")
        .arg(86_000)
        .exec(&mut redis)
        .expect("SET");
    let plain = redis_project(&server.url());
    let project = redis_project(&server.url()).with_env("SESSION_SECRET", SECRET);

    // By id: no secret needed.
    let run = plain.stack(&["redis", "get", id]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains(&format!("Session `{id}`")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("TTL 23h 53m"), "{}", run.stdout);
    assert!(run.stdout.contains(r#""count": 7"#), "{}", run.stdout);
    assert!(run.stdout.contains("0.36535326065695717"), "{}", run.stdout);

    let signed = sign(id, SECRET);
    let encoded = encode_uri_component(&signed);
    let forms = [
        signed.clone(),
        encoded.clone(),
        format!("connect.sid={encoded}"),
        format!("Cookie: theme=dark; connect.sid={encoded}; lang=en"),
    ];
    for form in &forms {
        let run = project.stack(&["redis", "get", form]);
        assert_eq!(run.code, 0, "{form}: {}", run.all());
        assert!(
            run.stdout.contains(&format!(
                "Cookie verifies (valid, signed with secret 1 of 1): it names session `{id}`"
            )),
            "{form}: {}",
            run.stdout
        );
        assert!(run.stdout.contains(r#""count": 7"#), "{}", run.stdout);
        assert!(!run.all().contains(SECRET), "secret shown: {}", run.all());
    }
    let run = project.stack(&["redis", "get", &forms[2], "--json"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let got = json(&run.stdout);
    assert_eq!(got["id"], id);
    assert_eq!(got["cookie"]["valid"], true);
    assert_eq!(got["session"]["count"], 7);
    assert!(got["ttl"].as_i64().expect("ttl") > 85_000);

    // Rotation: a cookie signed with the old secret verifies, and the output says which.
    let rotated =
        redis_project(&server.url()).with_env("SESSION_SECRET", &format!("new-{SECRET},{SECRET}"));
    let run = rotated.stack(&["redis", "get", &forms[2]]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("signed with secret 2 of 2"),
        "{}",
        run.stdout
    );

    // Tampered and wrong-secret cookies: refused, and the store is not read.
    let tampered_id = format!("{}X", &id[..id.len() - 1]);
    let tampered = encoded.replacen(id, &tampered_id, 1);
    let wrong = encode_uri_component(&sign(id, "another-secret"));
    for (cookie, claimed) in [(&tampered, tampered_id.as_str()), (&wrong, id)] {
        reset_stats(&mut redis);
        for form in [cookie.clone(), format!("connect.sid={cookie}")] {
            let run = project.stack(&["redis", "get", &form]);
            assert_eq!(run.code, 1, "{form}: {}", run.all());
            assert!(
                run.stderr.contains(&format!("Error! the cookie does NOT verify against SESSION_SECRET (1 secret tried); it claims session `{claimed}`, which was not looked up")),
                "{}",
                run.stderr
            );
            assert!(!run.stdout.contains("count"), "{}", run.stdout);
            assert!(!run.all().contains(SECRET), "secret shown: {}", run.all());
        }
        assert_eq!(
            command_calls(&mut redis, "mget"),
            0,
            "a bad cookie was looked up"
        );
        assert_eq!(
            command_calls(&mut redis, "get"),
            0,
            "a bad cookie was looked up"
        );
    }
    let run = project.stack(&["redis", "get", &format!("connect.sid={tampered}"), "--json"]);
    assert_eq!(run.code, 1);
    assert_eq!(json(&run.stdout)["cookie"]["valid"], false);

    // A signed cookie without SESSION_SECRET: a clear error.
    let run = plain.stack(&["redis", "get", &forms[2]]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr
            .contains("no `SESSION_SECRET` is set here, no `stack up` runs"),
        "{}",
        run.stderr
    );

    // SESSION_SECRET from --dotenv.
    std::fs::write(
        plain.path().join("local.env"),
        format!("SESSION_SECRET={SECRET}\n"),
    )
    .expect("write .env");
    let run = plain.stack(&["redis", "--dotenv=local.env", "get", &forms[2]]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(!run.all().contains(SECRET));

    let run = plain.stack(&["redis", "get", "missing-id"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("no session `missing-id`"),
        "{}",
        run.stderr
    );
}

#[test]
fn every_error_shows_the_masked_url_never_the_password() {
    let canary = "canary-pw-51d2";
    let closed = free_port();
    let server = RedisServer::start_with_password("the-right-one");
    let urls = [
        format!("redis://:{canary}@127.0.0.1:{closed}"),
        format!("redis://127.0.0.1:{closed}?password={canary}"),
        format!("redis://:{canary}@127.0.0.1:{}", server.port()),
    ];
    let masked = [
        format!("redis://:***@127.0.0.1:{closed}"),
        format!("redis://:***@127.0.0.1:{closed}"),
        format!("redis://:***@127.0.0.1:{}", server.port()),
    ];
    let commands: [&[&str]; 5] = [
        &["redis", "keys"],
        &["redis", "get", "some-id"],
        &["redis", "del", "some-id"],
        &["redis", "flush", "--yes"],
        &["redis", "watch"],
    ];
    for (url, masked) in urls.iter().zip(&masked) {
        let project = redis_project(url);
        for args in commands {
            let run = project.stack(args);
            assert_eq!(run.code, 1, "{args:?} {masked}: {}", run.all());
            let first_line = run.stderr.lines().next().unwrap_or_default();
            assert!(
                first_line.starts_with(&format!("Error! cannot reach Redis at `{masked}`"))
                    || first_line.starts_with(&format!(
                        "Error! Redis at `{masked}` refused the credentials"
                    )),
                "{args:?}: {}",
                run.stderr
            );
            assert!(run.stderr.contains("REDIS_SESSION_URL"), "{}", run.stderr);
            assert!(
                !run.all().contains(canary),
                "{args:?}: password shown: {}",
                run.all()
            );
        }
    }
    // A cluster's wrong password is refused credentials; a plain server is no cluster node
    // and no sentinel, and each error says so.
    let port = server.port();
    for (url, first_line) in [
        (
            format!("redis-cluster://:{canary}@127.0.0.1:{port}"),
            format!(
                "Error! Redis at `redis-cluster://:***@127.0.0.1:{port}` refused the credentials"
            ),
        ),
        (
            format!("redis-cluster://:the-right-one@127.0.0.1:{port}"),
            format!("Error! `redis-cluster://:***@127.0.0.1:{port}` is not a Redis Cluster node"),
        ),
        (
            format!("redis-sentinel://:the-right-one@127.0.0.1:{port}#main"),
            format!("Error! `redis-sentinel://:***@127.0.0.1:{port}#main` is not a Redis Sentinel"),
        ),
    ] {
        let run = redis_project(&url).stack(&["redis", "keys"]);
        assert_eq!(run.code, 1, "{}", run.all());
        assert!(run.stderr.starts_with(&first_line), "{}", run.stderr);
        assert!(!run.all().contains(canary) && !run.all().contains("the-right-one"));
    }

    // The same through --dotenv.
    let project = redis_project("");
    std::fs::write(
        project.path().join(".env"),
        format!("REDIS_SESSION_URL={}\n", urls[0]),
    )
    .expect("write .env");
    let run = project.stack(&["redis", "--dotenv=.env", "keys"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains(&masked[0]), "{}", run.stderr);
    assert!(
        run.stderr.contains("from REDIS_SESSION_URL in `"),
        "{}",
        run.stderr
    );
    assert!(!run.all().contains(canary));
    // A bare `--dotenv` reads `.env` and never swallows the argument after it.
    let run = project.stack(&["redis", "get", "--dotenv", "some-session-id"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains(&masked[0]), "{}", run.stderr);
    assert!(!run.stderr.contains("some-session-id`: "), "{}", run.stderr);
}

fn writer_binary() -> PathBuf {
    let stack = Path::new(STACK);
    let writer = stack
        .parent()
        .expect("the binary has a directory")
        .join("writer");
    assert!(
        writer.is_file(),
        "the writer binary is missing at {}; build it first with `cargo build --workspace --bins`",
        writer.display()
    );
    writer
}

/// A GET to the writer; returns the body and the `connect.sid` cookie it set, if any.
fn http_get(port: u16, path: &str, cookie: Option<&str>) -> (String, Option<String>) {
    let cookie = cookie.map(|value| format!("connect.sid={value}"));
    let mut headers = vec![("Host", "127.0.0.1")];
    headers.extend(cookie.as_deref().map(|cookie| ("Cookie", cookie)));
    let reply = raw_http::request(port, "GET", path, &headers);
    assert!(
        reply.head.starts_with("HTTP/1.1 200"),
        "{path}: {}\r\n\r\n{}",
        reply.head,
        reply.body
    );
    let set_cookie = reply
        .headers
        .iter()
        .filter(|(name, _)| name == "set-cookie")
        .find_map(|(_, value)| value.strip_prefix("connect.sid=")?.split(';').next())
        .map(str::to_owned);
    (reply.body, set_cookie)
}

#[test]
fn watch_shows_a_login_an_increment_and_a_logout_made_through_the_writer() {
    let writer = writer_binary();
    let server = RedisServer::start();
    let mut redis = server.connection();
    let project = redis_project(&server.url());

    // Notifications off (redis-server's default): say how to turn them on, do not wait.
    let run = project.stack(&["redis", "watch"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr.contains("keyspace notifications are off"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("CONFIG SET notify-keyspace-events KEA"),
        "{}",
        run.stderr
    );

    redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("KEA")
        .exec(&mut redis)
        .expect("CONFIG SET");
    let mut watch = Up::spawn(&project, &["redis", "watch"], &[]);
    watch.wait_for_parts(&["> Watching sessions in ", "0 known"], 1, LINE_DEADLINE);

    let port = free_port();
    let _writer = ChildGuard::spawn(
        Command::new(&writer)
            .env("REDIS_SESSION_URL", server.url())
            .env("SESSION_SECRET", SECRET)
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "the writer",
    );
    wait_until(
        &format!("the writer to listen on {port}"),
        LINE_DEADLINE,
        || listening(port),
    );

    let (body, cookie) = http_get(port, "/login", None);
    assert!(body.contains("you are now logged in"), "{body}");
    let cookie = cookie.expect("login sets the session cookie");
    let signed = session::cookie::decode_uri_component(&cookie);
    let id = signed
        .strip_prefix("s:")
        .and_then(|body| body.rsplit_once('.'))
        .map(|(id, _)| id.to_owned())
        .expect("a signed cookie");
    let line = watch.wait_for_parts(&["created", &id], 1, LINE_DEADLINE);
    assert!(line.contains(r#"user {"id":"#), "{line}");

    http_get(port, "/increment", Some(&cookie));
    let line = watch.wait_for_parts(&["changed", &id], 1, LINE_DEADLINE);
    assert!(line.contains("count added 1"), "{line}");
    http_get(port, "/increment", Some(&cookie));
    let line = watch.wait_for_parts(&["changed", &id], 2, LINE_DEADLINE);
    assert!(line.contains("count 1 → 2"), "{line}");

    http_get(port, "/logout", Some(&cookie));
    let line = watch.wait_for_parts(&["deleted", &id], 1, LINE_DEADLINE);
    assert!(line.contains("had user, count"), "{line}");

    // Ctrl-C ends it cleanly and quickly.
    kill(watch.pid(), Signal::SIGINT).expect("SIGINT");
    let status = watch.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// Whether printing `text` raw could make a terminal do something (as `stack requests` judges).
fn drives_a_terminal(text: &str) -> bool {
    text.chars().any(|c| {
        c.is_control() && c != '\n'
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    })
}

/// Anyone who can write to the store chooses its keys and values (a service storing a name
/// from a form): `keys`, `get` and `watch` escape what could drive the terminal, and their
/// JSON stays the same JSON.
#[test]
fn no_session_key_or_value_reaches_the_terminal_raw() {
    let server = RedisServer::start();
    let mut redis = server.connection();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("KEA")
        .exec(&mut redis)
        .expect("CONFIG SET");
    let project = redis_project(&server.url());
    let mut watch = Up::spawn(&project, &["redis", "watch"], &[]);
    watch.wait_for_parts(&["> Watching sessions in ", "0 known"], 1, LINE_DEADLINE);

    let id = "evil\u{1b}]0;owned\u{7}";
    // Valid JSON: C1 controls and bidirectional overrides may stand raw in its strings.
    let value = concat!(
        r#"{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"#,
        "\"user\":{\"name\":\"\u{9b}2J\u{202e}nimda\"},",
        // A C0 control only as JSON's escape: raw, it would not be JSON.
        r#""\u001b[31mfield":1}"#
    );
    redis::cmd("SET")
        .arg(format!("sess:{id}"))
        .arg(value)
        .arg("EX")
        .arg(600)
        .exec(&mut redis)
        .expect("SET");

    // A key and a value that are not UTF-8 hide nothing else and show as `\xNN`.
    redis::cmd("SET")
        .arg(b"sess:bad\xff\xfeutf".as_slice())
        .arg(b"{\"user\":\"\xff\"}".as_slice())
        .arg("EX")
        .arg(600)
        .exec(&mut redis)
        .expect("SET");
    let keys = project.stack(&["redis", "keys"]);
    assert_eq!(keys.code, 0, "{}", keys.all());
    assert!(!drives_a_terminal(&keys.all()), "{:?}", keys.all());
    assert!(keys.stdout.contains(r"bad\\xff\\xfeutf"), "{}", keys.stdout);
    assert!(keys.stdout.contains("(not JSON)"), "{}", keys.stdout);
    redis::cmd("DEL")
        .arg(b"sess:bad\xff\xfeutf".as_slice())
        .exec(&mut redis)
        .expect("DEL");
    assert!(
        keys.stdout.contains(r"evil\x1b]0;owned\x07"),
        "{}",
        keys.stdout
    );
    assert!(
        keys.stdout.contains(r"\u009b2J\u202enimda"),
        "{}",
        keys.stdout
    );

    let listed = project.stack(&["redis", "keys", "--json"]);
    assert!(!drives_a_terminal(&listed.stdout), "{:?}", listed.stdout);
    let listed = json(&listed.stdout);
    assert_eq!(listed["sessions"][0]["id"], id, "{listed}");
    assert_eq!(
        listed["sessions"][0]["user"]["name"], "\u{9b}2J\u{202e}nimda",
        "{listed}"
    );

    // The id as a whole key: it holds `;`, which alone would read as a cookie header.
    let key = format!("sess:{id}");
    let got = project.stack(&["redis", "get", &key]);
    assert_eq!(got.code, 0, "{}", got.all());
    assert!(!drives_a_terminal(&got.all()), "{:?}", got.all());
    assert!(
        got.stdout.contains(r"\u009b2J\u202enimda"),
        "{}",
        got.stdout
    );
    let got = project.stack(&["redis", "get", &key, "--json"]);
    assert!(!drives_a_terminal(&got.stdout), "{:?}", got.stdout);
    let got = json(&got.stdout);
    assert_eq!(got["session"]["\u{1b}[31mfield"], 1, "{got}");

    // Nor does what someone typed, echoed in an error.
    for args in [
        ["redis", "get", "sess:nope\u{1b}[2J\u{202e}"],
        ["redis", "del", "sess:nope\u{1b}[2J\u{202e}"],
        ["redis", "get", "two\u{1b}[2J words"],
    ] {
        let refused = project.stack(&args);
        assert_ne!(refused.code, 0, "{}", refused.all());
        assert!(
            !drives_a_terminal(&refused.all()),
            "{args:?}: {:?}",
            refused.all()
        );
    }

    let line = watch.wait_for_parts(&["created", r"evil\x1b]0;owned\x07"], 1, LINE_DEADLINE);
    assert!(!drives_a_terminal(&line), "{line:?}");
    assert!(line.contains(r"\u009b2J\u202enimda"), "{line}");
    assert!(line.contains(r"\x1b[31mfield 1"), "{line}");
    kill(watch.pid(), Signal::SIGINT).expect("SIGINT");
    watch.wait_exit(Duration::from_secs(5));
}

/// A project with one tiny Node service, enough for `stack up` to run its managed Redis.
fn node_project() -> Project {
    require("node");
    let project = Project::empty();
    let service = project.path().join("services/hello");
    std::fs::create_dir_all(service.join("node_modules")).expect("service dir");
    std::fs::write(
        service.join("package.json"),
        r#"{"name":"hello","version":"1.0.0","private":true,"scripts":{"start":"node server.js"}}"#,
    )
    .expect("package.json");
    std::fs::write(
        service.join("server.js"),
        "require('http').createServer((q, s) => s.end('ok')).listen(+process.env.PORT, '127.0.0.1')\n",
    )
    .expect("server.js");
    project
}

#[test]
fn the_managed_redis_is_found_through_a_running_stack_up() {
    let project = node_project();
    let mut up = Up::launch(&project, &["--no-watch"], &[]);
    let line = up.wait_for("> Redis ready at redis://:***@127.0.0.1:", LINE_DEADLINE);
    // Shown masked; the project's owner finds the password in `.stack/redis-password`.
    let url = line
        .split_whitespace()
        .find(|word| word.starts_with("redis://"))
        .expect("the managed URL")
        .to_owned();
    let password = std::fs::read_to_string(project.path().join(".stack/redis-password")).unwrap();
    let secret_url = url.replace("***", &password);
    // The control socket that `stack get` asks is bound after Redis is announced, and before
    // the first deployment is: asking in between would fall back to the environment (this
    // test flaked that way).
    up.wait_for("> Ready! http://hello-", LINE_DEADLINE);

    let mut redis = redis::Client::open(secret_url.as_str())
        .and_then(|client| client.get_connection())
        .expect("connect to the managed Redis");
    redis::cmd("SET")
        .arg("sess:from-managed")
        .arg(session_json(None, Some(41)))
        .arg("EX")
        .arg(600)
        .exec(&mut redis)
        .expect("SET");

    // The running stack up wins over REDIS_SESSION_URL (here a dead one, with a canary password).
    let canary = "canary-pw-managed";
    let project = project.with_env(
        "REDIS_SESSION_URL",
        &format!("redis://:{canary}@127.0.0.1:{}", free_port()),
    );
    let run = project.stack(&["redis", "get", "from-managed"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains(&format!("in {url}")), "{}", run.stdout);
    assert!(run.stdout.contains(r#""count": 41"#), "{}", run.stdout);
    let run = project.stack(&["redis", "keys", "--json"]);
    assert_eq!(json(&run.stdout)["redis"], url.as_str());
    assert_eq!(json(&run.stdout)["total"], 1);

    // Once stack up has stopped, the environment's URL is used (and shown masked).
    kill(up.pid(), Signal::SIGINT).expect("SIGINT");
    up.wait_exit(Duration::from_secs(15));
    let run = project.stack(&["redis", "keys"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr.contains("redis://:***@127.0.0.1:"),
        "{}",
        run.stderr
    );
    assert!(!run.all().contains(canary));
    drop(project);
}

/// Runs `stack redis flush` on a pseudo-terminal (util-linux `script`), answering `answer`.
fn flush_on_a_terminal(project: &Project, answer: &str) -> Run {
    let command = format!("{STACK} --cwd {} redis flush", project.path().display());
    let mut script = Command::new("script");
    script.args(["-qec", &command, "/dev/null"]);
    project.clean_environment(&mut script);
    let mut child = script
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "`script` (util-linux) is needed for the terminal test: apt-get install util-linux",
        );
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    // Answer only once the question is on the terminal.
    let mut seen = Vec::new();
    let deadline = Instant::now() + LINE_DEADLINE;
    while !String::from_utf8_lossy(&seen).contains("[y/N]") {
        assert!(
            Instant::now() < deadline,
            "no prompt: {}",
            String::from_utf8_lossy(&seen)
        );
        let mut chunk = [0_u8; 256];
        let n = stdout.read(&mut chunk).expect("read the terminal");
        assert!(n > 0, "no prompt: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&chunk[..n]);
    }
    stdin.write_all(answer.as_bytes()).expect("answer");
    stdout.read_to_end(&mut seen).expect("read the rest");
    drop(stdin);
    let status = child.wait().expect("script exits");
    Run {
        code: status.code().expect("an exit code"),
        stdout: String::from_utf8_lossy(&seen).into_owned(),
        stderr: String::new(),
    }
}

#[test]
fn flush_asks_on_a_terminal() {
    let server = RedisServer::start();
    let mut redis = server.connection();
    put_other_keys(&mut redis);
    populate(&mut redis, 3);
    let project = redis_project(&server.url());

    let run = flush_on_a_terminal(&project, "n\n");
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("Delete 3 sessions (every `sess:*` key)"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Nothing was deleted"), "{}", run.stdout);
    let size: u64 = redis::cmd("DBSIZE").query(&mut redis).expect("DBSIZE");
    assert_eq!(size, 3 + OTHER_KEYS.len() as u64);

    let run = flush_on_a_terminal(&project, "y\n");
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.stdout.contains("Deleted 3 sessions"), "{}", run.stdout);
    let size: u64 = redis::cmd("DBSIZE").query(&mut redis).expect("DBSIZE");
    assert_eq!(size, OTHER_KEYS.len() as u64);
    assert_other_keys_intact(&mut redis);
}

/// A `stack up` holds the project's lock from its first step but binds its control socket
/// only once its build, Redis and proxy are up. In between, the commands wait for it and then
/// refuse: they never fall back to the environment's Redis (here a canary that must not show).
#[test]
fn a_starting_stack_up_is_waited_for_then_refused_never_bypassed() {
    use nix::fcntl::{Flock, FlockArg};

    let canary = "canary-pw-starting";
    let project = redis_project(&format!("redis://:{canary}@127.0.0.1:{}", free_port()));
    let stack_dir = project.path().join(".stack");
    std::fs::create_dir_all(&stack_dir).expect(".stack");
    let lock_file = std::fs::File::create(stack_dir.join("lock")).expect("the lock file");
    let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, errno)| errno)
        .expect("take the project's lock, as a starting stack up does");

    let started = Instant::now();
    let run = project.stack(&["redis", "keys"]);
    let waited = started.elapsed();
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr.contains("Error! the `stack up` in")
            && run.stderr.contains("is still starting")
            && run.stderr.contains("> Ready!"),
        "{}",
        run.stderr
    );
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(15),
        "waited {waited:?}"
    );
    assert!(!run.all().contains(canary), "{}", run.all());

    // Once nothing holds the lock, the environment's URL is used again (and masked).
    drop(lock);
    let run = project.stack(&["redis", "keys"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr.contains("redis://:***@127.0.0.1:"),
        "{}",
        run.stderr
    );
}
