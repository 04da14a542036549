// The page of `tf-boneage serve`: films queued with sex and dates, posted one at a time to
// /predict (bounded memory, a progress bar), each answer drawn as a card; /results.csv gives
// the rows as `predict --out` writes them. No other host is contacted.
"use strict";

const state = { pending: [], rows: [], nextId: 1 };
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function yearsMonths(months) {
  const m = Math.round(months);
  const y = Math.floor(m / 12);
  const r = m % 12;
  return `${y} year${y === 1 ? "" : "s"} ${r} month${r === 1 ? "" : "s"}`;
}

async function loadModel() {
  try {
    const info = await (await fetch("/api/model")).json();
    $("#model").textContent = info.description;
    $("#synthetic").hidden = !info.synthetic;
  } catch (e) {
    $("#model").textContent = "The model could not be described: " + e;
  }
}

function addFiles(files) {
  const wanted = /\.(png|jpe?g|dcm|dicom)$/i;
  for (const file of files) {
    const path = file.webkitRelativePath || file.name;
    if (!wanted.test(file.name) && file.name.includes(".")) continue; // folder noise
    state.pending.push({ id: state.nextId++, file, name: path });
  }
  drawPending();
}

function drawPending() {
  const body = $("#pending tbody");
  body.replaceChildren();
  const fallback = $("#default-sex").value;
  for (const item of state.pending) {
    const sex = el("select", { class: "sex", "aria-label": `Sex of ${item.name}` },
      el("option", { value: "" }, "from the file"),
      el("option", { value: "F" }, "F"), el("option", { value: "M" }, "M"));
    sex.value = item.sex ?? fallback;
    sex.addEventListener("change", () => { item.sex = sex.value; });
    const birth = el("input", { type: "date", class: "birth", "aria-label": `Birth date of ${item.name}` });
    const study = el("input", { type: "date", class: "study", "aria-label": `Study date of ${item.name}` });
    birth.value = item.birth || "";
    study.value = item.study || "";
    birth.addEventListener("change", () => { item.birth = birth.value; });
    study.addEventListener("change", () => { item.study = study.value; });
    const remove = el("button", { type: "button", class: "remove", onclick: () => {
      state.pending = state.pending.filter((p) => p !== item); drawPending(); } }, "remove");
    body.append(el("tr", { "data-name": item.name },
      el("td", {}, item.name), el("td", {}, sex), el("td", {}, birth), el("td", {}, study),
      el("td", {}, remove)));
  }
  $("#pending-section").hidden = state.pending.length === 0;
  $("#read").textContent = `Read ${state.pending.length} film${state.pending.length === 1 ? "" : "s"}`;
}

async function post(item, force) {
  const form = new FormData();
  form.append("file", item.file, item.file.name);
  const sex = item.sex ?? $("#default-sex").value;
  if (sex) form.append("sex", sex);
  if (item.birth) form.append("birth_date", item.birth);
  if (item.study) form.append("study_date", item.study);
  if (force) form.append("force", "1");
  let response;
  try {
    response = await fetch("/predict", { method: "POST", body: form });
  } catch (e) {
    return { file: item.name, status: "error", reason: `no answer from the server (${e})` };
  }
  let doc;
  try {
    doc = await response.json();
  } catch (e) {
    doc = { error: `HTTP ${response.status}` };
  }
  if (!response.ok) return { file: item.name, status: "error", reason: doc.error || `HTTP ${response.status}` };
  doc.file = item.name;
  return doc;
}

async function readAll() {
  const batch = state.pending.splice(0);
  drawPending();
  if (!batch.length) return;
  const bar = $("#progress");
  $("#progress-section").hidden = false;
  bar.max = batch.length;
  for (let i = 0; i < batch.length; i++) {
    bar.value = i;
    $("#progress-text").textContent = `Reading ${i + 1} of ${batch.length}: ${batch[i].name}`;
    const row = await post(batch[i], false);
    showResult(batch[i], row);
  }
  bar.value = batch.length;
  $("#progress-text").textContent = `Read ${batch.length} film${batch.length === 1 ? "" : "s"}`;
}

function intervalAxis(row) {
  // an age axis 0-20 years with the 90 % interval as a band and the age as a mark
  const W = 380, H = 46, left = 12, right = 40, top = 8, maxMonths = 240;
  const x = (m) => left + (W - left - right) * Math.min(Math.max(m, 0), maxMonths) / maxMonths;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "axis");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label",
    `90 % interval ${row.interval_low_months.toFixed(0)} to ${row.interval_high_months.toFixed(0)} months`);
  const add = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    svg.append(n);
    return n;
  };
  add("line", { x1: x(0), x2: x(maxMonths), y1: top + 10, y2: top + 10, class: "baseline" });
  for (let y = 0; y <= 20; y += 2) {
    add("line", { x1: x(12 * y), x2: x(12 * y), y1: top + 6, y2: top + 14, class: "tick" });
    add("text", { x: x(12 * y), y: top + 30, class: "label" }, `${y}`);
  }
  add("text", { x: W - 2, y: top + 14, class: "unit" }, "years");
  add("rect", { x: x(row.interval_low_months), y: top + 3,
    width: Math.max(1, x(row.interval_high_months) - x(row.interval_low_months)), height: 14, class: "band" });
  add("line", { x1: x(row.bone_age_months), x2: x(row.bone_age_months), y1: top, y2: top + 20, class: "age" });
  if (row.chronological_age_months !== null && row.chronological_age_months !== undefined) {
    add("circle", { cx: x(row.chronological_age_months), cy: top + 10, r: 4, class: "chrono" });
  }
  return svg;
}

function verdict(row) {
  if (row.status === "ok") return el("p", { class: "qc ok" }, "QC: accepted");
  if (row.status === "rejected") return el("p", { class: "qc rejected" }, `QC rejected this film: ${row.reason}`);
  return el("p", { class: "qc error" }, `Could not read this film: ${row.reason}`);
}

function showResult(item, row) {
  const index = state.rows.findIndex((r) => r.__id === item.id);
  row.__id = item.id;
  if (index >= 0) state.rows[index] = row; else state.rows.push(row);
  const card = el("article", { class: `result ${row.status}`, "data-status": row.status, "data-file": row.file });
  card.append(el("h3", {}, row.file));
  if (row.bone_age_months !== null && row.bone_age_months !== undefined) {
    card.append(el("p", { class: "age" }, yearsMonths(row.bone_age_months),
      el("span", { class: "months" }, ` (${row.bone_age_months.toFixed(1)} months)`)));
    card.append(el("p", { class: "interval" },
      `90 % interval: ${row.interval_low_months.toFixed(0)}-${row.interval_high_months.toFixed(0)} months`));
    card.append(intervalAxis(row));
    const dated = row.sds_greulich_pyle !== null && row.sds_greulich_pyle !== undefined;
    card.append(el("p", { class: "legend" }, "bar: bone age; band: 90 % interval"
      + (dated ? "; dot: chronological age" : "")));
    if (dated) {
      const signed = (v, digits) => (v >= 0 ? "+" : "") + v.toFixed(digits);
      card.append(el("p", { class: "sds" },
        `Chronological age ${yearsMonths(row.chronological_age_months)}; bone age minus chronological age `
        + `${signed(row.ba_minus_ca_months, 1)} months; SDS ${signed(row.sds_greulich_pyle, 2)}`));
    }
  }
  card.append(verdict(row));
  if (row.flags) card.append(el("p", { class: "flags" }, `Notes: ${row.flags}`));
  if (row.status === "rejected" && (row.bone_age_months === null || row.bone_age_months === undefined)) {
    card.append(el("button", { type: "button", class: "force", onclick: async (ev) => {
      ev.target.disabled = true;
      ev.target.textContent = "Reading...";
      const again = await post(item, true);
      card.replaceWith(showResult(item, again));
    } }, "Show an age anyway"));
  }
  if (row.overlay_png) {
    const src = `data:image/png;base64,${row.overlay_png}`;
    const img = el("img", { class: "overlay", src, alt: `Overlay of ${row.file}: landmarks, regions, Grad-CAM`,
      title: "Click for full resolution" });
    img.addEventListener("click", () => openZoom(src));
    card.append(el("div", { class: "overlay-box" }, img));
  }
  if (index < 0) $("#results").append(card);
  $("#results-section").hidden = false;
  return card;
}

function openZoom(src) {
  $("#zoom-img").src = src;
  $("#zoom").hidden = false;
}

async function downloadCsv() {
  const rows = state.rows.map(({ __id, overlay_png, ...rest }) => rest);
  const response = await fetch("/results.csv", { method: "POST",
    headers: { "content-type": "application/json" }, body: JSON.stringify({ rows }) });
  const blob = await response.blob();
  const a = el("a", { href: URL.createObjectURL(blob), download: "boneage_results.csv" });
  document.body.append(a);
  a.click();
  a.remove();
}

function setup() {
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    addFiles(e.dataTransfer.files);
  });
  for (const id of ["#files", "#folder"]) {
    $(id).addEventListener("change", (e) => { addFiles(e.target.files); e.target.value = ""; });
  }
  $("#default-sex").addEventListener("change", drawPending);
  $("#read").addEventListener("click", readAll);
  $("#csv").addEventListener("click", downloadCsv);
  $("#zoom").addEventListener("click", (e) => {
    if (e.target.id === "zoom") $("#zoom").hidden = true; else $("#zoom").classList.toggle("fit");
  });
  loadModel();
}

setup();
