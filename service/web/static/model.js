// The model view: the loaded version's metadata (GET /models), its training curves (the
// per-epoch history in that metadata), and its evaluation report on the test split
// (GET /models/{name}/report and its three pictures).
import { ApiError, errorText, getJSON } from "./api.js";
import { drawCurves } from "./curves.js";
import { decimal, el, percent, when } from "./dom.js";

let shown = ""; // "name vN" of what the view shows, so that switching views does not redraw

export async function showModelView(context) {
  const info = context.current();
  const status = document.getElementById("model-status");
  const body = document.getElementById("model-body");
  if (!info) {
    status.textContent = "No model is loaded yet.";
    return;
  }
  const key = `${info.name} v${info.version}`;
  if (shown === key) return;
  shown = key;
  status.textContent = `${key}, loaded ${when(info.loaded_at)}.`;
  const report = el("div", { class: "report" }, el("p", { class: "muted", text: "Loading the report…" }));
  body.replaceChildren(
    el("section", { "aria-labelledby": "meta-title" },
      el("h3", { id: "meta-title", text: "This version" }), metadataList(info)),
    el("section", { "aria-labelledby": "curves-title" },
      el("h3", { id: "curves-title", text: "Training curves" }), drawCurves(info.history)),
    el("section", { "aria-labelledby": "report-title" },
      el("h3", { id: "report-title", text: "Evaluation on the test split" }), report),
  );
  report.replaceChildren(...await reportParts(info));
}

function metadataList(info) {
  const metrics = info.metrics ?? {};
  const input = info.input;
  const rows = [
    ["Name", info.name],
    ["Version", info.version],
    ["Architecture", info.architecture],
    ["Dataset", info.dataset ?? "–"],
    ["Created", when(info.created_at)],
    ["Test accuracy", typeof metrics.test_accuracy === "number"
      ? `${percent(metrics.test_accuracy)} on ${metrics.test_samples ?? "?"} images` : "–"],
    ["Test loss", decimal(metrics.test_loss)],
    ["Validation accuracy", typeof metrics.val_accuracy === "number" ? percent(metrics.val_accuracy) : "–"],
    ["Input", `${input.channels} × ${input.height} × ${input.width} (channels × height × width)`],
    ["Normalisation", `mean ${input.mean.join(", ")}; std ${input.std.join(", ")}`],
    ["Classes", info.class_labels.join(", ")],
    ["Serving", `${info.device}, ${info.precision}`],
    ["Golden set checked at load", info.golden_set ? "yes" : "no (published before golden sets)"],
    ["Weights sha256", info.weights_sha256],
  ];
  return el("dl", { class: "meta-list" },
    ...rows.flatMap(([term, value]) => [el("dt", { text: term }), el("dd", { text: String(value) })]));
}

async function reportParts(info) {
  const base = `/models/${encodeURIComponent(info.name)}/report`;
  let report;
  try {
    report = await getJSON(base);
  } catch (error) {
    const text = error instanceof ApiError && error.status === 404
      ? "This version was published without a report." : errorText(error);
    return [el("p", { class: "error", text })];
  }
  const summary = el("p", {},
    `Accuracy ${percent(report.accuracy)} on ${report.samples} test images; macro F1 ` +
    `${decimal(report.macro?.f1)}; expected calibration error ${decimal(report.calibration?.ece)}.`);
  return [
    summary,
    classTable(report),
    confusionTable(report.confusion),
    el("div", { class: "pictures" },
      figure(`${base}/confusion.png`, "Confusion matrix",
        "Confusion matrix of the test split: true classes in rows, predicted classes in columns."),
      figure(`${base}/reliability.png`, "Reliability diagram",
        "Reliability diagram: the accuracy of the predictions against their confidence."),
      figure(`${base}/mistakes.png`, "The most confident mistakes",
        "A grid of the test images the model got wrong with the most confidence, with true and predicted labels.")),
  ];
}

function scrollable(label, table) {
  // A wide table scrolls on its own on a phone; focusable so that keys can scroll it.
  return el("div", { class: "table-wrap", role: "region", "aria-label": label, tabindex: 0 }, table);
}

function classTable(report) {
  const head = el("tr", {}, ...["Class", "Precision", "Recall", "F1", "Test images"].map(
    (name) => el("th", { scope: "col", text: name })));
  const rows = Object.entries(report.classes).map(([label, row]) => el("tr", {},
    el("th", { scope: "row", text: label }),
    el("td", { text: decimal(row.precision) }), el("td", { text: decimal(row.recall) }),
    el("td", { text: decimal(row.f1) }), el("td", { text: String(row.support) })));
  return scrollable("Per-class metrics", el("table", { class: "numbers per-class" },
    el("caption", { text: "Per class, on the test split" }), el("thead", {}, head), el("tbody", {}, ...rows)));
}

function confusionTable(confusion) {
  if (!confusion?.labels) return null;
  const head = el("tr", {}, el("th", { scope: "col", text: "true \\ predicted" }),
    ...confusion.labels.map((label) => el("th", { scope: "col", text: label })));
  const rows = confusion.matrix.map((counts, i) => el("tr", {},
    el("th", { scope: "row", text: confusion.labels[i] }),
    ...counts.map((count, j) => el("td", { class: i === j ? "diagonal" : count ? "off" : "", text: String(count) }))));
  return el("details", { class: "matrix" }, el("summary", { text: "The confusion matrix as a table" }),
    scrollable("Confusion matrix", el("table", { class: "numbers" }, el("thead", {}, head), el("tbody", {}, ...rows))));
}

function figure(src, caption, alt) {
  const image = el("img", { src, alt });
  // The picture itself opens at full size (small on a phone).
  const figureElement = el("figure", { class: "picture" }, el("a", { href: src }, image),
    el("figcaption", { text: caption }));
  image.addEventListener("error", () => {
    figureElement.replaceChildren(el("p", { class: "error", text: `${caption}: not available for this version.` }));
  }, { once: true });
  return figureElement;
}
