// Analysts' feedback on anomalies: the expected / real anomaly toggles on each row, and the feedback box with
// the counts, the precision and the suggested sensitivity (one click re-analyses at it).

import { api, datasetPath } from "./api.js";
import { $, element, formatNumber, formatPercent, plural, say, show } from "./ui.js";

const LABEL_BUTTONS = [["normal", "expected"], ["anomaly", "real anomaly"]];

const shown = {
  datasetId: null, // whose feedback the box shows
  feedback: null,
  request: 0, // bumped so a slower, older answer is dropped
};

// The table cell with a row's two toggles; pressing the pressed one clears the label.
export function labelCell(datasetId, item, row) {
  const cell = element("td", { class: "label-cell" });
  const group = element("div", { class: "label-buttons", role: "group", "aria-label": `Label row ${item.row + 1}` });
  const view = { row, buttons: [] };
  view.buttons = LABEL_BUTTONS.map(([label, text]) => {
    const button = element("button", { type: "button", class: `toggle small ${label}`, "data-label": label }, text);
    button.addEventListener("click", () => labelRow(datasetId, item, label, view));
    return button;
  });
  group.append(...view.buttons);
  cell.append(group);
  showLabel(item, view);
  return cell;
}

function showLabel(item, { row, buttons }) {
  for (const button of buttons) button.setAttribute("aria-pressed", String(button.dataset.label === item.label));
  row.classList.toggle("labelled-anomaly", item.label === "anomaly");
  row.classList.toggle("labelled-normal", item.label === "normal");
  if (item.note) row.title = `Note: ${item.note}`;
  else row.removeAttribute("title");
}

async function labelRow(datasetId, item, label, view) {
  const wanted = item.label === label ? null : label;
  const message = $("label-message");
  for (const button of view.buttons) button.disabled = true;
  try {
    // The note (set through the API) is sent back so that changing the label keeps it.
    const json = wanted ? { label: wanted, note: item.note ?? null } : { label: null };
    const answer = await api(datasetPath(datasetId, `/rows/${item.row}/label`), { method: "PUT", json });
    item.label = answer.label;
    item.note = answer.note;
    const text = LABEL_BUTTONS.find(([value]) => value === answer.label)?.[1];
    say(message, text ? `Row ${item.row + 1} marked ${text}.` : `Row ${item.row + 1}: label cleared.`, "ok");
  } catch (error) {
    say(message, `Row ${item.row + 1} could not be labelled: ${error.message}`, "error");
  } finally {
    for (const button of view.buttons) button.disabled = false;
    showLabel(item, view);
  }
  await refreshFeedback(datasetId);
}

async function refreshFeedback(datasetId) {
  const request = ++shown.request;
  let feedback;
  try {
    feedback = await api(datasetPath(datasetId, "/feedback"));
  } catch (error) {
    if (request === shown.request) say($("feedback-summary"), error.message, "error");
    return;
  }
  if (request === shown.request && shown.datasetId === datasetId) showFeedback(datasetId, feedback);
}

export function showFeedback(datasetId, feedback) {
  shown.datasetId = datasetId;
  shown.feedback = feedback;
  const labelled = feedback.labelled_anomalies + feedback.labelled_normals;
  show($("feedback-counts"), labelled > 0);
  show($("apply-suggestion"), false);
  say($("feedback-suggestion"), "");
  if (!labelled) {
    say($("feedback-summary"), "Mark flagged rows below as expected or real anomaly: this box then says how many "
      + "flagged rows are real and which sensitivity your labels suggest.");
    return;
  }
  const flagged = feedback.flagged_anomalies + feedback.flagged_normals;
  const percentile = `${feedback.threshold_percentile}th percentile`;
  $("feedback-anomalies").replaceChildren(formatNumber(feedback.labelled_anomalies),
    element("span", { class: "detail" }, `${formatNumber(feedback.flagged_anomalies)} flagged now`));
  $("feedback-normals").replaceChildren(formatNumber(feedback.labelled_normals),
    element("span", { class: "detail" }, `${formatNumber(feedback.flagged_normals)} flagged now`));
  $("feedback-precision").replaceChildren(feedback.precision === null ? "–" : formatPercent(feedback.precision),
    element("span", { class: "detail" }, "of labelled flagged rows are real"));
  say($("feedback-summary"), flagged
    ? `${formatNumber(feedback.flagged_anomalies)} of the ${plural(flagged, "labelled row")} flagged at the `
      + `${percentile} ${feedback.flagged_anomalies === 1 ? "is" : "are"} real.`
    : `None of your ${plural(labelled, "labelled row")} is flagged at the ${percentile}.`);
  const suggestion = feedback.suggestion;
  if (!suggestion) return;
  const suggested = suggestion.threshold_percentile;
  // Suggestions are on the 0.1 grid: the same value there means the labels agree with this threshold.
  if (suggested === Math.round(feedback.threshold_percentile * 10) / 10) {
    say($("feedback-suggestion"), "Your labels agree with the current threshold: keep it.", "ok");
    return;
  }
  say($("feedback-suggestion"), `Your labels suggest the ${suggested}th percentile: it would flag `
    + `${plural(suggestion.rows_flagged, "row")} and get ${formatNumber(suggestion.misclassified_then)} of your `
    + `labelled rows wrong (${formatNumber(suggestion.misclassified_now)} now).`);
  $("apply-suggestion").textContent = `Re-analyse at ${suggested}`;
  show($("apply-suggestion"), true);
}

// ``reanalyse(percentile)`` starts the analysis the suggestion's button asks for.
export function setUpFeedback(reanalyse) {
  $("apply-suggestion").addEventListener("click", () => {
    const suggestion = shown.feedback && shown.feedback.suggestion;
    if (suggestion) reanalyse(suggestion.threshold_percentile);
  });
}
