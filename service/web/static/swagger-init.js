// Starts Swagger UI on /schema from the vendored bundle (a file, not an inline script, so that
// the page's Content-Security-Policy needs no 'unsafe-inline'). The schema URL comes from the
// page, and so does the order of its sections; no validator badge (it would call
// validator.swagger.io).
const root = document.getElementById("swagger-ui");
const order = root.dataset.tagOrder.split(" ");
const rank = (tag) => (order.includes(tag) ? order.indexOf(tag) : order.length);
window.ui = SwaggerUIBundle({
  url: root.dataset.specUrl,
  domNode: root,
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  tagsSorter: (a, b) => rank(a) - rank(b) || a.localeCompare(b),
});
