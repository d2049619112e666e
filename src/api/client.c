/* GET /: a small page to try the API from a browser: create a sleep job and
 * watch its events stream in. */
#include <string.h>

#include "api/api.h"

static const char page[] =
    "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
    "<title>datasphere</title>"
    "<style>body{font:15px system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}"
    "pre{background:#f4f4f4;padding:.75rem;overflow:auto;max-height:24rem}</style></head>\n"
    "<body><h1>datasphere</h1>\n"
    "<p>Create a <code>sleep</code> job and follow it over Server-Sent Events.</p>\n"
    "<form id=\"f\"><label>steps <input id=\"steps\" type=\"number\" value=\"5\" min=\"0\"></label>"
    " <label>step ms <input id=\"ms\" type=\"number\" value=\"300\" min=\"0\"></label>"
    " <button>Start job</button></form>\n"
    "<p id=\"status\">no job yet</p><pre id=\"log\"></pre>\n"
    "<script>\n"
    "const log = (t) => { document.getElementById('log').textContent += t + '\\n'; };\n"
    "document.getElementById('f').onsubmit = async (e) => {\n"
    "  e.preventDefault();\n"
    "  const body = {type: 'sleep', input: {steps: +steps.value, step_ms: +ms.value}};\n"
    "  const r = await fetch('/v1/jobs', {method: 'POST', body: JSON.stringify(body),\n"
    "    headers: {'Content-Type': 'application/json'}});\n"
    "  const job = await r.json();\n"
    "  if (!r.ok) { log('error: ' + job.detail); return; }\n"
    "  document.getElementById('status').textContent = job.id + ': ' + job.status;\n"
    "  const es = new EventSource(job.links.events);\n"
    "  for (const name of ['snapshot', 'status', 'progress', 'token', 'result', 'error'])\n"
    "    es.addEventListener(name, (m) => {\n"
    "      const d = JSON.parse(m.data);\n"
    "      log(name + ' #' + m.lastEventId + ' ' + m.data);\n"
    "      if (d.status) document.getElementById('status').textContent = job.id + ': ' + "
    "d.status;\n"
    "      if (name === 'result' || name === 'error') es.close();\n"
    "    });\n"
    "};\n"
    "</script></body></html>\n";

void client_page(struct http_request *req)
{
    http_add_header(req, "Cache-Control", "no-cache");
    http_send(req, 200, "text/html; charset=utf-8", page, sizeof page - 1);
}
