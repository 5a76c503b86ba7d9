/**
 * The live service graph the controller serves (default http://<metrics address>/graph): one
 * HTML page, its script inline, no build step and nothing fetched from elsewhere. Nodes are
 * workloads, edges the traffic of the last window (rps, error rate, p99, a lock for mTLS, a
 * mark for denials); clicking an edge (or opening the page with #edge=SOURCE>DESTINATION>PROTOCOL)
 * shows its numbers. The page polls `<path>/traffic.json` (TrafficWindow.snapshot) every 2 s.
 *
 * It shows what the agents' metrics endpoints show already (workloads, rates, codes), so it is
 * served as openly as /metrics; `--graph off` turns it off.
 */
import type http from 'node:http';
import type { TrafficResponse } from '../api/config-wire.js';

export const DEFAULT_GRAPH_PATH = '/graph';

/** Serves the page and its data under `path`; returns false for any other URL. */
export function graphHandler(path: string, traffic: () => TrafficResponse): (req: http.IncomingMessage, res: http.ServerResponse) => boolean {
  const page = graphPage(`${path}/traffic.json`);
  return (req, res) => {
    const url = (req.url ?? '').split('?')[0];
    if (req.method !== 'GET') return false;
    if (url === path || url === `${path}/`) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', 'content-security-policy': "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'" });
      res.end(page);
      return true;
    }
    if (url === `${path}/traffic.json`) {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify(traffic()));
      return true;
    }
    return false;
  };
}

/** The page, reading its data from `dataUrl`. */
export function graphPage(dataUrl: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>skein — service graph</title>
<style>
  body { font: 13px/1.4 system-ui, sans-serif; margin: 0; color: #1d2733; background: #f6f8fa; }
  header { padding: 10px 16px; background: #1d2733; color: #fff; display: flex; gap: 16px; align-items: baseline; }
  header h1 { font-size: 16px; margin: 0; }
  header span { opacity: .8; }
  main { display: flex; gap: 12px; padding: 12px; align-items: flex-start; }
  #graph { flex: 1; background: #fff; border: 1px solid #d0d7de; border-radius: 6px; overflow: auto; min-height: 300px; }
  aside { width: 300px; background: #fff; border: 1px solid #d0d7de; border-radius: 6px; padding: 10px 12px; }
  aside h2 { font-size: 14px; margin: 0 0 8px; }
  table { border-collapse: collapse; width: 100%; }
  td, th { padding: 2px 6px 2px 0; text-align: left; vertical-align: top; }
  th { color: #57606a; font-weight: 500; }
  #workloads { margin: 0 12px 12px; background: #fff; border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 12px; }
  #workloads td, #workloads th { padding-right: 18px; }
  .node rect { fill: #eef4ff; stroke: #4f7ccf; stroke-width: 1.5; rx: 6; }
  .node text { font-size: 12px; fill: #1d2733; }
  .node .sub { fill: #57606a; font-size: 11px; }
  .edge path.line { fill: none; stroke-linecap: round; cursor: pointer; }
  .edge path.hit { fill: none; stroke: transparent; stroke-width: 14; cursor: pointer; }
  .edge .label rect { fill: #fff; stroke: #d0d7de; rx: 3; }
  .edge .label text { font-size: 11px; }
  .edge.selected path.line { stroke: #0969da !important; }
  .denied { fill: #cf222e; }
  .empty { padding: 24px; color: #57606a; }
</style>
</head>
<body>
<header><h1>skein service graph</h1><span id="summary">loading…</span></header>
<main>
  <div id="graph"><div class="empty">waiting for traffic…</div></div>
  <aside id="details"><h2>Edge</h2><p id="hint">Click an edge to see its numbers.</p><table id="edge-table"></table></aside>
</main>
<section id="workloads"></section>
<script>
"use strict";
const DATA_URL = ${JSON.stringify(dataUrl)};
const NS = "http://www.w3.org/2000/svg";
let selected = decodeURIComponent((location.hash.match(/edge=([^&]+)/) || [])[1] || "");
let last = null;

const el = (name, attrs, text) => {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
};
const edgeId = (e) => e.source + ">" + e.destination + ">" + e.protocol;
const pct = (x) => (x * 100).toFixed(x === 1 || x === 0 ? 0 : 1) + "%";
const ms = (x) => (x < 10 ? x.toFixed(2) : x < 100 ? x.toFixed(1) : x.toFixed(0)) + " ms";
const rps = (x) => (x < 10 ? x.toFixed(2) : x.toFixed(1)) + " rps";
const bytes = (n) => (n < 1024 ? n + " B" : n < 1048576 ? (n / 1024).toFixed(1) + " KiB" : (n / 1048576).toFixed(1) + " MiB");
const colour = (e) => (e.requests === 0 ? "#8c959f" : 1 - e.success_rate < 0.01 ? "#2da44e" : 1 - e.success_rate < 0.05 ? "#bf8700" : "#cf222e");

function layout(data) {
  const names = new Set();
  for (const e of data.edges) { names.add(e.source); names.add(e.destination); }
  const depth = new Map([...names].map((n) => [n, 0]));
  // Longest path from a node with no inbound edge, bounded so cycles end.
  for (let round = 0; round < names.size; round++) {
    let moved = false;
    for (const e of data.edges) {
      if (e.source === e.destination) continue;
      const d = depth.get(e.source) + 1;
      if (d > depth.get(e.destination) && d < names.size) { depth.set(e.destination, d); moved = true; }
    }
    if (!moved) break;
  }
  const columns = [];
  for (const n of [...names].sort()) {
    const d = depth.get(n);
    (columns[d] = columns[d] || []).push(n);
  }
  const pos = new Map();
  const W = 190, H = 56, DX = 580, DY = 130;
  columns.forEach((col, i) => col.forEach((n, j) => pos.set(n, { x: 30 + i * DX, y: 40 + j * DY, w: W, h: H })));
  const width = 60 + Math.max(1, columns.length) * DX - (DX - W);
  const height = 80 + Math.max(1, ...columns.map((c) => c.length)) * DY;
  return { pos, width, height };
}

function lock(x, y) {
  const g = el("g", { class: "lock", transform: "translate(" + x + "," + y + ")" });
  g.appendChild(el("title", {}, "mutual TLS"));
  g.appendChild(el("path", { d: "M2.5 5 V3.5 a2.5 2.5 0 0 1 5 0 V5", fill: "none", stroke: "#2da44e", "stroke-width": 1.4 }));
  g.appendChild(el("rect", { x: 1, y: 5, width: 8, height: 6, rx: 1, fill: "#2da44e" }));
  return g;
}

function render(data) {
  last = data;
  const box = document.getElementById("graph");
  const total = data.edges.reduce((n, e) => n + e.rps, 0);
  document.getElementById("summary").textContent =
    data.edges.length + " edges, " + data.workloads.length + " workloads, " + total.toFixed(2) + " rps over the last " + data.window_seconds.toFixed(0) + " s" +
    " (agents reporting: " + (data.nodes.join(", ") || "none") + ")" + (data.dropped ? ", " + data.dropped + " records over a cap not counted" : "");
  if (data.edges.length === 0) {
    box.innerHTML = '<div class="empty">no traffic in the window</div>';
  } else {
    const { pos, width, height } = layout(data);
    const svg = el("svg", { width, height, viewBox: "0 0 " + width + " " + height, id: "graph-svg" });
    const defs = el("defs");
    const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
    marker.appendChild(el("path", { d: "M0 0 L10 5 L0 10 z", fill: "#57606a" }));
    defs.appendChild(marker);
    svg.appendChild(defs);
    // Nodes first: the edges' labels stay readable on top.
    for (const [name, p] of pos) {
      const w = data.workloads.find((x) => x.name === name);
      const g = el("g", { class: "node", "data-name": name, transform: "translate(" + p.x + "," + p.y + ")" });
      g.appendChild(el("rect", { width: p.w, height: p.h }));
      g.appendChild(el("text", { x: 10, y: 22 }, name));
      const sub = w && w.requests ? "in " + rps(w.rps) + " · " + pct(w.success_rate) + " ok" : w && w.outbound_rps ? "out " + rps(w.outbound_rps) : "";
      g.appendChild(el("text", { class: "sub", x: 10, y: 40 }, sub));
      svg.appendChild(g);
    }
    // Edges of the same pair (several protocols) fan out.
    const pairs = new Map();
    for (const e of data.edges) { const k = e.source + ">" + e.destination; pairs.set(k, (pairs.get(k) || []).concat([e])); }
    for (const [, list] of pairs) list.forEach((e, i) => {
      const a = pos.get(e.source), b = pos.get(e.destination);
      const spread = (i - (list.length - 1) / 2) * 46;
      let d, lx, ly;
      if (e.source === e.destination) {
        d = "M" + (a.x + a.w - 30) + " " + a.y + " C" + (a.x + a.w + 40) + " " + (a.y - 70) + " " + (a.x + a.w + 60) + " " + (a.y + 10) + " " + (a.x + a.w) + " " + (a.y + 16);
        lx = a.x + a.w + 50; ly = a.y - 40 + spread;
      } else {
        const forward = b.x > a.x;
        const x1 = forward ? a.x + a.w : a.x + a.w / 2, y1 = forward ? a.y + a.h / 2 : a.y + a.h;
        const x2 = forward ? b.x : b.x + b.w / 2, y2 = forward ? b.y + b.h / 2 : b.y + b.h;
        const mx = (x1 + x2) / 2, my = (y1 + y2) / 2 + spread + (forward ? 0 : 60);
        d = "M" + x1 + " " + y1 + " Q" + mx + " " + (2 * my - (y1 + y2) / 2) + " " + x2 + " " + y2;
        lx = mx; ly = my;
      }
      const id = edgeId(e);
      const g = el("g", {
        class: "edge" + (id === selected ? " selected" : ""), "data-id": id, "data-source": e.source, "data-destination": e.destination,
        "data-protocol": e.protocol, "data-requests": e.requests, "data-errors": e.errors, "data-denials": e.denials, "data-rps": e.rps,
        "data-p99": e.p99_ms, "data-mtls": e.mtls,
      });
      g.appendChild(el("path", { class: "line", d, stroke: colour(e), "stroke-width": Math.min(6, 1.5 + Math.log10(1 + e.rps) * 2), "marker-end": "url(#arrow)" }));
      g.appendChild(el("path", { class: "hit", d }));
      const text = e.protocol.toUpperCase() + "  " + rps(e.rps) + " · " + pct(1 - e.success_rate) + " err · p99 " + ms(e.p99_ms);
      const label = el("g", { class: "label", transform: "translate(" + lx + "," + ly + ")" });
      const tw = text.length * 6.1 + (e.mtls ? 16 : 0) + 10;
      label.appendChild(el("rect", { x: -tw / 2, y: -10, width: tw, height: e.denials ? 34 : 20 }));
      if (e.mtls) label.appendChild(lock(-tw / 2 + 5, -6));
      label.appendChild(el("text", { class: "numbers", x: -tw / 2 + (e.mtls ? 19 : 5), y: 4 }, text));
      if (e.denials) {
        label.appendChild(el("circle", { class: "denied", cx: -tw / 2 + 10, cy: 17, r: 5 }));
        label.appendChild(el("rect", { x: -tw / 2 + 7, y: 16, width: 6, height: 2, fill: "#fff", stroke: "none" }));
        label.appendChild(el("text", { class: "denials", x: -tw / 2 + 19, y: 21, fill: "#cf222e" }, e.denials + " denied by policy"));
      }
      g.appendChild(label);
      g.addEventListener("click", () => select(id));
      svg.appendChild(g);
    });
    box.replaceChildren(svg);
  }
  renderWorkloads(data);
  showDetails();
}

function renderWorkloads(data) {
  const rows = data.workloads.map((w) => "<tr><td>" + esc(w.name) + "</td><td>" + rps(w.rps) + "</td><td>" + (w.requests ? pct(w.success_rate) : "-") + "</td><td>" +
    (w.requests ? ms(w.p50_ms) : "-") + "</td><td>" + (w.requests ? ms(w.p99_ms) : "-") + "</td><td>" + rps(w.outbound_rps) + "</td><td>" + (w.denials || 0) + "</td></tr>").join("");
  document.getElementById("workloads").innerHTML = "<table><tr><th>WORKLOAD</th><th>IN</th><th>SUCCESS</th><th>P50</th><th>P99</th><th>OUT</th><th>DENIED</th></tr>" + rows + "</table>";
}

function esc(s) { return String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]); }

function select(id) {
  selected = id;
  history.replaceState(null, "", "#edge=" + encodeURIComponent(id));
  for (const g of document.querySelectorAll(".edge")) g.classList.toggle("selected", g.getAttribute("data-id") === id);
  showDetails();
}

function showDetails() {
  const table = document.getElementById("edge-table");
  const e = last && last.edges.find((x) => edgeId(x) === selected);
  document.getElementById("hint").style.display = e ? "none" : "";
  if (!e) { table.innerHTML = ""; return; }
  const rows = [
    ["From", e.source], ["To", e.destination], ["Service", e.destination_service], ["Protocol", e.protocol],
    ["mTLS", e.mtls ? "yes" : "no"], ["Requests", e.requests], ["Rate", rps(e.rps)], ["Success", pct(e.success_rate)],
    ["Errors", e.errors], ["Denied", e.denials], ["p50", ms(e.p50_ms)], ["p99", ms(e.p99_ms)],
    ["Bytes sent", bytes(e.bytes_sent)], ["Bytes received", bytes(e.bytes_received)], ["Seen by", e.reporters.join(", ")],
  ];
  table.innerHTML = rows.map(([k, v]) => '<tr><th>' + k + '</th><td data-field="' + k.toLowerCase().replace(/ /g, "-") + '">' + esc(v) + "</td></tr>").join("");
}

async function poll() {
  try {
    const r = await fetch(DATA_URL, { cache: "no-store" });
    if (r.ok) render(await r.json());
  } catch (err) {
    document.getElementById("summary").textContent = "controller unreachable: " + err;
  }
  setTimeout(poll, 2000);
}
poll();
</script>
</body>
</html>
`;
}
