# Shared by bench/proxy/run.sh, tls.sh, request_log.sh, instructions.sh and syscalls.sh
# (sourced, not run). The functions below expect ROOT, PROFILE, WORK and the PIDS array of the
# sourcing script.

# stop_gently: the EXIT trap of run.sh, tls.sh and request_log.sh: SIGINT to every process in
# PIDS (the proxies and nginx drain), SIGKILL to what is left after 0.5 s, then WORK removed.
stop_gently() {
    for pid in "${PIDS[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
    sleep 0.5
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_port PORT: until something listens on 127.0.0.1:PORT (30 s, for runs under valgrind).
wait_port() {
    for _ in $(seq 1 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "Error! nothing listens on 127.0.0.1:$1" >&2
    exit 1
}

# nginx_conf DIR PORT UPSTREAM_PORT PROCESS_LINES: writes DIR/nginx.conf, nginx configured as
# the stack proxy is (keepalive upstream pool, the same forwarding headers, no access log),
# listening on PORT; PROCESS_LINES sets the process model (workers, master).
nginx_conf() {
    local dir=$1 port=$2 upstream_port=$3 process_lines=$4
    mkdir -p "$dir/logs"
    cat >"$dir/nginx.conf" <<NGINX
$process_lines
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    # nginx closes a client connection after 1,000 requests by default; h2load does not
    # reconnect, so that capped nginx's HTTP/2 figure at 64 x 1000 / DURATION (12,800/s for
    # 5 s). stack sets no such limit.
    keepalive_requests 1000000;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    upstream app {
        server 127.0.0.1:$upstream_port;
        keepalive 128;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$proxy_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Host \$http_host;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Real-IP \$remote_addr;
        }
    }
}
NGINX
}

# build_examples: builds the upstream and proxy_bench with $PROFILE; sets EXAMPLES.
build_examples() {
    echo "building the examples (profile $PROFILE)..." >&2
    (cd "$ROOT" && cargo build --profile "$PROFILE" -p stack --example bench_upstream --example proxy_bench >&2)
    EXAMPLES="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE/examples"
}

# start_upstream: runs cli/examples/bench_upstream.rs on a free port, its pid in PIDS, and
# waits for it; sets UPSTREAM_PORT.
start_upstream() {
    UPSTREAM_PORT=$(free_port)
    "$EXAMPLES/bench_upstream" "127.0.0.1:$UPSTREAM_PORT" >"$WORK/upstream.log" 2>&1 &
    PIDS+=($!)
    wait_port "$UPSTREAM_PORT"
}
