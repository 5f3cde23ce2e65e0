// The analysts' page: signing in, uploads, the datasets, analyses and their results. It uses only the public
// REST API; the other modules draw the charts, train models, show the Models panel and take feedback.

import {
  POLL_MS, api, authHeaders, datasetPath, forgetToken, onSessionEnded, parseDetail, saveFile, storeToken, token,
} from "./api.js";
import { drawHistogram } from "./charts.js";
import { labelCell, setUpFeedback, showFeedback } from "./feedback.js";
import { expectedModel, forgetModels, refreshModels, setUpModels } from "./models.js";
import {
  closeTraining, offerTraining, prepareTrainForm, redrawLossChart, resumeTraining, setUpTraining,
} from "./training.js";
import {
  $, element, formatCell, formatDate, formatNumber, formatPercent, percentileProblem, say, show, sleep,
} from "./ui.js";

const USERNAME_KEY = "anomaly.username";
const SESSION_ENDED = "Your session has ended: sign in again.";
const PAGE_SIZE = 20;
const HISTOGRAM_BINS = 40;
const BUSY = new Set(["queued", "analyzing"]);
const FILTER_WORDS = { unlabelled: "unlabelled", anomaly: "labelled real", normal: "labelled expected" };

const state = {
  datasets: [],
  current: null, // the open dataset
  status: null, // its latest status
  offset: 0,
  watch: 0, // bumped to stop an older status poll
  previous: null, // {count, percentile} before a re-analysis
  histogram: null, // the one drawn, redrawn when the width changes
  labelFilter: "", // which anomalies the table lists: "" (all), unlabelled, anomaly, normal
};

// ---------------------------------------------------------------- signing in and out

async function signIn(username, password) {
  const answer = await api("/api/auth/token", { method: "POST", form: { username, password } });
  storeToken(answer.access_token);
  sessionStorage.setItem(USERNAME_KEY, username);
  enterWorkspace();
}

function signOut(message = "") {
  forgetToken();
  sessionStorage.removeItem(USERNAME_KEY);
  state.watch += 1;
  state.current = null;
  state.datasets = [];
  forgetModels();
  closeTraining();
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
  refreshModels();
  resumeTraining();
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
      signOut(SESSION_ENDED);
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
    info.append(element("span", { class: "hint" },
      `${formatNumber(dataset.row_count)} rows · ${dataset.column_count} columns · ${formatDate(dataset.uploaded_at)}`));
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
  state.labelFilter = "";
  $("label-filter").value = "";
  $("model-choice").value = "";
  renderDatasets();
  prepareTrainForm(dataset);
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

// Starts an analysis at ``percentile`` with the chosen model; a 422 for the columns offers to train one.
async function analyse(percentile) {
  const dataset = state.current;
  const problem = percentileProblem(percentile);
  if (problem) {
    say($("analysis-message"), problem, "error");
    return;
  }
  setPercentile(percentile);
  const status = state.status;
  state.previous = status && status.status === "analyzed"
    ? { count: status.anomaly_count, percentile: status.threshold_percentile }
    : null;
  const body = { threshold_percentile: percentile };
  if ($("model-choice").value) body.model = $("model-choice").value;
  offerTraining(false);
  try {
    await api(datasetPath(dataset.id, "/analyze"), { method: "POST", json: body });
  } catch (error) {
    say($("analysis-message"), error.message, "error");
    offerTraining(error.status === 422 && error.message.includes("columns don't match model"));
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
      await sleep(POLL_MS);
      continue;
    }
    show(box, false);
    $("analyze").disabled = false;
    setPercentile(status.threshold_percentile ?? expectedModel(state.current.columns)?.threshold_percentile ?? 95);
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

// A model chosen in the form: its own percentile, until the analyst picks another.
function chooseModel() {
  const model = expectedModel(state.current.columns);
  if (model) setPercentile(model.threshold_percentile);
}

// ---------------------------------------------------------------- one dataset: results

function anomaliesPath(id) {
  const filter = state.labelFilter ? `&label=${state.labelFilter}` : "";
  return datasetPath(id, `/anomalies?limit=${PAGE_SIZE}&offset=${state.offset}${filter}`);
}

async function showResults(status) {
  const id = state.current.id;
  let histogram;
  let page;
  let feedback;
  try {
    [histogram, page, feedback] = await Promise.all([
      api(datasetPath(id, `/scores/histogram?bins=${HISTOGRAM_BINS}&scale=log`)),
      api(anomaliesPath(id)),
      api(datasetPath(id, "/feedback")),
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
    const version = status.model_version_number ?? status.model_version.slice(0, 8);
    $("model-name").append(element("span", { class: "detail" }, `version ${version}`));
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
  showFeedback(id, feedback);
  renderAnomalies(page);
}

function filterAnomalies() {
  state.labelFilter = $("label-filter").value;
  showPage(0);
}

async function showPage(offset) {
  state.offset = Math.max(0, offset);
  try {
    renderAnomalies(await api(anomaliesPath(state.current.id)));
  } catch (error) {
    say($("analysis-message"), error.message, "error");
  }
}

function renderAnomalies(page) {
  const table = $("anomalies-table");
  const columns = state.current.columns;
  const head = element("thead");
  const headRow = element("tr");
  for (const name of ["#", "Row", "Score", "Your label", "Why", ...columns]) {
    headRow.append(element("th", { scope: "col" }, name));
  }
  head.append(headRow);
  const body = element("tbody");
  page.items.forEach((item, index) => {
    const row = element("tr");
    const top = new Map(item.top_features.map((feature, rank) => [feature.column, { ...feature, rank }]));
    row.append(element("td", { class: "number" }, String(page.offset + index + 1)));
    row.append(element("td", { class: "number" }, String(item.row + 1)));
    row.append(element("td", { class: "number" }, formatNumber(item.score)));
    row.append(labelCell(state.current.id, item, row));
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
  const words = FILTER_WORDS[state.labelFilter];
  if (page.total) {
    $("page-label").textContent = `Anomalies ${formatNumber(page.offset + 1)}–${formatNumber(last)} of `
      + `${formatNumber(page.total)}${words ? ` ${words}` : ""}`;
  } else {
    $("page-label").textContent = words ? `No anomalies ${words}.` : "No anomalies above the threshold.";
  }
  $("previous-page").disabled = page.offset === 0;
  $("next-page").disabled = last >= page.total;
}

async function downloadResults(format) {
  const message = $("analysis-message");
  say(message, `Preparing the ${format.toUpperCase()} file…`);
  try {
    const filename = await saveFile(datasetPath(state.current.id, `/results?format=${format}`), `results.${format}`);
    say(message, `Downloaded ${filename}.`, "ok");
  } catch (error) {
    say(message, `The download failed: ${error.message}`, "error");
  }
}

// ---------------------------------------------------------------- wiring

function setUp() {
  onSessionEnded(() => signOut(SESSION_ENDED));
  $("sign-in-form").addEventListener("submit", (event) => onSignIn(event, false));
  $("register").addEventListener("click", (event) => onSignIn(event, true));
  $("sign-out").addEventListener("click", () => signOut());
  $("refresh-datasets").addEventListener("click", refreshDatasets);
  $("analyze-form").addEventListener("submit", (event) => {
    event.preventDefault();
    analyse(Number($("percentile").value));
  });
  $("percentile-range").addEventListener("input", () => { $("percentile").value = $("percentile-range").value; });
  $("percentile").addEventListener("input", () => { $("percentile-range").value = $("percentile").value; });
  $("model-choice").addEventListener("change", chooseModel);
  $("previous-page").addEventListener("click", () => showPage(state.offset - PAGE_SIZE));
  $("next-page").addEventListener("click", () => showPage(state.offset + PAGE_SIZE));
  for (const button of [$("download-csv"), $("download-xlsx")]) {
    button.addEventListener("click", () => downloadResults(button.dataset.format));
  }
  $("label-filter").addEventListener("change", filterAnomalies);
  setUpFeedback(analyse);
  setUpTraining(() => state.current);
  setUpModels();
  setUpDropZone();
  let resizing = 0;
  window.addEventListener("resize", () => {
    cancelAnimationFrame(resizing);
    resizing = requestAnimationFrame(() => {
      if (state.histogram && !$("result-body").hidden) drawHistogram($("histogram"), state.histogram);
      redrawLossChart();
    });
  });
  if (token()) {
    api("/api/auth/me").then(enterWorkspace, () => signOut());
  } else {
    show($("sign-in-view"), true);
  }
}

setUp();
