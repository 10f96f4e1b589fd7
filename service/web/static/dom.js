// Small DOM helpers. Text always goes in as text (textContent), never as HTML, and no element
// gets a style attribute: the Content-Security-Policy allows neither inline styles nor scripts.

/** An element: `el("p", { class: "muted", text: "hi" }, child, ...)`; attributes other than
 * `class` and `text` are set as attributes, `null`/`false` ones skipped. */
export function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") element.className = value;
    else if (name === "text") element.textContent = value;
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  element.append(...children.filter((child) => child !== null && child !== undefined));
  return element;
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** An SVG element with its attributes. */
export function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") element.textContent = value;
    else element.setAttribute(name, String(value));
  }
  element.append(...children);
  return element;
}

/** 0.9731 -> "97.3%". */
export function percent(value, digits = 1) {
  return `${(value * 100).toFixed(digits)}%`;
}

/** A number for a table cell: three decimals, or a dash when missing. */
export function decimal(value, digits = 3) {
  return typeof value === "number" ? value.toFixed(digits) : "–";
}

/** 1536 -> "1.5 KiB". */
export function bytes(count) {
  if (count < 1024) return `${count} B`;
  if (count < 1024 * 1024) return `${(count / 1024).toFixed(1)} KiB`;
  return `${(count / 1024 / 1024).toFixed(1)} MiB`;
}

/** An ISO date as the reader's local date and time, or the text itself if it is not one. */
export function when(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso ?? "–") : date.toLocaleString();
}
