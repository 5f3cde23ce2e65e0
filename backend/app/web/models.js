// The Models panel: the deployment's models (read-only) and the user's own, with their versions and lineage;
// activate (roll back or forward), download, delete. Also the analyse form's choice of model.

import { api, modelPath, saveFile } from "./api.js";
import { $, element, formatDate, formatNumber, plural, say } from "./ui.js";

let models = []; // GET /api/anomaly/models
const openModels = new Set(); // names whose versions the panel shows

export function loadedModels() {
  return models;
}

export async function refreshModels() {
  try {
    models = await api("/api/anomaly/models");
  } catch (error) {
    say($("models-message"), error.message, "error");
    return;
  }
  renderModels();
  renderModelChoice();
}

export function forgetModels() {
  models = [];
  openModels.clear();
  say($("models-message"), "");
  renderModels();
  renderModelChoice();
}

// The model an analysis of a file with ``columns`` would use with the form's choice, for its own percentile.
// The service decides; this only mirrors its rule: the default model if it fits, else the one that fits.
export function expectedModel(columns) {
  const chosen = $("model-choice").value;
  if (chosen) return models.find((model) => model.name === chosen);
  const present = new Set(columns);
  const fitting = models.filter((model) => model.features.every((column) => present.has(column)));
  return fitting.find((model) => model.default) || (fitting.length === 1 ? fitting[0] : undefined)
    || models.find((model) => model.default);
}

function renderModels() {
  $("models").replaceChildren(...models.map(modelItem));
}

// The analyse form's model choice, kept when the list changes.
function renderModelChoice() {
  const select = $("model-choice");
  const chosen = select.value;
  const options = models.map((model) => element("option", { value: model.name }, model.kind === "user"
    ? `${model.name} (yours, version ${model.active_version})` : `${model.name} (deployment)`));
  select.replaceChildren(element("option", { value: "" }, "Automatic"), ...options);
  select.value = models.some((model) => model.name === chosen) ? chosen : "";
}

function modelItem(model) {
  const item = element("li", { "data-name": model.name });
  const details = element("details");
  const summary = element("summary");
  summary.append(element("span", { class: "model-name" }, model.name),
    element("span", { class: `badge ${model.kind}` }, model.kind === "user" ? "yours" : "deployment"));
  if (model.default) summary.append(element("span", { class: "badge default" }, "default"));
  summary.append(element("span", { class: "model-facts hint" }, model.kind === "user"
    ? `version ${model.active_version} active · ${plural(model.versions.length, "version")}`
    : `read-only · ${plural(model.features.length, "column")}`));
  const body = element("div", { class: "model-body" });
  details.append(summary, body);
  if (model.kind === "user") {
    details.addEventListener("toggle", () => {
      if (details.open) {
        openModels.add(model.name);
        showVersions(model.name, body);
      } else {
        openModels.delete(model.name);
      }
    });
    details.open = openModels.has(model.name);
  } else {
    body.append(deploymentFacts(model));
  }
  item.append(details);
  return item;
}

function facts(entries) {
  const list = element("dl", { class: "facts" });
  for (const [term, description] of entries) {
    if (description) list.append(element("dt", {}, term), element("dd", {}, description));
  }
  return list;
}

function droppedText(dropped) {
  return Object.entries(dropped).map(([column, reason]) => `${column} (${reason})`).join(", ");
}

function deploymentFacts(model) {
  const part = element("div");
  const rows = model.training_rows ? ` on ${plural(model.training_rows, "row")}` : "";
  part.append(facts([
    ["Columns", `${model.features.length}: ${model.features.join(", ")}`],
    ["Threshold", `${formatNumber(model.threshold)} (${model.threshold_percentile}th percentile)`],
    ["Trained", `${formatDate(model.trained_at)}${rows}`],
    ["Left out", droppedText(model.dropped_columns)],
    ["Version", model.version],
  ]), element("p", { class: "hint" }, model.default
    ? "Read-only: the deployment's default model, used for files with its columns."
    : "Read-only: one of the deployment's models, shared by every user."));
  return part;
}

async function showVersions(name, body) {
  body.replaceChildren(element("p", { class: "hint" }, "Loading its versions…"));
  let detail;
  try {
    detail = await api(modelPath(name));
  } catch (error) {
    body.replaceChildren(element("p", { class: "message error" }, error.message));
    return;
  }
  const remove = element("button", { type: "button", class: "secondary small danger",
    "aria-label": `Delete model ${name}` }, "Delete model");
  remove.addEventListener("click", () => deleteModel(detail));
  const actions = element("div", { class: "actions" });
  actions.append(remove);
  body.replaceChildren(...[...detail.versions].reverse().map((version) => versionBlock(name, version)), actions);
}

function versionBlock(name, version) {
  const { lineage } = version;
  const parameters = lineage.parameters || {};
  const validation = lineage.validation;
  const block = element("div", { class: version.active ? "version active" : "version" });
  const title = element("h3", {}, `Version ${version.version}`);
  if (version.active) title.append(element("span", { class: "badge active" }, "active"));
  const leftOut = lineage.labelled_anomalies_left_out
    ? `, ${plural(lineage.labelled_anomalies_left_out, "row")} labelled real anomalies left out` : "";
  const seed = parameters.seed === null || parameters.seed === undefined ? "" : `, seed ${parameters.seed}`;
  block.append(title, facts([
    ["Trained from", `${lineage.filename}: ${formatNumber(lineage.rows_used)} of `
      + `${plural(lineage.dataset_rows ?? lineage.rows_used, "row")} used${leftOut}`],
    ["Trained by", `${lineage.trained_by ?? "unknown"}, ${formatDate(lineage.trained_at ?? version.created_at)}`],
    ["Parameters", `${parameters.epochs} epochs at most (${lineage.epochs_run} run), encoding `
      + `${parameters.encoding_dim}, ${parameters.threshold_percentile}th percentile${seed}`],
    ["Left out", [...(lineage.exclude_columns || []), droppedText(version.dropped_columns)].filter(Boolean).join(", ")],
    ["Columns", `${version.features.length}: ${version.features.join(", ")}`],
    ["Validation", validation && `${validation.rate_percent}% of training rows flagged: ${validation.message}`],
    ["Threshold", formatNumber(version.threshold)],
  ]));
  const actions = element("div", { class: "actions" });
  const label = `version ${version.version} of ${name}`;
  if (!version.active) {
    actions.append(actionButton("Activate", `Activate ${label}`, "small",
      () => activateVersion(name, version.version)));
  }
  actions.append(actionButton("Download", `Download ${label}`, "secondary small",
    () => downloadModel(name, version.version)));
  if (!version.active) {
    actions.append(actionButton("Delete version", `Delete ${label}`, "secondary small danger",
      () => deleteVersion(name, version.version)));
  }
  block.append(actions);
  return block;
}

function actionButton(text, label, classes, onClick) {
  const button = element("button", { type: "button", class: classes, "aria-label": label }, text);
  button.addEventListener("click", onClick);
  return button;
}

// Runs a change to a model, then shows the panel afresh with focus back on the model (or the panel).
async function changeModel(name, change, done) {
  const message = $("models-message");
  try {
    await change();
  } catch (error) {
    say(message, error.message, "error");
    return;
  }
  await refreshModels();
  say(message, done, "ok");
  const summary = [...$("models").children].find((item) => item.dataset.name === name)?.querySelector("summary");
  (summary || $("models-title")).focus();
}

function activateVersion(name, version) {
  return changeModel(name,
    () => api(modelPath(name, "/active"), { method: "POST", json: { version } }),
    `Version ${version} of ${name} is active: analyses with ${name} use it now.`);
}

function deleteVersion(name, version) {
  if (!window.confirm(`Delete version ${version} of ${name}? Analyses already done keep their results.`)) return;
  return changeModel(name,
    () => api(modelPath(name, `/versions/${version}`), { method: "DELETE" }),
    `Deleted version ${version} of ${name}.`);
}

function deleteModel(detail) {
  const { name } = detail;
  if (!window.confirm(`Delete the model ${name} and its ${plural(detail.versions.length, "version")}? `
    + "Analyses already done keep their results.")) return;
  openModels.delete(name);
  return changeModel(name, () => api(modelPath(name), { method: "DELETE" }), `Deleted the model ${name}.`);
}

async function downloadModel(name, version) {
  const message = $("models-message");
  say(message, `Preparing ${name} version ${version}…`);
  try {
    const filename = await saveFile(modelPath(name, `/download?version=${version}`), `${name}-v${version}.zip`);
    say(message, `Downloaded ${filename}.`, "ok");
  } catch (error) {
    say(message, `The download failed: ${error.message}`, "error");
  }
}

export function setUpModels() {
  $("refresh-models").addEventListener("click", refreshModels);
}
