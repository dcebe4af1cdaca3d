# wrk helpers shared by bench/sessions/run.sh and bench/redis-cluster/run.sh (source it).
# They use the caller's $work (a temp dir), $threads, $connections and $duration.

# Writes $work/cookies.lua: a wrk script sending the cookies of $COOKIES (one per line) round robin.
wrk_cookie_script() {
  cat >"$work/cookies.lua" <<'LUA'
local cookies, n = {}, 0
for line in io.lines(os.getenv("COOKIES")) do n = n + 1; cookies[n] = line end
local i = 0
request = function()
  i = i % n + 1
  return wrk.format("GET", nil, { Cookie = cookies[i] })
end
LUA
}

# CPU time (user + system, in clock ticks) a process has used so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# Runs wrk (after a 2 s warm-up) and appends `label|req/s|p50|p99|non-2xx|CPU µs per request of
# pid` to $work/results. CPU per request does not depend on what else the machine runs, unlike req/s.
measure() { # label url cookie-file pid
  local label=$1 url=$2 cookies=$3 pid=$4 out before after requests cpu_us rps p50 p99 non2xx
  COOKIES=$cookies wrk -t"$threads" -c"$connections" -d2s -s "$work/cookies.lua" "$url" >/dev/null
  before=$(cpu_ticks "$pid")
  out=$(COOKIES=$cookies wrk -t"$threads" -c"$connections" -d"$duration" --latency -s "$work/cookies.lua" "$url")
  after=$(cpu_ticks "$pid")
  requests=$(awk '/requests in/ { print $1 }' <<<"$out")
  cpu_us=$(awk -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$requests" 'BEGIN { printf "%.0f", ticks * 1e6 / hz / n }')
  echo "$out" >"$work/wrk-${label//[^A-Za-z0-9]/_}.txt"
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $5}' <<<"$out")
  echo "$label|$rps|$p50|$p99|${non2xx:-0}|$cpu_us" >>"$work/results"
  echo "$label: $rps req/s, p50 $p50, p99 $p99, non-2xx ${non2xx:-0}, service CPU ${cpu_us} µs/request"
}

# The best round of each measurement in $work/results, in first-seen order, as table rows with
# every round's req/s and CPU per request beside it.
best_rows() {
  awk -F'|' '
    !($1 in best) { order[++n] = $1 }
    !($1 in best) || $2 > best[$1] { best[$1] = $2; row[$1] = "| " $1 " | " $2 " | " $3 " | " $4 " | " $5 }
    { if (seen[$1]++) { all[$1] = all[$1] " / " $2; cpu[$1] = cpu[$1] " / " $6 } else { all[$1] = $2; cpu[$1] = $6 } }
    END { for (i = 1; i <= n; i++) print row[order[i]] " | " all[order[i]] " | " cpu[order[i]] " |" }
  ' "$work/results"
}
