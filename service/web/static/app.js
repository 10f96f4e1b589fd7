// The page's entry: what the service serves (GET /models), whether corrections are possible
// (GET /web/config), and the two views, #classify and #model, switched by the URL's hash.
import { errorText, getJSON } from "./api.js";
import { setupClassify } from "./classify.js";
import { showModelView } from "./model.js";
import { percent } from "./dom.js";

const context = {
  models: new Map(), // name -> the /models entry of the version loaded now
  selected: null, // the model name the page uses (the default one unless picked)
  feedback: { enabled: false, detail: "" },

  /** The /models entry of the selected model, or null while none is loaded. */
  current() {
    return this.models.get(this.selected) ?? null;
  },

  /** Reads /models again (at start, and when an answer names a version the page does not
   * know: the service swapped models). */
  async refreshModels() {
    const body = await getJSON("/models");
    this.models = new Map(body.models.map((info) => [info.name, info]));
    if (!this.models.has(this.selected)) {
      this.selected = body.models.find((info) => info.default)?.name ?? body.models[0]?.name ?? null;
    }
    renderModelLine(body.waiting_for);
    renderModelPicker();
    return body;
  },
};

function renderModelLine(waiting) {
  const line = document.getElementById("model-line");
  const info = context.current();
  if (!info) {
    line.textContent = waiting?.length
      ? `No model loaded yet (waiting for ${waiting.join(", ")}); asking again in a moment…`
      : "This service serves no model.";
    return;
  }
  const accuracy = info.metrics?.test_accuracy;
  line.textContent = `${info.name} v${info.version} · ${info.architecture} · ` +
    `${info.class_labels.length} classes` +
    (typeof accuracy === "number" ? ` · test accuracy ${percent(accuracy)}` : "");
}

function renderModelPicker() {
  const pick = document.getElementById("model-pick");
  const select = document.getElementById("model-select");
  pick.hidden = context.models.size < 2;
  select.replaceChildren(...[...context.models.keys()].map((name) => new Option(name, name)));
  if (context.selected) select.value = context.selected;
}

function showView() {
  const view = location.hash === "#model" ? "model" : "classify";
  for (const section of document.querySelectorAll(".view")) {
    section.hidden = section.id !== `view-${view}`;
  }
  for (const link of document.querySelectorAll("nav a[data-view]")) {
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (view === "model") showModelView(context);
}

async function start() {
  window.addEventListener("hashchange", () => {
    showView();
    document.getElementById("main").focus({ preventScroll: true });
  });
  document.getElementById("model-select").addEventListener("change", (event) => {
    context.selected = event.target.value;
    renderModelLine([]);
    showView();
  });
  setupClassify(context);
  showView();
  try {
    context.feedback = await getJSON("/web/config").then((config) => ({
      enabled: config.feedback, detail: config.feedback_detail ?? "",
    }));
  } catch (error) {
    context.feedback = { enabled: false, detail: errorText(error) };
  }
  // Until a model is loaded (a service just started), ask again every two seconds.
  for (;;) {
    try {
      await context.refreshModels();
      if (context.current()) break;
    } catch (error) {
      document.getElementById("model-line").textContent = errorText(error);
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
  document.body.dataset.ready = "true";
  showView();
}

start();
