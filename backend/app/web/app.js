// The analysts' page. It uses only the public REST API, with the bearer token kept in sessionStorage.
"use strict";

const TOKEN_KEY = "anomaly.token";
const USERNAME_KEY = "anomaly.username";
const PAGE_SIZE = 20;
const HISTOGRAM_BINS = 40;
const POLL_MS = 400;
const BUSY = new Set(["queued", "analyzing"]);
const SVG_NS = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);

const state = {
  datasets: [],
  current: null, // the open dataset
  status: null, // its latest status
  offset: 0,
  watch: 0, // bumped to stop an older status poll
  previous: null, // {count, percentile} before a re-analysis
  defaultPercentile: 95, // the default model's, once known
  histogram: null, // the one drawn, redrawn when the width changes
};

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function authHeaders() {
  return token() ? { Authorization: `Bearer ${token()}` } : {};
}

// FastAPI's validation errors carry a list of problems; the service's own errors a sentence.
function describeDetail(detail, fallback) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((item) => `${(item.loc || []).slice(-1)[0] || "request"}: ${item.msg}`).join("; ");
  }
  return fallback;
}

function parseDetail(text, status) {
  const fallback = `The server answered ${status}.`;
  try {
    return describeDetail(JSON.parse(text).detail, fallback);
  } catch {
    return fallback;
  }
}

async function api(path, { method = "GET", json, form } = {}) {
  const headers = authHeaders();
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = new URLSearchParams(form);
  }
  const response = await fetch(path, { method, headers, body });
  if (response.status === 401 && token()) {
    signOut("Your session has ended: sign in again.");
  }
  if (!response.ok) {
    throw new ApiError(response.status, parseDetail(await response.text(), response.status));
  }
  return response.status === 204 ? null : response.json();
}

function datasetPath(id, rest = "") {
  return `/api/anomaly/datasets/${encodeURIComponent(id)}${rest}`;
}

// ---------------------------------------------------------------- small helpers

function show(element, visible) {
  element.hidden = !visible;
}

function say(element, text, kind = "") {
  element.textContent = text;
  element.classList.toggle("error", kind === "error");
  element.classList.toggle("ok", kind === "ok");
}

function element(tag, attributes = {}, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attributes = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function formatNumber(value, digits = 4) {
  if (typeof value !== "number" || !Number.isFinite(value)) return String(value ?? "");
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  const magnitude = Math.abs(value);
  if (magnitude >= 1e5 || magnitude < 1e-3) return value.toPrecision(digits);
  return Number(value.toPrecision(digits)).toLocaleString("en-US", { maximumFractionDigits: 6 });
}

function formatPercent(share) {
  const percent = share * 100;
  return `${percent >= 10 || percent === 0 ? percent.toFixed(0) : percent.toFixed(1)}%`;
}

function formatCell(value) {
  return value === null || value === undefined ? "" : String(value);
}

// ---------------------------------------------------------------- signing in and out

async function signIn(username, password) {
  const answer = await api("/api/auth/token", { method: "POST", form: { username, password } });
  sessionStorage.setItem(TOKEN_KEY, answer.access_token);
  sessionStorage.setItem(USERNAME_KEY, username);
  enterWorkspace();
}

function signOut(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(USERNAME_KEY);
  state.watch += 1;
  state.current = null;
  state.datasets = [];
  $("password").value = "";
  show($("workspace"), false);
  show($("account"), false);
  show($("sign-in-view"), true);
  say($("sign-in-message"), message, "error");
  $("username").focus();
}

function enterWorkspace() {
  $("account-name").textContent = sessionStorage.getItem(USERNAME_KEY) || "";
  say($("sign-in-message"), "");
  show($("sign-in-view"), false);
  show($("account"), true);
  show($("workspace"), true);
  closeResult();
  refreshDatasets();
  api("/api/anomaly/models").then((models) => {
    const model = models.find((item) => item.default);
    if (model) state.defaultPercentile = model.threshold_percentile;
  }, () => {});
}

async function onSignIn(event, register) {
  event.preventDefault();
  const username = $("username").value.trim();
  const password = $("password").value;
  if (!username || !password) {
    say($("sign-in-message"), "Enter a username and a password.", "error");
    return;
  }
  try {
    if (register) {
      await api("/api/auth/register", { method: "POST", json: { username, password } });
    }
    await signIn(username, password);
  } catch (error) {
    say($("sign-in-message"), error.message, "error");
  }
}

// ---------------------------------------------------------------- uploading

function uploadFile(file) {
  const progress = $("upload-progress");
  const message = $("upload-message");
  const data = new FormData();
  data.append("file", file);
  const request = new XMLHttpRequest();
  request.open("POST", "/api/anomaly/datasets/upload");
  for (const [name, value] of Object.entries(authHeaders())) request.setRequestHeader(name, value);
  request.upload.addEventListener("progress", (event) => {
    if (event.lengthComputable) {
      progress.value = Math.round((event.loaded / event.total) * 100);
      say(message, `Uploading ${file.name}: ${progress.value}%`);
    }
  });
  request.addEventListener("load", async () => {
    show(progress, false);
    if (request.status === 201) {
      const dataset = JSON.parse(request.responseText);
      say(message, `Uploaded ${dataset.filename}: ${formatNumber(dataset.row_count)} rows.`, "ok");
      await refreshDatasets();
      openDataset(dataset.id);
    } else if (request.status === 401) {
      signOut("Your session has ended: sign in again.");
    } else {
      say(message, `${file.name} was refused: ${parseDetail(request.responseText, request.status)}`, "error");
    }
  });
  request.addEventListener("error", () => {
    show(progress, false);
    say(message, `${file.name} could not be sent: the connection closed (is the file over the size limit?).`,
      "error");
  });
  progress.value = 0;
  show(progress, true);
  say(message, `Uploading ${file.name}…`);
  request.send(data);
}

function setUpDropZone() {
  const zone = $("drop-zone");
  const input = $("file-input");
  input.addEventListener("change", () => {
    if (input.files.length) uploadFile(input.files[0]);
    input.value = "";
  });
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    zone.addEventListener(name, () => zone.classList.remove("dragging"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    const files = event.dataTransfer.files;
    if (files.length) uploadFile(files[0]);
  });
}

// ---------------------------------------------------------------- the dataset list

async function refreshDatasets() {
  try {
    state.datasets = await api("/api/anomaly/datasets");
  } catch (error) {
    say($("upload-message"), error.message, "error");
    return;
  }
  renderDatasets();
}

function renderDatasets() {
  const list = $("datasets");
  list.replaceChildren();
  show($("datasets-empty"), state.datasets.length === 0);
  for (const dataset of state.datasets) {
    const item = element("li", { "data-id": dataset.id });
    if (state.current && state.current.id === dataset.id) item.classList.add("selected");
    const info = element("div", { class: "dataset-info" });
    info.append(element("span", { class: "dataset-name" }, dataset.filename));
    const uploaded = new Date(dataset.uploaded_at).toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "short" });
    info.append(element("span", { class: "hint" },
      `${formatNumber(dataset.row_count)} rows · ${dataset.column_count} columns · ${uploaded}`));
    const actions = element("div", { class: "dataset-actions" });
    actions.append(element("span", { class: `badge ${dataset.status}` }, dataset.status));
    const open = element("button", { type: "button", class: "small", "aria-label": `Open ${dataset.filename}` }, "Open");
    open.addEventListener("click", () => openDataset(dataset.id));
    const remove = element("button", { type: "button", class: "secondary small",
      "aria-label": `Delete ${dataset.filename}` }, "Delete");
    remove.addEventListener("click", () => deleteDataset(dataset));
    actions.append(open, remove);
    item.append(info, actions);
    list.append(item);
  }
}

async function deleteDataset(dataset) {
  if (!window.confirm(`Delete ${dataset.filename} and its results?`)) return;
  try {
    await api(datasetPath(dataset.id), { method: "DELETE" });
  } catch (error) {
    say($("upload-message"), error.message, "error");
    return;
  }
  if (state.current && state.current.id === dataset.id) closeResult();
  await refreshDatasets();
}

// ---------------------------------------------------------------- one dataset: analysing

function closeResult() {
  state.watch += 1;
  state.current = null;
  $("result-title").textContent = "Results";
  show($("result-placeholder"), true);
  show($("result-panel"), false);
}

async function openDataset(id) {
  const dataset = state.datasets.find((item) => item.id === id);
  if (!dataset) return;
  state.current = dataset;
  state.status = null;
  state.previous = null;
  state.offset = 0;
  renderDatasets();
  $("result-title").textContent = dataset.filename;
  $("result-meta").textContent = `${formatNumber(dataset.row_count)} rows, ${dataset.column_count} columns`;
  show($("result-placeholder"), false);
  show($("result-panel"), true);
  show($("result-body"), false);
  say($("analysis-message"), "");
  say($("count-change"), "");
  $("result-title").focus();
  await watchStatus(dataset.id);
}

async function startAnalysis(event) {
  event.preventDefault();
  const dataset = state.current;
  const percentile = Number($("percentile").value);
  if (!(percentile > 0 && percentile < 100)) {
    say($("analysis-message"), "The threshold percentile must be between 0 and 100 (for example 95).", "error");
    return;
  }
  const status = state.status;
  state.previous = status && status.status === "analyzed"
    ? { count: status.anomaly_count, percentile: status.threshold_percentile }
    : null;
  try {
    await api(datasetPath(dataset.id, "/analyze"), { method: "POST", json: { threshold_percentile: percentile } });
  } catch (error) {
    say($("analysis-message"), error.message, "error");
    return;
  }
  state.offset = 0;
  await watchStatus(dataset.id);
}

// Polls /status until the analysis settles, as a script would; a newer watch (or closing) stops it.
async function watchStatus(id) {
  const watch = ++state.watch;
  const box = $("analysis-progress-box");
  const bar = $("analysis-progress");
  for (;;) {
    let status;
    try {
      status = await api(datasetPath(id, "/status"));
    } catch (error) {
      if (watch === state.watch) say($("analysis-message"), error.message, "error");
      return;
    }
    if (watch !== state.watch) return;
    state.status = status;
    updateListedStatus(id, status.status);
    $("analyze").textContent = status.status === "analyzed" ? "Re-analyse" : "Analyse";
    if (BUSY.has(status.status)) {
      show(box, true);
      bar.value = status.progress;
      $("analysis-progress-label").textContent = status.status === "queued"
        ? "Queued…" : `Analysing… ${status.progress}%`;
      $("analyze").disabled = true;
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      continue;
    }
    show(box, false);
    $("analyze").disabled = false;
    setPercentile(status.threshold_percentile ?? state.defaultPercentile);
    if (status.status === "analyzed") {
      say($("analysis-message"), "");
      await showResults(status);
    } else if (status.status === "failed") {
      show($("result-body"), false);
      say($("analysis-message"), `The analysis failed: ${status.error || "no reason given"}`, "error");
    } else {
      show($("result-body"), false);
      say($("analysis-message"), "Not analysed yet: choose a sensitivity (or keep the model's) and press Analyse.");
    }
    return;
  }
}

function updateListedStatus(id, status) {
  const dataset = state.datasets.find((item) => item.id === id);
  if (dataset && dataset.status !== status) {
    dataset.status = status;
    renderDatasets();
  }
}

function setPercentile(value) {
  $("percentile").value = value;
  $("percentile-range").value = value;
}

// ---------------------------------------------------------------- one dataset: results

async function showResults(status) {
  const id = state.current.id;
  let histogram;
  let page;
  try {
    [histogram, page] = await Promise.all([
      api(datasetPath(id, `/scores/histogram?bins=${HISTOGRAM_BINS}&scale=log`)),
      api(datasetPath(id, `/anomalies?limit=${PAGE_SIZE}&offset=${state.offset}`)),
    ]);
  } catch (error) {
    say($("analysis-message"), error.message, "error");
    return;
  }
  if (!state.current || state.current.id !== id) return;
  const rate = status.row_count ? status.anomaly_count / status.row_count : 0;
  $("anomaly-count").textContent = formatNumber(status.anomaly_count);
  $("anomaly-rate").textContent = formatPercent(rate);
  $("row-count").textContent = formatNumber(status.row_count);
  $("model-name").replaceChildren(status.model || "trained on this file");
  if (status.model_version) {
    $("model-name").append(element("span", { class: "detail" }, `version ${status.model_version.slice(0, 8)}`));
  }
  $("threshold").replaceChildren(formatNumber(status.threshold),
    element("span", { class: "detail" }, `${status.threshold_percentile}th percentile`));
  const previous = state.previous;
  if (previous && previous.percentile !== status.threshold_percentile) {
    say($("count-change"), `${formatNumber(status.anomaly_count)} anomalies at the ${status.threshold_percentile}th `
      + `percentile, was ${formatNumber(previous.count)} at the ${previous.percentile}th.`, "ok");
  }
  show($("result-body"), true);
  state.histogram = histogram;
  drawHistogram($("histogram"), histogram);
  renderAnomalies(page);
}

async function showPage(offset) {
  state.offset = Math.max(0, offset);
  try {
    renderAnomalies(await api(datasetPath(state.current.id, `/anomalies?limit=${PAGE_SIZE}&offset=${state.offset}`)));
  } catch (error) {
    say($("analysis-message"), error.message, "error");
  }
}

function renderAnomalies(page) {
  const table = $("anomalies-table");
  const columns = state.current.columns;
  const head = element("thead");
  const headRow = element("tr");
  for (const name of ["#", "Row", "Score", "Why", ...columns]) headRow.append(element("th", { scope: "col" }, name));
  head.append(headRow);
  const body = element("tbody");
  page.items.forEach((item, index) => {
    const row = element("tr");
    const top = new Map(item.top_features.map((feature, rank) => [feature.column, { ...feature, rank }]));
    row.append(element("td", { class: "number" }, String(page.offset + index + 1)));
    row.append(element("td", { class: "number" }, String(item.row + 1)));
    row.append(element("td", { class: "number" }, formatNumber(item.score)));
    const why = item.top_features.map((feature) => `${feature.column} ${formatPercent(feature.share)}`);
    row.append(element("td", { class: "why" }, why.join(" · ")));
    for (const column of columns) {
      const cell = element("td", {}, formatCell(item.values[column]));
      const feature = top.get(column);
      if (feature) {
        cell.classList.add("hot", `hot-${feature.rank + 1}`);
        cell.title = `${formatPercent(feature.share)} of this row's error`;
        if (feature.expected !== undefined && feature.expected !== null) {
          const expected = typeof feature.expected === "number" ? formatNumber(feature.expected) : feature.expected;
          cell.title += `; the model expected ${expected}`;
          cell.append(element("span", { class: "expected" }, `expected ${expected}`));
        }
      }
      row.append(cell);
    }
    body.append(row);
  });
  table.replaceChildren(head, body);
  const last = page.offset + page.items.length;
  $("page-label").textContent = page.total
    ? `Anomalies ${formatNumber(page.offset + 1)}–${formatNumber(last)} of ${formatNumber(page.total)}`
    : "No anomalies above the threshold.";
  $("previous-page").disabled = page.offset === 0;
  $("next-page").disabled = last >= page.total;
}

async function downloadResults(format) {
  const message = $("analysis-message");
  say(message, `Preparing the ${format.toUpperCase()} file…`);
  try {
    const response = await fetch(datasetPath(state.current.id, `/results?format=${format}`), { headers: authHeaders() });
    if (!response.ok) throw new ApiError(response.status, parseDetail(await response.text(), response.status));
    const disposition = response.headers.get("Content-Disposition") || "";
    const filename = (disposition.match(/filename="?([^";]+)"?/) || [])[1] || `results.${format}`;
    const url = URL.createObjectURL(await response.blob());
    const link = element("a", { href: url, download: filename });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
    say(message, `Downloaded ${filename}.`, "ok");
  } catch (error) {
    say(message, `The download failed: ${error.message}`, "error");
  }
}

// ---------------------------------------------------------------- the histogram (inline SVG)

// Drawn at the container's own width, so its text keeps its size on a phone.
function drawHistogram(container, histogram) {
  const width = Math.max(280, Math.round(container.clientWidth || 720));
  const height = width < 560 ? 220 : 280;
  const margin = { top: 26, right: 12, bottom: 40, left: 44 };
  const plotWidth = width - margin.left - margin.right;
  const plotHeight = height - margin.top - margin.bottom;
  const { edges, counts, threshold } = histogram;
  const log = histogram.scale === "log";
  const position = log ? Math.log10 : (value) => value;
  const low = position(edges[0]);
  const span = position(edges[edges.length - 1]) - low || 1;
  const x = (value) => margin.left + ((position(value) - low) / span) * plotWidth;
  const maxCount = Math.max(1, ...counts);
  const y = (count) => margin.top + plotHeight - (Math.log10(1 + count) / Math.log10(1 + maxCount)) * plotHeight;

  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": "histogram-title histogram-desc",
  });
  chart.append(svg("title", { id: "histogram-title" }, "Histogram of anomaly scores"));
  chart.append(svg("desc", { id: "histogram-desc" },
    `${formatNumber(histogram.row_count)} rows in ${counts.length} bins from ${formatNumber(edges[0])} to `
    + `${formatNumber(edges[edges.length - 1])}; threshold ${formatNumber(threshold)}, `
    + `${formatNumber(histogram.anomaly_count)} rows above it.`));

  for (const tick of countTicks(maxCount)) {
    chart.append(svg("line", { class: "grid", x1: margin.left, x2: width - margin.right, y1: y(tick), y2: y(tick) }));
    chart.append(svg("text", { class: "tick", x: margin.left - 6, y: y(tick) + 4, "text-anchor": "end" },
      formatNumber(tick)));
  }
  counts.forEach((count, index) => {
    if (count === 0) return;
    const left = x(edges[index]);
    const barWidth = Math.max(1, x(edges[index + 1]) - left - 1);
    const top = Math.min(y(count), margin.top + plotHeight - 2);
    const bar = svg("rect", {
      class: edges[index] >= threshold ? "bar anomalous" : "bar",
      x: left, y: top, width: barWidth, height: margin.top + plotHeight - top,
    });
    bar.append(svg("title", {},
      `${formatNumber(edges[index])} – ${formatNumber(edges[index + 1])}: ${formatNumber(count)} rows`));
    chart.append(bar);
  });
  chart.append(svg("line", {
    class: "axis", x1: margin.left, x2: width - margin.right, y1: margin.top + plotHeight, y2: margin.top + plotHeight,
  }));
  for (const tick of scoreTicks(edges[0], edges[edges.length - 1], log)) {
    chart.append(svg("line", {
      class: "axis", x1: x(tick), x2: x(tick), y1: margin.top + plotHeight, y2: margin.top + plotHeight + 5,
    }));
    chart.append(svg("text", { class: "tick", x: x(tick), y: margin.top + plotHeight + 18, "text-anchor": "middle" },
      formatNumber(tick, 2)));
  }
  chart.append(svg("text", { class: "axis-label", x: margin.left + plotWidth / 2, y: height - 4,
    "text-anchor": "middle" }, `anomaly score${log ? " (log scale)" : ""}`));
  chart.append(svg("text", { class: "axis-label", x: 12, y: margin.top + plotHeight / 2, "text-anchor": "middle",
    transform: `rotate(-90 12 ${margin.top + plotHeight / 2})` }, "rows (log)"));

  const thresholdX = x(threshold);
  chart.append(svg("line", { class: "threshold", x1: thresholdX, x2: thresholdX, y1: margin.top - 6,
    y2: margin.top + plotHeight }));
  const labelRight = thresholdX < margin.left + plotWidth * 0.6;
  chart.append(svg("text", { class: "threshold-label", x: thresholdX + (labelRight ? 6 : -6), y: margin.top - 10,
    "text-anchor": labelRight ? "start" : "end" },
    `threshold ${formatNumber(threshold)} · ${formatNumber(histogram.anomaly_count)} above`));
  container.replaceChildren(chart);
}

function countTicks(maxCount) {
  const ticks = [];
  for (let tick = 1; tick <= maxCount; tick *= 10) ticks.push(tick);
  return ticks;
}

// Round numbers inside [low, high]: 1-2-5 steps on a log axis (powers of ten when they are many), else linear.
function scoreTicks(low, high, log) {
  if (log) {
    const ticks = [];
    for (let power = Math.floor(Math.log10(low)); power <= Math.ceil(Math.log10(high)); power += 1) {
      for (const step of [1, 2, 5]) {
        const tick = Number((step * 10 ** power).toPrecision(1));
        if (tick >= low && tick <= high) ticks.push({ tick, step });
      }
    }
    if (ticks.length > 9) return ticks.filter(({ step }) => step === 1).map(({ tick }) => tick);
    if (ticks.length >= 3) return ticks.map(({ tick }) => tick);
  }
  const rough = (high - low) / 6;
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((factor) => factor * magnitude).find((candidate) => candidate >= rough);
  const ticks = [];
  for (let index = Math.ceil(low / step); index * step <= high; index += 1) ticks.push(Number((index * step).toPrecision(6)));
  return ticks;
}

// ---------------------------------------------------------------- wiring

function setUp() {
  $("sign-in-form").addEventListener("submit", (event) => onSignIn(event, false));
  $("register").addEventListener("click", (event) => onSignIn(event, true));
  $("sign-out").addEventListener("click", () => signOut());
  $("refresh-datasets").addEventListener("click", refreshDatasets);
  $("analyze-form").addEventListener("submit", startAnalysis);
  $("percentile-range").addEventListener("input", () => { $("percentile").value = $("percentile-range").value; });
  $("percentile").addEventListener("input", () => { $("percentile-range").value = $("percentile").value; });
  $("previous-page").addEventListener("click", () => showPage(state.offset - PAGE_SIZE));
  $("next-page").addEventListener("click", () => showPage(state.offset + PAGE_SIZE));
  for (const button of [$("download-csv"), $("download-xlsx")]) {
    button.addEventListener("click", () => downloadResults(button.dataset.format));
  }
  setUpDropZone();
  let resizing = 0;
  window.addEventListener("resize", () => {
    cancelAnimationFrame(resizing);
    resizing = requestAnimationFrame(() => {
      if (state.histogram && !$("result-body").hidden) drawHistogram($("histogram"), state.histogram);
    });
  });
  if (token()) {
    api("/api/auth/me").then(enterWorkspace, () => signOut());
  } else {
    show($("sign-in-view"), true);
  }
}

document.addEventListener("DOMContentLoaded", setUp);
