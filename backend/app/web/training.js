// Training a model from the open dataset's rows: the form (and the offer after a 422), then the progress view
// with its loss chart, Cancel, and at the end the report and the validation check.

import { POLL_MS, api, fetchFile, modelPath, trainingPath } from "./api.js";
import { drawLossChart } from "./charts.js";
import { loadedModels, refreshModels } from "./models.js";
import { $, element, formatNumber, percentileProblem, plural, say, show, sleep } from "./ui.js";

// The training this tab follows ({id, filename}), so a reload keeps following it.
const FOLLOWED_KEY = "anomaly.training";
const ENDED = new Set(["trained", "failed", "cancelled"]);
// The service's rule for model names (they become folder names when a model is downloaded).
const MODEL_NAME_PATTERN = /^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$/;
const MAX_EPOCHS = 200;

const followed = {
  training: null, // as last polled
  filename: "", // its dataset's
  watch: 0, // bumped to stop an older poll
  reportUrl: null, // the blob URL of the report shown
};

// A model name from a file name: the service's allowed characters only, never a deployment model's name.
function suggestedName(filename) {
  const name = filename.replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9_.-]+/g, "-").replace(/^\.+/, "").slice(0, 64)
    || "my-model";
  const taken = loadedModels().some((model) => model.kind === "deployment" && model.name === name);
  return taken ? `${name.slice(0, 59)}-mine` : name;
}

export function prepareTrainForm(dataset) {
  $("train-box").open = false;
  show($("train-offer"), false);
  say($("train-message"), "");
  $("train-name").value = suggestedName(dataset.filename);
  const exclude = $("train-exclude");
  exclude.replaceChildren(...dataset.columns.map((column) => element("option", { value: column }, column)));
  exclude.size = Math.min(6, Math.max(2, dataset.columns.length));
}

export function offerTraining(offered) {
  show($("train-offer"), offered);
}

function openTrainForm() {
  const box = $("train-box");
  box.open = true;
  box.scrollIntoView({ block: "nearest" });
  $("train-name").focus();
}

// The training request the form describes, or a sentence saying what to fix.
function trainingRequest(dataset) {
  const name = $("train-name").value.trim();
  const epochs = Number($("train-epochs").value);
  const percentile = Number($("train-percentile").value);
  if (!MODEL_NAME_PATTERN.test(name)) {
    return { problem: "Name the model with 1-64 letters, digits, _, . or - (not starting with .)." };
  }
  if (!Number.isInteger(epochs) || epochs < 1 || epochs > MAX_EPOCHS) {
    return { problem: `Epochs must be a whole number from 1 to ${MAX_EPOCHS}.` };
  }
  const problem = percentileProblem(percentile);
  if (problem) return { problem };
  const excluded = [...$("train-exclude").selectedOptions].map((option) => option.value);
  return {
    body: { dataset_id: dataset.id, name, epochs, threshold_percentile: percentile, exclude_columns: excluded },
  };
}

async function startTraining(dataset) {
  const { body, problem } = trainingRequest(dataset);
  const message = $("train-message");
  if (problem) {
    say(message, problem, "error");
    return;
  }
  let training;
  try {
    training = await api("/api/anomaly/models", { method: "POST", json: body });
  } catch (error) {
    say(message, error.message, "error");
    return;
  }
  say(message, `Training ${training.name}: its progress is shown above.`, "ok");
  show($("train-offer"), false);
  follow(training.training_id, dataset.filename);
  $("training-view").scrollIntoView({ block: "start" });
  $("training-title").focus();
}

function follow(id, filename) {
  sessionStorage.setItem(FOLLOWED_KEY, JSON.stringify({ id, filename }));
  followed.training = null;
  followed.filename = filename;
  showReport(null);
  show($("training-result"), false);
  show($("training-view"), true);
  watchTraining(id);
}

// After a reload: follow the training this tab was following, if any.
export function resumeTraining() {
  try {
    const { id, filename } = JSON.parse(sessionStorage.getItem(FOLLOWED_KEY));
    if (typeof id === "string") follow(id, String(filename ?? ""));
  } catch {
    sessionStorage.removeItem(FOLLOWED_KEY);
  }
}

// Polls the training until it ends, as a script would; a newer watch (or closing) stops it.
async function watchTraining(id) {
  const watch = ++followed.watch;
  for (;;) {
    let training;
    try {
      training = await api(trainingPath(id));
    } catch (error) {
      if (watch !== followed.watch) return;
      say($("training-message"), error.message, "error");
      if (error.status === 404) sessionStorage.removeItem(FOLLOWED_KEY);
      showEnded(true);
      return;
    }
    if (watch !== followed.watch) return;
    renderTraining(training);
    if (!ENDED.has(training.status)) {
      await sleep(POLL_MS);
      continue;
    }
    sessionStorage.removeItem(FOLLOWED_KEY);
    if (training.status === "trained") {
      await refreshModels();
      await showReport(training);
    }
    return;
  }
}

function renderTraining(training) {
  const changed = !followed.training || followed.training.training_id !== training.training_id
    || followed.training.status !== training.status;
  followed.training = training;
  const { progress, parameters } = training;
  const excluded = training.exclude_columns.length ? ` · leaving out ${training.exclude_columns.join(", ")}` : "";
  $("training-title").textContent = `Training ${training.name}`;
  $("training-meta").textContent = `${followed.filename ? `From ${followed.filename} · ` : ""}${parameters.epochs} `
    + `epochs at most · ${parameters.threshold_percentile}th percentile${excluded}`;
  // A trained training's progress stays at the percent its last epoch reached; the bar shows it done.
  $("training-progress").value = training.status === "trained" ? 100 : progress.percent ?? 0;
  $("training-progress-label").textContent = trainingStep(training);
  redrawLossChart();
  showEnded(ENDED.has(training.status));
  if (changed) {
    $("cancel-training").disabled = false;
    say($("training-message"), ...trainingMessage(training));
  }
  show($("training-result"), training.status === "trained");
  if (training.status === "trained") renderTrainedModel(training.result);
}

export function redrawLossChart() {
  const training = followed.training;
  if (!training || $("training-view").hidden) return;
  drawLossChart($("loss-chart"), {
    loss: training.progress.loss || [],
    validation: training.progress.val_loss || [],
    epochs: training.progress.epochs || training.parameters.epochs,
  });
}

function showEnded(ended) {
  show($("cancel-training"), !ended);
  show($("close-training"), ended);
}

function trainingStep(training) {
  const { progress } = training;
  if (training.status === "queued") return "Queued: waiting for a worker…";
  if (training.status === "trained") return `Trained: ${plural(training.result.epochs_run, "epoch")} run`;
  if (ENDED.has(training.status)) return `Ended (${training.status}) after ${plural(progress.epoch ?? 0, "epoch")}`;
  if (!progress.epoch) return `Preparing the rows… ${progress.percent ?? 0}%`;
  const losses = [["loss", progress.loss], ["validation loss", progress.val_loss]]
    .filter(([, values]) => values && values.length)
    .map(([name, values]) => ` · ${name} ${formatNumber(values[values.length - 1])}`);
  return `Epoch ${progress.epoch} of ${progress.epochs}${losses.join("")}`;
}

function trainingMessage(training) {
  switch (training.status) {
    case "queued": return ["Queued: it starts as soon as a worker is free."];
    case "running": return ["Training: you can keep working, the page follows it."];
    case "trained": return [`Trained ${training.name} version ${training.result.version}: analyses of files with `
      + "its columns can use it now.", "ok"];
    case "cancelled": return [training.error || "Cancelled: nothing of it was kept."];
    default: return [`The training failed: ${training.error || "no reason given"}`, "error"];
  }
}

function renderTrainedModel(result) {
  const validation = result.validation;
  $("trained-model").replaceChildren(result.model, element("span", { class: "detail" }, `version ${result.version}`));
  $("trained-threshold").replaceChildren(formatNumber(result.threshold),
    element("span", { class: "detail" }, `${result.threshold_percentile}th percentile`));
  $("trained-features").textContent = formatNumber(result.features.length);
  $("trained-rows").textContent = formatNumber(result.rows_used);
  const check = $("validation-check");
  check.replaceChildren(element("strong", {}, "Validation check: "),
    `${formatNumber(validation.anomaly_count)} of ${plural(validation.row_count, "training row")} flagged `
    + `(${validation.rate_percent}%). ${validation.message}`);
  check.className = `validation ${validation.verdict}`;
}

// The report PNG of a trained version, through a blob URL (``null`` hides it).
async function showReport(training) {
  const image = $("training-report");
  if (followed.reportUrl) URL.revokeObjectURL(followed.reportUrl);
  followed.reportUrl = null;
  image.removeAttribute("src");
  show(image, false);
  if (!training) return;
  const { model, version } = training.result;
  try {
    const { blob } = await fetchFile(modelPath(model, `/report.png?version=${version}`), "report.png");
    if (followed.training !== training) return;
    followed.reportUrl = URL.createObjectURL(blob);
    image.src = followed.reportUrl;
    show(image, true);
  } catch (error) {
    say($("training-message"), `The training report could not be shown: ${error.message}`, "error");
  }
}

async function cancelTraining() {
  const training = followed.training;
  if (!training) return;
  $("cancel-training").disabled = true;
  try {
    renderTraining(await api(trainingPath(training.training_id), { method: "DELETE" }));
    if (followed.training.status === "running") {
      say($("training-message"), "Cancelling: the training stops at the end of its current epoch.");
    }
  } catch (error) {
    $("cancel-training").disabled = false;
    say($("training-message"), error.message, "error");
  }
}

export function closeTraining() {
  followed.watch += 1;
  followed.training = null;
  sessionStorage.removeItem(FOLLOWED_KEY);
  showReport(null);
  show($("training-view"), false);
}

// ``openDataset`` gives the dataset the train form trains from.
export function setUpTraining(openDataset) {
  $("offer-training").addEventListener("click", openTrainForm);
  $("train-form").addEventListener("submit", (event) => {
    event.preventDefault();
    startTraining(openDataset());
  });
  $("cancel-training").addEventListener("click", cancelTraining);
  $("close-training").addEventListener("click", closeTraining);
}
