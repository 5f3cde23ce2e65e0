// The page's charts, inline SVG drawn from the API's numbers: the histogram of scores and the loss per epoch.

import { formatNumber, plural, svg } from "./ui.js";

// Charts are drawn at their container's own width, so their text keeps its size on a phone.
function chartFrame(container, { narrowHeight, wideHeight, margin }) {
  const width = Math.max(280, Math.round(container.clientWidth || 720));
  const height = width < 560 ? narrowHeight : wideHeight;
  const plotWidth = width - margin.left - margin.right;
  const plotHeight = height - margin.top - margin.bottom;
  return { width, height, margin, plotWidth, plotHeight, bottom: margin.top + plotHeight };
}

function chartElement(frame, name, title, description) {
  const chart = svg("svg", {
    viewBox: `0 0 ${frame.width} ${frame.height}`, role: "img", "aria-labelledby": `${name}-title ${name}-desc`,
  });
  chart.append(svg("title", { id: `${name}-title` }, title), svg("desc", { id: `${name}-desc` }, description));
  return chart;
}

// Horizontal grid lines with their values on the left, and the vertical axis's title.
function drawValueAxis(chart, frame, { ticks, y, format, title }) {
  const { margin } = frame;
  for (const tick of ticks) {
    const at = y(tick);
    chart.append(svg("line", { class: "grid", x1: margin.left, x2: frame.width - margin.right, y1: at, y2: at }));
    chart.append(svg("text", { class: "tick", x: margin.left - 6, y: at + 4, "text-anchor": "end" }, format(tick)));
  }
  const middle = margin.top + frame.plotHeight / 2;
  chart.append(svg("text", { class: "axis-label", x: 12, y: middle, "text-anchor": "middle",
    transform: `rotate(-90 12 ${middle})` }, title));
}

// The baseline with its ticks and their values, and the horizontal axis's title.
function drawBaseAxis(chart, frame, { ticks, x, format, title }) {
  const { margin, bottom } = frame;
  chart.append(svg("line", { class: "axis", x1: margin.left, x2: frame.width - margin.right, y1: bottom, y2: bottom }));
  for (const tick of ticks) {
    chart.append(svg("line", { class: "axis", x1: x(tick), x2: x(tick), y1: bottom, y2: bottom + 5 }));
    chart.append(svg("text", { class: "tick", x: x(tick), y: bottom + 18, "text-anchor": "middle" }, format(tick)));
  }
  chart.append(svg("text", { class: "axis-label", x: margin.left + frame.plotWidth / 2, y: frame.height - 4,
    "text-anchor": "middle" }, title));
}

export function drawHistogram(container, histogram) {
  const frame = chartFrame(container, { narrowHeight: 220, wideHeight: 280,
    margin: { top: 26, right: 12, bottom: 40, left: 44 } });
  const { margin, plotWidth, plotHeight, bottom } = frame;
  const { edges, counts, threshold } = histogram;
  const log = histogram.scale === "log";
  const position = log ? Math.log10 : (value) => value;
  const low = position(edges[0]);
  const span = position(edges[edges.length - 1]) - low || 1;
  const x = (value) => margin.left + ((position(value) - low) / span) * plotWidth;
  const maxCount = Math.max(1, ...counts);
  const y = (count) => bottom - (Math.log10(1 + count) / Math.log10(1 + maxCount)) * plotHeight;

  const chart = chartElement(frame, "histogram", "Histogram of anomaly scores",
    `${formatNumber(histogram.row_count)} rows in ${counts.length} bins from ${formatNumber(edges[0])} to `
    + `${formatNumber(edges[edges.length - 1])}; threshold ${formatNumber(threshold)}, `
    + `${formatNumber(histogram.anomaly_count)} rows above it.`);
  drawValueAxis(chart, frame, { ticks: countTicks(maxCount), y, format: formatNumber, title: "rows (log)" });
  counts.forEach((count, index) => {
    if (count === 0) return;
    const left = x(edges[index]);
    const barWidth = Math.max(1, x(edges[index + 1]) - left - 1);
    const top = Math.min(y(count), bottom - 2);
    const bar = svg("rect", {
      class: edges[index] >= threshold ? "bar anomalous" : "bar",
      x: left, y: top, width: barWidth, height: bottom - top,
    });
    bar.append(svg("title", {},
      `${formatNumber(edges[index])} – ${formatNumber(edges[index + 1])}: ${formatNumber(count)} rows`));
    chart.append(bar);
  });
  drawBaseAxis(chart, frame, { ticks: roundTicks(edges[0], edges[edges.length - 1], log), x,
    format: (tick) => formatNumber(tick, 2), title: `anomaly score${log ? " (log scale)" : ""}` });

  const thresholdX = x(threshold);
  chart.append(svg("line", { class: "threshold", x1: thresholdX, x2: thresholdX, y1: margin.top - 6, y2: bottom }));
  const labelRight = thresholdX < margin.left + plotWidth * 0.6;
  chart.append(svg("text", { class: "threshold-label", x: thresholdX + (labelRight ? 6 : -6), y: margin.top - 10,
    "text-anchor": labelRight ? "start" : "end" },
    `threshold ${formatNumber(threshold)} · ${formatNumber(histogram.anomaly_count)} above`));
  container.replaceChildren(chart);
}

// Training and validation loss per epoch, on an epoch axis as long as the training may run, so it fills up.
export function drawLossChart(container, { loss, validation, epochs: most }) {
  const epochs = Math.max(1, most, loss.length);
  const frame = chartFrame(container, { narrowHeight: 200, wideHeight: 240,
    margin: { top: 24, right: 12, bottom: 40, left: 56 } });
  const { margin, plotWidth, plotHeight, bottom } = frame;
  const highest = Math.max(0, ...loss, ...validation) * 1.05 || 1;
  const x = (epoch) => margin.left + (epoch / epochs) * plotWidth;
  const y = (value) => bottom - (value / highest) * plotHeight;

  const latest = (values) => formatNumber(values[values.length - 1]);
  const chart = chartElement(frame, "loss", "Training and validation loss per epoch", loss.length
    ? `${plural(loss.length, "epoch")} of ${epochs}: loss ${latest(loss)}`
      + (validation.length ? `, validation loss ${latest(validation)}.` : ".")
    : "No epoch has finished yet.");
  drawValueAxis(chart, frame, { ticks: roundTicks(0, highest, false), y, format: (tick) => formatNumber(tick, 2),
    title: "loss" });
  drawBaseAxis(chart, frame, { ticks: roundTicks(0, epochs, false).filter(Number.isInteger), x, format: String,
    title: "epoch" });
  for (const [values, name] of [[loss, "loss"], [validation, "val-loss"]]) {
    if (!values.length) continue;
    chart.append(svg("polyline", {
      class: `series ${name}`, points: values.map((value, index) => `${x(index + 1)},${y(value)}`).join(" "),
    }));
    const last = values.length;
    chart.append(svg("circle", { class: `point ${name}`, cx: x(last), cy: y(values[last - 1]), r: 3.5 }));
  }
  const legend = svg("g", { transform: `translate(${frame.width - margin.right - 190} 8)` });
  [["loss", "training"], ["val-loss", "validation"]].forEach(([name, text], index) => {
    legend.append(svg("line", { class: `series ${name}`, x1: index * 100, x2: index * 100 + 22, y1: 6, y2: 6 }));
    legend.append(svg("text", { class: "tick", x: index * 100 + 28, y: 10 }, text));
  });
  chart.append(legend);
  container.replaceChildren(chart);
}

function countTicks(maxCount) {
  const ticks = [];
  for (let tick = 1; tick <= maxCount; tick *= 10) ticks.push(tick);
  return ticks;
}

// Round numbers inside [low, high]: 1-2-5 steps on a log axis (powers of ten when they are many), else linear.
function roundTicks(low, high, log) {
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
