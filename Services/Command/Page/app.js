// Hailstorm's command centre: signs an administrator in, opens the gateway's WebSocket and renders each
// snapshot the command service pushes there (every 2 s while the page asks for them); the levers call the
// command centre's API, which acts with the operator's token and writes the audit log.
"use strict";

const tokenKey = "hailstorm.command.token";
const api = "/api/v1";
let token = sessionStorage.getItem(tokenKey);
let socket = null;
let leaseTimer = null;
let campaignTimer = null;
let map = null;
let driversLayer = null;
let hexLayer = null;
let surgeLayer = null;
let waitingLayer = null;
let flaggedLayer = null;
let hexTimer = null;
let framed = false;
const charts = {};

const $ = (selector) => document.querySelector(selector);

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

async function call(method, path, body, idempotencyKey) {
  const headers = { "Authorization": "Bearer " + token };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
  const response = await fetch(api + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 401) { signOut("Your session ended: sign in again."); throw new Error("signed out"); }
  const text = await response.text();
  const json = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error((json && (json.detail || json.title)) || ("HTTP " + response.status));
  return json;
}

function role(accessToken) {
  try {
    const payload = accessToken.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload)).role;
  } catch (error) {
    return null;
  }
}

function time(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleTimeString() : "";
}

function money(cents) {
  return (cents / 100).toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

// Signing in and out.

async function signIn(event) {
  event.preventDefault();
  $("#signin-error").textContent = "";
  try {
    const response = await fetch(api + "/auth/login", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ phone: $("#signin-phone").value, password: $("#signin-password").value }),
    });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.detail || answer.title || "Sign-in refused");
    if (role(answer.accessToken) !== "admin") throw new Error("This account is not an administrator's.");
    token = answer.accessToken;
    sessionStorage.setItem(tokenKey, token);
    start();
  } catch (error) {
    $("#signin-error").textContent = error.message;
  }
}

function signOut(message) {
  token = null;
  sessionStorage.removeItem(tokenKey);
  if (socket) { socket.onclose = null; socket.close(); socket = null; }
  clearInterval(leaseTimer);
  clearInterval(campaignTimer);
  clearInterval(hexTimer);
  $("#centre").hidden = true;
  $("#signout").hidden = true;
  $("#signin").hidden = false;
  $("#signin-error").textContent = message || "";
  setLive(false, "not connected");
}

// The live feed: a WebSocket ticket, the socket, and the lease that keeps snapshots coming.

function setLive(on, text) {
  const live = $("#live");
  live.className = "live " + (on ? "on" : "off");
  live.textContent = text;
}

async function renewLease() {
  try { await call("POST", "/admin/command/live"); } catch (error) { setLive(false, "feed refused: " + error.message); }
}

async function connect() {
  if (!token) return;
  try {
    const ticket = await call("POST", "/ws/ticket");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(scheme + "//" + location.host + "/ws?ticket=" + encodeURIComponent(ticket.ticket));
    socket.onopen = () => { setLive(true, "live"); renewLease(); };
    socket.onmessage = (message) => {
      const data = JSON.parse(message.data);
      if (data.type === "command.snapshot") render(data);
    };
    socket.onclose = (event) => {
      setLive(false, "reconnecting" + (event.reason ? " (" + event.reason + ")" : ""));
      socket = null;
      if (token) setTimeout(connect, 2000);
    };
  } catch (error) {
    setLive(false, "reconnecting");
    if (token) setTimeout(connect, 2000);
  }
}

function start() {
  $("#signin").hidden = true;
  $("#centre").hidden = false;
  $("#signout").hidden = false;
  setupMap();
  connect();
  leaseTimer = setInterval(renewLease, 10000);
  loadCampaigns();
  loadCouponCampaigns();
  campaignTimer = setInterval(() => { loadCampaigns(); loadCouponCampaigns(); }, 10000);
  loadHexes();
  hexTimer = setInterval(loadHexes, 15000);
}

// Rendering a snapshot.

function render(snapshot) {
  renderKPIs(snapshot.kpis);
  renderDrivers(snapshot.drivers);
  renderSurge(snapshot.surge);
  renderWaiting(snapshot.waiting);
  renderFlagged(snapshot.flagged);
  renderBoard(snapshot.board, snapshot.unavailable.board);
  renderAlerts(snapshot.alerts);
  renderAudit(snapshot.audit);
  setLive(true, "live · " + time(snapshot.at));
  document.body.dataset.snapshotAt = String(snapshot.at);
}

function setKPI(name, text, raw) {
  const node = document.querySelector('[data-kpi="' + name + '"]');
  node.textContent = text;
  node.dataset.value = raw === undefined || raw === null ? "" : String(raw);
}

function renderKPIs(kpis) {
  if (!kpis) return;
  const total = kpis.total;
  const last = kpis.steps.length ? kpis.steps[kpis.steps.length - 1].figures : null;
  setKPI("orders", total.orders, total.orders);
  setKPI("ordersLastMinute", last ? last.orders : 0, last ? last.orders : 0);
  setKPI("matchRate", total.matchRate == null ? "–" : Math.round(total.matchRate * 100) + " %", total.matchRate);
  const assign = total.timeToAssign;
  setKPI("timeToAssign", assign ? assign.p50.toFixed(1) + " s" : "–", assign ? assign.p50 : null);
  setKPI("cancellations", total.cancellations.total, total.cancellations.total);
  setKPI("gmv", money(total.gmvCents), total.gmvCents);
  setKPI("couponClaims", total.couponClaims, total.couponClaims);
  // Over the last complete minute (the newest step is the minute under way).
  const full = kpis.steps.length > 1 ? kpis.steps[kpis.steps.length - 2].figures : null;
  const claimsPerSecond = full ? full.couponClaims / 60 : 0;
  setKPI("claimsPerSecond", claimsPerSecond.toFixed(claimsPerSecond < 10 ? 1 : 0), claimsPerSecond);
  setKPI("adSpend", money(total.adSpendMillicents / 1000), total.adSpendMillicents);
  const labels = kpis.steps.map((step) => new Date(step.start * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
  chart("orders", labels, [
    { label: "orders", data: kpis.steps.map((s) => s.figures.orders), borderColor: "#58a6ff" },
    { label: "assigned", data: kpis.steps.map((s) => s.figures.assigned), borderColor: "#3fb950" },
    { label: "cancelled", data: kpis.steps.map((s) => s.figures.cancellations.total), borderColor: "#f85149" },
  ]);
  chart("claims", labels, [
    { label: "coupon claims", data: kpis.steps.map((s) => s.figures.couponClaims), borderColor: "#d29922" },
    { label: "ad impressions", data: kpis.steps.map((s) => s.figures.adImpressions), borderColor: "#a371f7" },
  ]);
}

function chart(name, labels, datasets) {
  if (typeof Chart === "undefined") return;
  for (const set of datasets) { set.pointRadius = 0; set.borderWidth = 2; set.tension = 0.2; }
  if (!charts[name]) {
    charts[name] = new Chart(document.getElementById("chart-" + name), {
      type: "line", data: { labels, datasets },
      options: { animation: false, responsive: true, plugins: { legend: { labels: { color: "#e6edf3" } } },
        scales: { x: { ticks: { color: "#8b98a5", maxTicksLimit: 8 } }, y: { beginAtZero: true, ticks: { color: "#8b98a5" } } } },
    });
  } else {
    charts[name].data.labels = labels;
    charts[name].data.datasets.forEach((set, index) => { set.data = datasets[index].data; });
    charts[name].update();
  }
}

function setupMap() {
  if (map || typeof L === "undefined") return;
  // No tiles (nothing is fetched from outside): the drivers on a blank plane, in their real coordinates.
  map = L.map("map", { attributionControl: false, zoomSnap: 0.25 }).setView([52.52, 13.405], 12);
  hexLayer = L.layerGroup().addTo(map);
  surgeLayer = L.layerGroup().addTo(map);
  flaggedLayer = L.layerGroup().addTo(map);
  waitingLayer = L.layerGroup().addTo(map);
  driversLayer = L.layerGroup().addTo(map);
}

// Analytics' hexagonal cells of the last hour, shaded by their value (the busiest cell darkest).
async function loadHexes() {
  if (!hexLayer) return;
  const kind = $("#hex-kind").value;
  if (!kind) { hexLayer.clearLayers(); document.body.dataset.hexes = "0"; return; }
  try {
    const cells = await call("GET", "/admin/analytics/heatmap?kind=" + encodeURIComponent(kind));
    const highest = Math.max(1e-9, ...cells.features.map((f) => f.properties.value));
    hexLayer.clearLayers();
    L.geoJSON(cells, {
      style: (feature) => ({
        className: "hex-cell", color: "#58a6ff", weight: 1, opacity: 0.5,
        fillColor: kind === "supply" ? "#3fb950" : "#f0883e", fillOpacity: 0.15 + 0.6 * (feature.properties.value / highest),
      }),
      onEachFeature: (feature, layer) => layer.bindTooltip(feature.properties.cell + ": " + feature.properties.value),
    }).addTo(hexLayer);
    document.body.dataset.hexes = String(cells.features.length);
    if (!framed && cells.features.length) {
      map.fitBounds(L.geoJSON(cells).getBounds().pad(0.2), { maxZoom: 15 });
      framed = true;
    }
  } catch (error) {
    // The cells keep what they showed; the next refresh tries again.
  }
}

function renderDrivers(drivers) {
  if (!drivers) return;
  const placed = drivers.filter((d) => d.lat != null && d.lon != null);
  $("#drivers-count").textContent = drivers.length + " drivers online";
  $("#drivers-count").dataset.count = String(drivers.length);
  if (!driversLayer) return;
  driversLayer.clearLayers();
  for (const driver of placed) {
    L.circleMarker([driver.lat, driver.lon], {
      radius: 6, weight: 1, color: "#0b1016", fillOpacity: 0.9,
      fillColor: driver.state === "busy" ? "#d29922" : driver.state === "suspended" ? "#8b98a5" : "#3fb950",
      className: "driver-marker driver-" + driver.state,
    }).bindTooltip(driver.driverID + " · " + driver.state).addTo(driversLayer);
  }
  if (placed.length && !framed) {
    map.fitBounds(L.latLngBounds(placed.map((d) => [d.lat, d.lon])).pad(0.3), { maxZoom: 15 });
    framed = true;
  }
}

function mapCount(name, count) {
  document.body.dataset[name] = String(count);
  const counts = ["waiting", "surgeCells", "flagged"].map((key) => document.body.dataset[key]);
  $("#map-counts").textContent = (counts[0] || 0) + " waiting · " + (counts[1] || 0) + " surge cells · " + (counts[2] || 0) + " flagged trips";
}

// Cells with a surge factor of their own (order's), as boxes labelled with the factor.
function renderSurge(surge) {
  if (!surge || !surgeLayer) return;
  surgeLayer.clearLayers();
  for (const cell of surge.cells) {
    L.rectangle([[cell.south, cell.west], [cell.north, cell.east]], {
      className: "surge-cell", color: "#f85149", weight: 1, fillColor: "#f85149", fillOpacity: Math.min(0.6, 0.1 * cell.factor),
    }).bindTooltip("surge ×" + cell.factor.toFixed(2) + " · cell " + cell.cell).addTo(surgeLayer);
  }
  mapCount("surgeCells", surge.cells.length);
}

// Orders waiting for a driver (matching's), at their pickups.
function renderWaiting(waiting) {
  if (!waiting || !waitingLayer) return;
  waitingLayer.clearLayers();
  const now = Date.now() / 1000;
  for (const order of waiting.orders) {
    L.circleMarker([order.pickup.lat, order.pickup.lon], {
      radius: 4, weight: 2, color: "#f0f6fc", fillColor: order.state === "offered" ? "#a371f7" : "#f0f6fc", fillOpacity: 0.9,
      className: "waiting-order",
    }).bindTooltip("order " + order.orderID + " · " + order.state + " · waiting " + Math.round(now - order.createdAt) + " s").addTo(waitingLayer);
  }
  mapCount("waiting", waiting.total);
}

// Trips analytics flagged in the last hour, along the line their driver drove.
function renderFlagged(trips) {
  if (!trips || !flaggedLayer) return;
  flaggedLayer.clearLayers();
  for (const trip of trips) {
    if (trip.path.length < 2) continue;
    L.polyline(trip.path, { className: "flagged-trip", color: "#db61a2", weight: 3, dashArray: "6 4", opacity: 0.9 })
      .bindTooltip("trip " + trip.orderID + " · " + trip.flags.join(", ") + (trip.driverID ? " · driver " + trip.driverID : ""))
      .addTo(flaggedLayer);
  }
  mapCount("flagged", trips.length);
}

function renderBoard(board, problem) {
  const body = $("#board tbody");
  if (!board) { $("#board-source").textContent = problem || ""; return; }
  $("#board-source").textContent = "from " + board.prometheus;
  body.replaceChildren(...board.instances.map((i) => el("tr", { class: i.health, "data-instance": i.instance, "data-service": i.service, "data-health": i.health },
    el("td", {}, i.service), el("td", {}, i.instance), el("td", { class: "health" }, i.health),
    el("td", {}, i.requestsPerSecond == null ? "–" : i.requestsPerSecond.toFixed(1)),
    el("td", {}, i.errorsPerSecond == null ? "–" : i.errorsPerSecond.toFixed(2)),
    el("td", {}, i.p99Seconds == null ? "–" : (i.p99Seconds * 1000).toFixed(0) + " ms"),
    el("td", {}, i.restarts == null ? "–" : i.restarts))));
}

function renderAlerts(alerts) {
  $("#alerts tbody").replaceChildren(...alerts.map((a) => el("tr", { class: a.state, "data-alert": a.id, "data-name": a.name, "data-instance": a.labels.instance || "", "data-state": a.state },
    el("td", { class: "state" }, a.state), el("td", { title: a.summary }, a.name, el("br"), el("small", {}, a.summary)),
    el("td", {}, a.labels.instance || a.labels.stream || a.labels.campaign || a.labels.job || a.source),
    el("td", {}, time(a.firedAt)), el("td", {}, time(a.resolvedAt)),
    el("td", {}, a.acknowledgedAt ? "acknowledged by " + a.acknowledgedBy
      : el("button", { class: "acknowledge", onclick: () => lever("POST", "/admin/command/alerts/" + a.id + "/acknowledge") }, "Acknowledge")))));
}

function renderAudit(entries) {
  const changes = (before, after) => Object.keys(Object.assign({}, before, after)).sort()
    .map((key) => key + ": " + (before[key] ?? "–") + " → " + (after[key] ?? "–")).join("; ");
  $("#audit tbody").replaceChildren(...entries.map((e) => el("tr", { "data-action": e.action, "data-target": e.target },
    el("td", {}, time(e.at)), el("td", {}, e.actor), el("td", {}, e.action), el("td", {}, e.target), el("td", {}, changes(e.before, e.after)))));
}

// Following one request through the services.

async function showTrace(event) {
  event.preventDefault();
  const id = $("#trace-id").value.trim();
  try {
    const trace = await call("GET", "/admin/command/traces/" + encodeURIComponent(id));
    const precise = (seconds) => new Date(seconds * 1000).toISOString().slice(11, 23);
    $("#trace tbody").replaceChildren(...trace.lines.map((line) => el("tr", { "data-service": line.service },
      el("td", {}, precise(line.at)), el("td", {}, line.service), el("td", {}, line.instance),
      el("td", {}, line.method + " " + line.path), el("td", {}, line.status), el("td", {}, line.milliseconds.toFixed(1) + " ms"))));
    $("#trace-result").textContent = trace.lines.length ? trace.lines.length + " lines" : "No lines kept for " + id + " (only sampled requests leave them, for an hour).";
  } catch (error) {
    $("#trace-result").textContent = "Refused: " + error.message;
  }
}

// The levers.

async function lever(method, path, body) {
  try {
    const entry = await call(method, path, body, crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random());
    $("#lever-result").textContent = entry.action ? "Done: " + entry.action + " on " + entry.target : "Done.";
    loadCampaigns();
    loadCouponCampaigns();
  } catch (error) {
    $("#lever-result").textContent = "Refused: " + error.message;
  }
}

async function loadCampaigns() {
  try {
    const list = await call("GET", "/admin/ads/campaigns");
    $("#campaigns tbody").replaceChildren(...list.campaigns.map((c) => el("tr", { "data-campaign": c.id, "data-state": c.state },
      el("td", {}, c.settings.name), el("td", {}, c.settings.advertiser), el("td", { class: "state" }, c.state),
      el("td", { class: "spent" }, c.spentTodayMillicents == null ? "–"
        : money(c.spentTodayMillicents / 1000) + " of " + money(c.settings.dailyBudgetCents)
          + " (" + Math.round(100 * c.spentTodayMillicents / 1000 / Math.max(1, c.settings.dailyBudgetCents)) + " %)"),
      el("td", { class: "pass-rate" }, c.passRate == null ? "–" : Math.round(c.passRate * 100) + " %"),
      el("td", {}, c.state === "active" ? el("button", { class: "pause", onclick: () => lever("POST", "/admin/command/levers/ad-campaigns/" + c.id + "/pause") }, "Pause")
        : c.state === "paused" ? el("button", { class: "resume", onclick: () => lever("POST", "/admin/command/levers/ad-campaigns/" + c.id + "/resume") }, "Resume")
        : ""))));
  } catch (error) {
    // The table keeps what it showed; the next refresh tries again.
  }
}

async function loadCouponCampaigns() {
  try {
    const list = await call("GET", "/coupons/campaigns");
    $("#coupon-campaigns tbody").replaceChildren(...list.campaigns.map((c) => el("tr", { "data-coupon-campaign": c.id, "data-paused": String(c.paused) },
      el("td", {}, c.name, el("br"), el("small", {}, c.city)), el("td", {}, c.remaining == null ? "–" : c.remaining + " of " + c.stock),
      el("td", { class: "state" }, c.paused ? "paused" : "open"),
      el("td", {}, el("button", { class: c.paused ? "resume" : "pause",
        onclick: () => lever("POST", "/admin/command/levers/coupon-campaigns/" + encodeURIComponent(c.id) + (c.paused ? "/resume" : "/pause")) },
        c.paused ? "Resume" : "Pause")))));
  } catch (error) {
    // The table keeps what it showed; the next refresh tries again.
  }
}

function driverLever(action) {
  const id = $("#driver-id").value.trim();
  if (!id) { $("#lever-result").textContent = "Refused: give a driver id"; return; }
  lever("POST", "/admin/command/levers/drivers/" + encodeURIComponent(id) + "/" + action);
}

$("#signin-form").addEventListener("submit", signIn);
$("#driver-form").addEventListener("submit", (event) => { event.preventDefault(); driverLever("suspend"); });
$("#driver-restore").addEventListener("click", () => driverLever("restore"));
$("#signout").addEventListener("click", () => signOut());
$("#surge-form").addEventListener("submit", (event) => {
  event.preventDefault();
  lever("PUT", "/admin/command/levers/surge", {
    at: { lat: Number($("#surge-lat").value), lon: Number($("#surge-lon").value) }, factor: Number($("#surge-factor").value),
  });
});
$("#broadcast-form").addEventListener("submit", (event) => {
  event.preventDefault();
  lever("POST", "/admin/command/levers/broadcasts", {
    at: { lat: Number($("#broadcast-lat").value), lon: Number($("#broadcast-lon").value) },
    radiusKm: Number($("#broadcast-radius").value), text: $("#broadcast-text").value,
  });
});
$("#settle").addEventListener("click", () => lever("POST", "/admin/command/levers/settlement-batches"));
$("#trace-form").addEventListener("submit", showTrace);
$("#hex-kind").addEventListener("change", loadHexes);
if (token && role(token) === "admin") start(); else signOut();
