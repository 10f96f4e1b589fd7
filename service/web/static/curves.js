// Training curves drawn as inline SVG from the version's per-epoch history (metadata.json
// "history": one record per epoch with train/val loss and accuracy). No chart library.
import { decimal, el, svg } from "./dom.js";

const CHARTS = [
  { title: "Loss", series: [["train_loss", "training"], ["val_loss", "validation"]] },
  { title: "Accuracy", series: [["train_accuracy", "training"], ["val_accuracy", "validation"]], unit: true },
];
const WIDTH = 360;
const HEIGHT = 220;
const PAD = { left: 44, right: 12, top: 12, bottom: 34 };

/** The charts of `history`, or a sentence saying there is none. */
export function drawCurves(history) {
  if (!Array.isArray(history) || history.length === 0) {
    return el("p", { class: "muted", text: "No training history is available for this version." });
  }
  const charts = CHARTS
    .filter((chart) => chart.series.some(([key]) => history.some((record) => typeof record[key] === "number")))
    .map((chart) => lineChart(history, chart));
  return el("div", { class: "curves" }, ...charts, numbersTable(history));
}

function lineChart(history, { title, series, unit }) {
  const epochs = history.map((record, i) => record.epoch ?? i + 1);
  const values = series.flatMap(([key]) => history.map((record) => record[key])).filter(Number.isFinite);
  let low = Math.min(...values);
  let high = Math.max(...values);
  if (unit) [low, high] = [Math.min(low, 0), Math.max(high, 1)];
  if (high === low) high = low + 1;
  const [first, last] = [epochs[0], epochs[epochs.length - 1]];
  const x = (epoch) => PAD.left + (last === first ? 0.5 : (epoch - first) / (last - first)) *
    (WIDTH - PAD.left - PAD.right);
  const y = (value) => HEIGHT - PAD.bottom - ((value - low) / (high - low)) * (HEIGHT - PAD.top - PAD.bottom);

  const chart = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", class: "chart",
    "aria-label": `${title} per epoch: ${series.map(([, name]) => name).join(" and ")}`,
  });
  for (let i = 0; i <= 4; i += 1) { // horizontal grid lines with their values
    const value = low + ((high - low) * i) / 4;
    chart.append(
      svg("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(value), y2: y(value), class: "grid" }),
      svg("text", { x: PAD.left - 6, y: y(value) + 4, "text-anchor": "end", class: "tick", text: decimal(value, 2) }));
  }
  const step = Math.max(1, Math.ceil(epochs.length / 8));
  epochs.forEach((epoch, i) => {
    if (i % step === 0 || i === epochs.length - 1) {
      chart.append(svg("text", { x: x(epoch), y: HEIGHT - PAD.bottom + 16, "text-anchor": "middle",
        class: "tick", text: String(epoch) }));
    }
  });
  chart.append(svg("text", { x: (PAD.left + WIDTH - PAD.right) / 2, y: HEIGHT - 4, "text-anchor": "middle",
    class: "axis", text: "epoch" }));
  series.forEach(([key], index) => {
    const points = history.map((record, i) => [epochs[i], record[key]]).filter(([, v]) => Number.isFinite(v));
    if (!points.length) return;
    const kind = `series-${index}`;
    chart.append(svg("polyline", { points: points.map(([e, v]) => `${x(e)},${y(v)}`).join(" "), class: `line ${kind}` }));
    for (const [e, v] of points) chart.append(svg("circle", { cx: x(e), cy: y(v), r: 2.5, class: `dot ${kind}` }));
  });
  const legend = el("p", { class: "legend" }, ...series.map(([, name], index) =>
    el("span", { class: `key series-${index}`, text: name })));
  return el("figure", { class: "chart-figure" }, chart, el("figcaption", {}, el("strong", { text: title }), legend));
}

function numbersTable(history) {
  const keys = ["epoch", "train_loss", "val_loss", "train_accuracy", "val_accuracy", "lr"]
    .filter((key) => history.some((record) => record[key] !== undefined));
  const head = el("tr", {}, ...keys.map((key) => el("th", { scope: "col", text: key.replace("_", " ") })));
  const cell = (key, value) => {
    if (typeof value !== "number") return "–";
    if (key === "epoch") return String(value);
    return key === "lr" ? value.toExponential(2) : decimal(value, 4);
  };
  const rows = history.map((record) => el("tr", {},
    ...keys.map((key) => el("td", { text: cell(key, record[key]) }))));
  return el("details", { class: "history" }, el("summary", { text: "The numbers" }),
    el("div", { class: "table-wrap", role: "region", "aria-label": "History per epoch", tabindex: 0 },
      el("table", { class: "numbers" }, el("thead", {}, head), el("tbody", {}, ...rows))));
}
