// The dashboard: one event stream (overview + batched requests), a log stream per chosen
// service, and a few reads. Actions POST JSON with the page's token; the browser adds Origin.
"use strict";

const token = document.body.dataset.token;
const maxRequests = 1000;
const requests = [];
let overview = null;
let logSource = null;

function $(selector) { return document.querySelector(selector); }

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) tr.appendChild(cell instanceof Node ? cell : el("td", cell));
  return tr;
}

async function act(action, body) {
  const response = await fetch("/api/" + action, {
    method: "POST",
    headers: { "content-type": "application/json", "x-stack-token": token },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) alert(answer.error || response.statusText);
  return answer;
}

function button(label, onClick) {
  const node = el("button", label);
  node.addEventListener("click", onClick);
  return node;
}

function uptime(createdMs) {
  const seconds = Math.max(0, Math.round((Date.now() - createdMs) / 1000));
  if (seconds < 60) return seconds + "s";
  if (seconds < 3600) return Math.floor(seconds / 60) + "m";
  return Math.floor(seconds / 3600) + "h" + Math.floor((seconds % 3600) / 60) + "m";
}

function drawDeployments() {
  const body = $("#deployments tbody");
  body.replaceChildren();
  for (const d of overview.deployments) {
    const name = el("td", d.id, d.current ? "live" : "");
    if (d.current) name.title = "live deployment of " + d.service;
    const instances = el("td");
    instances.className = "instances";
    for (const i of d.instances) {
      const item = el("span", `#${i.number} ${i.state} :${i.port ?? "-"} ↻${i.restarts} `, "instance");
      item.appendChild(button("restart", () => act("restart", { deployment: d.id, instance: i.number })));
      instances.appendChild(item);
    }
    if (!d.instances.length) instances.textContent = `${d.ready}/${d.wanted}`;
    const actions = el("td");
    // A kept deployment that does not run (STOPPED) can be rolled back to or removed; one
    // being built, or waiting for what it depends on, has no actions yet.
    const running = !["STOPPED", "BUILDING", "WAITING"].includes(d.state);
    if (running) {
      actions.append(
        button("+1", () => act("scale", { service: d.id, instances: d.wanted + 1 })),
        button("−1", () => act("scale", { service: d.id, instances: Math.max(0, d.wanted - 1) })),
      );
      // Every instance, one at a time (`stack restart <deployment>`).
      if (d.instances.length) actions.append(button("restart all", () => act("restart", { deployment: d.id })));
    }
    if (!d.current && d.state !== "BUILDING") {
      actions.append(
        button("rollback", () => act("rollback", { service: d.service, deployment: d.id })),
        button("remove", () => act("remove", { deployment: d.id })),
      );
    }
    const state = el("td", d.waiting_for ? `${d.state} for ${d.waiting_for}` : d.state, d.state);
    body.appendChild(row([name, state, instances, uptime(d.created_ms), actions]));
  }
  const select = $("#log-target");
  const chosen = select.value;
  const services = [...new Set(overview.deployments.map((d) => d.service))];
  const targets = services.concat(overview.deployments.map((d) => d.id));
  if (select.options.length !== targets.length + 1) {
    select.replaceChildren(el("option", "— logs of —"));
    for (const target of targets) select.appendChild(el("option", target));
    select.value = chosen || select.options[0].value;
  }
}

function drawAliases() {
  const box = $("#aliases");
  box.replaceChildren();
  for (const alias of overview.aliases) {
    box.appendChild(el("div", `${alias.host} → ${alias.source}`, "live"));
    const table = el("table");
    alias.rules.forEach((rule, index) => {
      table.appendChild(row([String(index + 1), rule.pathname, rule.method, rule.dest,
        el("td", rule.hits + " hits", "hits")]));
    });
    box.appendChild(table);
  }
  if (!$("#explain-host").value && overview.aliases.length) {
    $("#explain-host").value = overview.aliases[0].host;
  }
}

function drawRequests(added) {
  const body = $("#requests tbody");
  for (const r of added) {
    const tr = row([r.time.slice(11, 23), r.method, r.host, r.path,
      el("td", r.status, "s" + String(r.status)[0]), r.duration_ms.toFixed(1), r.bytes_in,
      r.bytes_out, r.rule ?? "-", r.deployment ?? "-", r.instance ?? "-", r.session ?? "-"]);
    tr.addEventListener("click", async () => {
      for (const selected of body.querySelectorAll(".selected")) selected.classList.remove("selected");
      tr.classList.add("selected");
      const response = await fetch("/api/requests/" + r.seq);
      const full = await response.json();
      $("#request-headers").textContent = !response.ok ? full.error
        : `${full.method} ${full.path}\n` + full.headers.map(([name, value]) => `${name}: ${value}`).join("\n");
    });
    body.insertBefore(tr, body.firstChild);
  }
  while (body.children.length > maxRequests) body.removeChild(body.lastChild);
  $("#request-count").textContent = `(${body.children.length})`;
}

function connect() {
  const events = new EventSource("/api/events");
  events.addEventListener("open", () => { $("#status").textContent = "live"; });
  events.addEventListener("error", () => { $("#status").textContent = "reconnecting…"; });
  events.addEventListener("overview", (event) => {
    overview = JSON.parse(event.data);
    drawDeployments();
    drawAliases();
    if (!overview.request_log) $("#request-count").textContent = "(the request log is off)";
  });
  events.addEventListener("requests", (event) => {
    const added = JSON.parse(event.data);
    requests.push(...added);
    requests.splice(0, Math.max(0, requests.length - maxRequests));
    drawRequests(added);
  });
}

function followLogs() {
  if (logSource) logSource.close();
  $("#logs").replaceChildren();
  const target = $("#log-target").value;
  if (!target || target.startsWith("—")) return;
  logSource = new EventSource("/api/logs?target=" + encodeURIComponent(target));
  logSource.addEventListener("lines", (event) => {
    const pre = $("#logs");
    for (const line of JSON.parse(event.data)) {
      const node = el("div", `${line.source} | ${line.text}`, "line");
      pre.appendChild(node);
    }
    while (pre.children.length > 2000) pre.removeChild(pre.firstChild);
    filterLogs();
    pre.scrollTop = pre.scrollHeight;
  });
}

function filterLogs() {
  const needle = $("#log-filter").value.toLowerCase();
  for (const line of $("#logs").children) {
    line.hidden = needle !== "" && !line.textContent.toLowerCase().includes(needle);
  }
}

async function loadSessions() {
  const body = $("#sessions tbody");
  const response = await fetch("/api/sessions");
  const sessions = await response.json();
  body.replaceChildren();
  if (!response.ok) { body.appendChild(row([sessions.error || "unavailable"])); return; }
  for (const s of sessions) {
    const data = el("td", JSON.stringify(s.data), "data");
    body.appendChild(row([s.id, s.ttl ?? "-", data,
      el("td").appendChild(button("delete", async () => {
        await act("delete-session", { session: s.id });
        loadSessions();
      })).parentNode]));
  }
}

async function loadEnv() {
  const response = await fetch("/api/env");
  if (!response.ok) return;
  const answer = await response.json();
  const body = $("#env tbody");
  body.replaceChildren();
  for (const [key, value] of answer.env) body.appendChild(row([key, el("td", value, "data")]));
  // Each service's own `env` from stack.toml, over the shared one.
  for (const [service, env] of Object.entries(answer.service_env ?? {})) {
    for (const [key, value] of env) body.appendChild(row([`${service}: ${key}`, el("td", value, "data")]));
  }
  filterEnv();
}

function filterEnv() {
  const needle = $("#env-filter").value.toLowerCase();
  for (const tr of $("#env tbody").children) {
    tr.hidden = needle !== "" && !tr.textContent.toLowerCase().includes(needle);
  }
}

async function explain(event) {
  event.preventDefault();
  const query = new URLSearchParams({
    host: $("#explain-host").value, method: $("#explain-method").value, path: $("#explain-path").value,
  });
  const response = await fetch("/api/route?" + query);
  const answer = await response.json();
  $("#explain-answer").textContent = !response.ok ? answer.error
    : answer.rule ? `rule ${answer.rule} (${answer.pathname} ${answer.method}) → ${answer.dest}`
    : `${answer.path}: no rule matches: ${answer.status}`;
}

$("#log-target").addEventListener("change", followLogs);
$("#log-filter").addEventListener("input", filterLogs);
$("#env-filter").addEventListener("input", filterEnv);
$("#sessions-refresh").addEventListener("click", loadSessions);
$("#explain").addEventListener("submit", explain);
connect();
loadSessions();
loadEnv();
