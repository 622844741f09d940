"""A self-contained interactive HTML page of a model's gates over some text (no server needed).

    write_page(states, "inspect.html", title="...", highlight=[12, 40])

What the page does (plain JavaScript, data embedded as JSON; opens from disk in any browser):

- the text, each token coloured by the value of one cell of one state; a state picker (c, h,
  i, f, g, o ...) and a cell picker choose which;
- hover a token: a panel lists, for every gate and state, the picked cell's value and a strip of
  all cells' values at that token (hover a square for its cell and value);
- drag across tokens of one sentence (press, move, release) to select a span: the page lists the
  cells on (>= threshold) across the span, and, with "off around" = k > 0, off at the k tokens on
  each side (LSTMVis "select"), then the other places where those cells are on together
  (LSTMVis "match"). Click a found cell to show it. The algorithms are those of
  lstmkit.inspect.cells (select_cells, match_cells with min_share=1), run on the rounded values
  embedded in the page.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from lstmkit.inspect.states import StateSet

DECIMALS = 3  # values are embedded rounded to this many decimals


def page_data(
    states: StateSet,
    title: str,
    default_state: str | None = None,
    default_cell: int = 0,
    threshold: float = 0.3,
    highlight: list[int] | None = None,
    notes: str = "",
) -> dict:
    names = list(states.names)
    return {
        "title": title,
        "mode": states.mode,
        "layer": states.layer,
        "names": names,
        "H": states.hidden_size,
        "sentences": [
            {
                "tokens": toks,
                "values": {
                    n: np.round(states.values[n][k].astype(np.float64), DECIMALS).tolist()
                    for n in names
                },
            }
            for k, toks in enumerate(states.tokens)
        ],
        "default": {"state": default_state or states.default_state(), "cell": int(default_cell)},
        "threshold": threshold,
        "highlight": [int(c) for c in (highlight or [])],
        "notes": notes,
    }


def write_page(
    states: StateSet, path: str | Path, title: str = "lstmkit: inside the gates", **kwargs
) -> Path:
    data = page_data(states, title, **kwargs)
    # "</" inside a <script> would end it early: escape it in the embedded JSON
    blob = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    text = TEMPLATE.replace("__TITLE__", html.escape(title)).replace("__DATA__", blob)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


TEMPLATE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.2em;color:#222;max-width:1100px}
.controls label{margin-right:1em;font-size:.9em}
.controls input{width:5em}
#text{margin-top:.8em;line-height:2.1em;user-select:none}
.sentence{margin:.2em 0}
.sentence .sid{color:#999;font-size:.75em;margin-right:.4em}
.tok{padding:.15em .25em;margin:0 .08em;border-radius:3px;cursor:pointer;font-family:monospace}
.tok.sel{outline:2px solid #000}
.tok.match{box-shadow:0 -3px 0 #e69f00 inset}
#details{border:1px solid #ccc;padding:.5em;margin-top:1em;min-height:4em;font-size:.85em}
#details table{border-collapse:collapse}
#details td{padding:1px 6px}
.strip span{display:inline-block;width:7px;height:12px}
.cellchip{margin:2px;font-family:monospace}
.note{color:#555;font-size:.85em}
</style></head><body>
<h2 id="title"></h2>
<p class="note" id="notes"></p>
<div class="controls">
 <label>state <select id="state"></select></label>
 <label>cell <input id="cell" type="number" min="0" value="0"></label>
 <label>threshold <input id="threshold" type="number" step="0.05"></label>
 <label>off around <input id="off" type="number" min="0" value="0"></label>
 <span id="highlight" class="note"></span>
</div>
<p class="note">Hover a token to see its gate values. Press on a token and drag to another in
the same sentence to select a span: the cells on across it are listed, then where they match.</p>
<div id="text"></div>
<div id="details">hover a token</div>
<div id="selection"><h4>Selection</h4><div id="span"></div><div id="found"></div>
<div id="matches"></div></div>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const SIG = ["i","f","o","r","z"];
const $ = (id) => document.getElementById(id);
let drag = null, span = null;
function state(){ return $("state").value; }
function cell(){
  const c = parseInt($("cell").value, 10);
  return isNaN(c) ? 0 : Math.max(0, Math.min(D.H - 1, c));
}
function thr(){ const t = parseFloat($("threshold").value); return isNaN(t) ? D.threshold : t; }
function colour(name, v){
  if (SIG.includes(name)) {
    const a = Math.max(0, Math.min(1, v));
    return `rgba(0,120,60,${a.toFixed(3)})`;
  }
  const a = Math.min(1, Math.abs(v)).toFixed(3);
  return v >= 0 ? `rgba(215,48,39,${a})` : `rgba(49,54,149,${a})`;
}
function render(){
  const box = $("text"); box.innerHTML = "";
  D.sentences.forEach((s, k) => {
    const div = document.createElement("div"); div.className = "sentence";
    const sid = document.createElement("span");
    sid.className = "sid"; sid.textContent = k; div.appendChild(sid);
    s.tokens.forEach((tok, t) => {
      const e = document.createElement("span"); e.className = "tok"; e.textContent = tok;
      e.dataset.s = k; e.dataset.t = t; e.id = `tok-${k}-${t}`; div.appendChild(e);
      div.appendChild(document.createTextNode(" "));
    });
    box.appendChild(div);
  });
  recolour();
}
function recolour(){
  const n = state(), c = cell();
  document.querySelectorAll(".tok").forEach((e) => {
    const v = D.sentences[e.dataset.s].values[n][e.dataset.t][c];
    e.style.background = colour(n, v); e.title = `${n}[${c}] = ${v}`;
    e.style.color = Math.abs(v) > 0.6 ? "#fff" : "#000";  // readable on dark colours
  });
}
function details(k, t){
  const s = D.sentences[k], c = cell();
  let h = `<b>"${esc(s.tokens[t])}"</b> sentence ${k}, position ${t}; cell ${c}<table>`;
  for (const n of D.names){
    const row = s.values[n][t];
    const strip = row.map((v, j) =>
      `<span style="background:${colour(n, v)}" title="${n}[${j}] = ${v}"></span>`).join("");
    h += `<tr data-gate="${n}"><td>${n}</td><td class="val">${row[c].toFixed(3)}</td>` +
      `<td class="strip">${strip}</td></tr>`;
  }
  $("details").innerHTML = h + "</table>";
}
function esc(x){ return x.replace(/&/g,"&amp;").replace(/</g,"&lt;").replace(/>/g,"&gt;"); }
function selectCells(vals, a, b, th, off){
  const out = [];
  for (let j = 0; j < D.H; j++){
    let ok = true, mn = Infinity;
    for (let t = a; t < b; t++){
      const v = vals[t][j];
      if (!(v >= th)) { ok = false; break; }
      mn = Math.min(mn, v);
    }
    if (ok && off > 0){
      for (let t = Math.max(0, a - off); t < a; t++) if (vals[t][j] >= th) ok = false;
      for (let t = b; t < Math.min(vals.length, b + off); t++) if (vals[t][j] >= th) ok = false;
    }
    if (ok) out.push([j, mn]);
  }
  out.sort((p, q) => (q[1] - p[1]) || (p[0] - q[0]));
  return out.map((p) => p[0]);
}
function matchCells(n, cells, th, len, query){
  const res = []; if (!cells.length) return res;
  const sel = new Set(cells);
  D.sentences.forEach((s, k) => {
    const vals = s.values[n], T = vals.length, share = [], other = [];
    for (let t = 0; t < T; t++){
      let a = 0, b = 0;
      for (let j = 0; j < D.H; j++){
        const on = vals[t][j] >= th;
        if (sel.has(j)) a += on; else b += on;
      }
      share.push(a / cells.length); other.push(D.H > cells.length ? b / (D.H - cells.length) : 0);
    }
    let t = 0;
    while (t < T){
      if (share[t] < 1) { t++; continue; }
      const st = t; while (t < T && share[t] >= 1) t++;
      if (Math.abs((t - st) - len) > 2) continue;
      if (k === query[0] && st === query[1] && t === query[2]) continue;
      let m = 0, o = 0; for (let u = st; u < t; u++){ m += share[u]; o += other[u]; }
      res.push({s: k, a: st, b: t, score: (m - o) / (t - st)});
    }
  });
  res.sort((p, q) => (q.score - p.score) || (p.s - q.s) || (p.a - q.a));
  return res.slice(0, 10);
}
function showSpan(k, a, b){
  document.querySelectorAll(".tok.sel,.tok.match")
    .forEach((e) => e.classList.remove("sel", "match"));
  for (let t = a; t < b; t++) $(`tok-${k}-${t}`).classList.add("sel");
  span = [k, a, b];
  const n = state(), th = thr(), off = parseInt($("off").value, 10) || 0;
  const cells = selectCells(D.sentences[k].values[n], a, b, th, off);
  const words = D.sentences[k].tokens.slice(a, b).join(" ");
  $("span").textContent = `sentence ${k}, tokens ${a}..${b - 1}: "${words}" ` +
    `(state ${n}, threshold ${th}, off around ${off})`;
  $("found").innerHTML = `<span id="found-count">${cells.length}</span> cells on across it: ` +
    cells.map((c) => `<button class="cellchip" data-cell="${c}">${c}</button>`).join("");
  document.querySelectorAll("#found .cellchip").forEach(pickOnClick);
  const ms = matchCells(n, cells, th, b - a, span);
  $("matches").innerHTML = `<b>matches</b> (${ms.length}): ` + ms.map((m) =>
    `<div class="m" data-s="${m.s}" data-a="${m.a}" data-b="${m.b}">sentence ${m.s}, ` +
    `${m.a}..${m.b - 1}: ${esc(D.sentences[m.s].tokens.slice(m.a, m.b).join(" "))} ` +
    `(score ${m.score.toFixed(2)})</div>`).join("");
  ms.forEach((m) => {
    for (let t = m.a; t < m.b; t++) $(`tok-${m.s}-${t}`).classList.add("match");
  });
}
function pickOnClick(button){
  button.addEventListener("click", () => { $("cell").value = button.dataset.cell; recolour(); });
}
function init(){
  $("title").textContent = D.title; $("notes").textContent = D.notes || "";
  for (const n of D.names){
    const o = document.createElement("option");
    o.value = n; o.textContent = n; $("state").appendChild(o);
  }
  $("state").value = D.default.state; $("cell").value = D.default.cell; $("cell").max = D.H - 1;
  $("threshold").value = D.threshold;
  if (D.highlight.length) $("highlight").innerHTML = "cells of interest: " + D.highlight
    .map((c) => `<button class="cellchip hl" data-cell="${c}">${c}</button>`).join("");
  document.querySelectorAll(".cellchip.hl").forEach(pickOnClick);
  ["state", "cell"].forEach((id) => $(id).addEventListener("input", recolour));
  ["state", "threshold", "off"].forEach((id) =>
    $(id).addEventListener("change", () => { if (span) showSpan(...span); }));
  render();
  const box = $("text");
  box.addEventListener("mouseover", (ev) => {
    const e = ev.target; if (!e.classList.contains("tok")) return;
    details(+e.dataset.s, +e.dataset.t);
    if (drag && +e.dataset.s === drag[0]) {
      document.querySelectorAll(".tok.sel").forEach((x) => x.classList.remove("sel"));
      const a = Math.min(drag[1], +e.dataset.t), b = Math.max(drag[1], +e.dataset.t);
      for (let t = a; t <= b; t++) $(`tok-${drag[0]}-${t}`).classList.add("sel");
    }
  });
  box.addEventListener("mousedown", (ev) => {
    const e = ev.target;
    if (e.classList.contains("tok")) { drag = [+e.dataset.s, +e.dataset.t]; ev.preventDefault(); }
  });
  document.addEventListener("mouseup", (ev) => {
    if (!drag) return;
    const e = ev.target; let end = drag[1];
    if (e.classList && e.classList.contains("tok") && +e.dataset.s === drag[0]) end = +e.dataset.t;
    const a = Math.min(drag[1], end), b = Math.max(drag[1], end) + 1;
    const k = drag[0]; drag = null; showSpan(k, a, b);
  });
  document.body.dataset.ready = "1";
}
init();
</script></body></html>
"""
