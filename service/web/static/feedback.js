// "Correct this": the true label of a classified image, sent to POST /feedback. The token is
// asked for once, kept in this tab's session storage, and sent as a header, never in a URL.
import { ApiError, errorText, sendFeedback } from "./api.js";
import { el } from "./dom.js";

const TOKEN_KEY = "imgclf.feedback-token";

/** The control under a classified image: a label picker and a send button in a <details>. */
export async function correctionControl(context, { file, answer, prediction, requestId }) {
  const labels = await labelsOf(context, answer);
  const select = el("select", { name: "label" }, ...labels.map((label) => new Option(label, label)));
  select.value = prediction.label;
  const send = el("button", { type: "submit", text: "Send the correction" });
  const result = el("p", { class: "muted", role: "status" });
  const form = el("form", { class: "correct-form" },
    el("label", {}, "True label ", select), send, result);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    send.disabled = true;
    try {
      result.textContent = await correct(file, {
        label: select.value, model: answer.model, requestId,
      });
    } finally {
      send.disabled = false;
    }
  });
  return el("details", { class: "correct" }, el("summary", { text: "Correct this" }), form);
}

/** The class labels of the version that answered: /models again if the service swapped. */
async function labelsOf(context, answer) {
  let info = context.models.get(answer.model);
  if (!info || info.version !== answer.version) {
    try {
      await context.refreshModels();
    } catch {
      // keep what the page has: the label check of /feedback has the last word anyway
    }
    info = context.models.get(answer.model);
  }
  return info?.class_labels ?? [answer.predictions[0].label];
}

/** Sends one correction; returns what to tell the person. A refused token is asked again. */
async function correct(file, { label, model, requestId }) {
  let problem = "";
  for (;;) {
    const token = await feedbackToken(problem);
    if (!token) return "Not sent: corrections need the feedback token.";
    try {
      const { status, body } = await sendFeedback(file, { label, model, requestId, token });
      const stored = body.images?.[0]?.label ?? label;
      if (status === 201) return `Thanks: stored as “${stored}” for the next training run.`;
      return `Already in the store as “${stored}”: nothing new to learn.`;
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 401) return errorText(error);
      sessionStorage.removeItem(TOKEN_KEY);
      problem = "The service refused that token: check it and enter it again.";
    }
  }
}

/** The token of this tab, or asks for it in the dialog (null when the person cancels). */
function feedbackToken(problem = "") {
  const kept = sessionStorage.getItem(TOKEN_KEY);
  if (kept) return Promise.resolve(kept);
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token");
  const note = document.getElementById("token-problem");
  note.hidden = !problem;
  note.textContent = problem;
  input.value = "";
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const token = input.value.trim();
      input.value = "";
      if (dialog.returnValue === "save" && token) {
        sessionStorage.setItem(TOKEN_KEY, token);
        resolve(token);
      } else {
        resolve(null);
      }
    }, { once: true });
    dialog.showModal();
  });
}
