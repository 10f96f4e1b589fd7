// The classify view: images dropped, pasted or picked; one card per image with its thumbnail,
// top-k labels as bars, the model version that answered and the latency, or its error in words.
import { ApiError, errorText, predict } from "./api.js";
import { bytes, el, percent } from "./dom.js";
import { correctionControl } from "./feedback.js";

// One request per image, at most this many at a time: the service batches concurrent requests
// into one forward pass anyway, and a browser holds about six connections per origin.
const PARALLEL = 4;
const thumbnails = new Set(); // object URLs to revoke when the results are cleared

export function setupClassify(context) {
  const section = document.getElementById("view-classify");
  const drop = document.getElementById("drop");
  const input = document.getElementById("files");

  input.addEventListener("change", () => {
    classifyAll(context, [...input.files]);
    input.value = ""; // picking the same files again classifies them again
  });
  section.addEventListener("dragover", (event) => {
    if (![...event.dataTransfer.types].includes("Files")) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    drop.classList.add("over");
  });
  section.addEventListener("dragleave", (event) => {
    if (!section.contains(event.relatedTarget)) drop.classList.remove("over");
  });
  section.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    classifyAll(context, [...event.dataTransfer.files]);
  });
  document.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData?.files ?? [])];
    if (files.length && !section.hidden) classifyAll(context, files);
  });
  document.getElementById("clear").addEventListener("click", () => {
    for (const url of thumbnails) URL.revokeObjectURL(url);
    thumbnails.clear();
    document.getElementById("results").replaceChildren();
    status("");
  });
}

function status(text) {
  document.getElementById("classify-status").textContent = text;
}

/** Cards for every file at once (in the order given), then the requests, PARALLEL at a time. */
async function classifyAll(context, files) {
  if (!files.length) return;
  const results = document.getElementById("results");
  const jobs = files.map((file) => {
    const card = newCard(file);
    results.append(card.element);
    return () => classifyOne(context, file, card);
  });
  let classified = 0;
  let failed = 0;
  status(`Classifying ${plural(files.length)}…`);
  const worker = async () => {
    while (jobs.length) {
      if (await jobs.shift()()) classified += 1;
      else failed += 1;
    }
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL, jobs.length) }, worker));
  // An error is said on its card; the summary must not count it as classified.
  status(failed ? `Classified ${plural(classified)}; ${plural(failed)} could not be classified.`
    : `Classified ${plural(classified)}.`);
}

function plural(count) {
  return `${count} image${count === 1 ? "" : "s"}`;
}

function newCard(file) {
  const url = URL.createObjectURL(file);
  thumbnails.add(url);
  const image = el("img", { class: "thumb", src: url, alt: "" });
  image.addEventListener("error", () => { // the browser cannot show it either
    image.replaceWith(el("span", { class: "thumb broken", text: "no preview" }));
  }, { once: true });
  const outcome = el("div", { class: "outcome", "aria-live": "polite" });
  const element = el("li", { class: "card" },
    el("figure", {}, image, el("figcaption", {},
      el("span", { class: "file-name", text: file.name || "pasted image" }),
      el("span", { class: "muted", text: bytes(file.size) }))),
    outcome);
  return { element, outcome };
}

function topK(context) {
  const value = Number.parseInt(document.getElementById("top-k").value, 10);
  const classes = context.current()?.class_labels.length ?? 10;
  return Math.min(Math.max(Number.isFinite(value) ? value : 3, 1), classes);
}

/** Classify one file into its card; true when it was classified, false on an error. */
async function classifyOne(context, file, card) {
  card.element.setAttribute("aria-busy", "true");
  card.outcome.replaceChildren(el("p", { class: "muted", text: "Classifying…" }));
  try {
    const { answer, requestId, ms } = await predict(file, { topK: topK(context), model: context.selected });
    card.element.dataset.state = "classified";
    card.outcome.replaceChildren(...await answerParts(context, file, answer, requestId, ms));
    return true;
  } catch (error) {
    card.element.dataset.state = "error";
    const retry = el("button", { type: "button", class: "secondary", text: "Try again" });
    retry.addEventListener("click", () => classifyOne(context, file, card));
    const canRetry = !(error instanceof ApiError) || error.status === 503;
    card.outcome.replaceChildren(el("p", { class: "error", role: "alert", text: errorText(error) }));
    if (canRetry) card.outcome.append(retry);
    return false;
  } finally {
    card.element.removeAttribute("aria-busy");
  }
}

async function answerParts(context, file, answer, requestId, ms) {
  const [prediction] = answer.predictions; // one image per request
  const bars = el("ol", { class: "bars", "aria-label": "Labels, best first" },
    ...prediction.top_k.map((entry) => {
      const fill = el("span", { class: "fill" });
      fill.style.width = percent(entry.score, 2); // CSSOM: allowed by style-src 'self'
      return el("li", {},
        el("span", { class: "bar-label", text: entry.label }),
        el("span", { class: "bar", "aria-hidden": "true" }, fill),
        el("span", { class: "bar-score", text: percent(entry.score) }));
    }));
  const meta = el("p", { class: "meta muted" },
    el("span", { class: "answered-by", text: `${answer.model} v${answer.version}` }),
    el("span", { class: "latency", text: `${Math.round(ms)} ms` }));
  const parts = [bars, meta];
  if (context.feedback.enabled) {
    parts.push(await correctionControl(context, { file, answer, prediction, requestId }));
  }
  return parts;
}
