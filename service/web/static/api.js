// Calls to the service's HTTP API (the same one every client uses, docs/api.md) and its errors
// put into words for people.

/** An answer other than 2xx: the status, the JSON error body when there is one, Retry-After. */
export class ApiError extends Error {
  constructor(status, body, retryAfter) {
    super(describe(status, body, retryAfter));
    this.status = status;
    this.body = body;
    this.retryAfter = retryAfter;
  }
}

/** GET a JSON document; throws ApiError (or a TypeError when the service cannot be reached). */
export async function getJSON(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  return readJSON(response);
}

/** The JSON body of a 2xx answer; throws ApiError for any other. */
export async function readJSON(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null; // a proxy's HTML error page, an empty body
  }
  if (!response.ok) {
    throw new ApiError(response.status, body, response.headers.get("Retry-After"));
  }
  return body;
}

/** POST /predict with one image file: {answer, requestId, ms}. One request per image, so that
 * each image gets its own answer, error and latency (the API refuses a whole request for one
 * bad image). */
export async function predict(file, { topK, model }) {
  const query = new URLSearchParams({ top_k: String(topK) });
  if (model) query.set("model", model);
  const form = new FormData();
  form.append("file", file, file.name || "image");
  const started = performance.now();
  const response = await fetch(`/predict?${query}`, { method: "POST", body: form });
  const answer = await readJSON(response);
  return { answer, requestId: response.headers.get("X-Request-ID"), ms: performance.now() - started };
}

/** POST /feedback: the file with its true label (multipart), the request id of the answer it
 * corrects, and the token as a bearer header. */
export async function sendFeedback(file, { label, model, requestId, token }) {
  const query = new URLSearchParams();
  if (model) query.set("model", model);
  const form = new FormData();
  form.append("file", file, file.name || "image");
  form.append("label", label);
  if (requestId) form.append("request_id", requestId);
  const response = await fetch(`/feedback?${query}`, {
    method: "POST", body: form, headers: { Authorization: `Bearer ${token}` },
  });
  return { status: response.status, body: await readJSON(response) };
}

/** A sentence a person can act on, from the API's JSON error (docs/api.md#errors). */
export function describe(status, body, retryAfter) {
  const problem = body?.problems?.[0];
  const detail = problem?.detail || body?.detail || "";
  const code = body?.error || "";
  switch (status) {
    case 413:
      return `Too large for this service: ${detail || "the file is over its size limit."}`;
    case 415:
      return `Not a format this service reads: ${detail}`;
    case 422:
      if (code === "invalid_image") return `Not an image the service can read: ${detail}`;
      return detail || "The service could not use this.";
    case 503: {
      const wait = retryAfter ? ` Try again in ${retryAfter} s.` : " Try again shortly.";
      if (code === "model_not_ready") return `The model is still loading.${wait}`;
      if (code === "overloaded") return `The service is busy.${wait}`;
      return `${detail || "The service is unavailable."}${wait}`;
    }
    default:
      return detail ? `${detail} (HTTP ${status})` : `The service answered HTTP ${status}.`;
  }
}

/** The words for anything a call threw: an ApiError's sentence, or an unreachable service. */
export function errorText(error) {
  if (error instanceof ApiError) return error.message;
  return `Could not reach the service (${error.message}). Is it running?`;
}
