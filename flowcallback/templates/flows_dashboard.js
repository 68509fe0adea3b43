// The "Flows" dashboard of TensorBoard (flowcallback/tensorboard_plugin.py), an ES module that
// TensorBoard loads in its plugin frame and whose render() it calls. It lists the flowcallback runs
// under the logdir (the plugin's "runs" route; a run that cannot be read is listed with its error)
// and shows the chosen run's page in a frame ("site/<run>/index.html", drawn by the plugin from the
// run loaded with flowcallback's untrusted loader; the page refreshes itself as snapshots land).
// Names and errors come from the run directories: they are set with textContent only.
const LIST_MS = 10000;

export async function render() {
  const doc = document;
  const style = doc.createElement("style");
  style.textContent = [
    "body { font-family: Helvetica, Arial, sans-serif; margin: 0; color: #222; }",
    "#flows-head { padding: 8px 16px; border-bottom: 1px solid #ddd; }",
    "#flows-runs { list-style: none; margin: 4px 0; padding: 0; display: flex; flex-wrap: wrap; gap: 6px 18px; }",
    "#flows-runs .bad { color: #a33; overflow-wrap: anywhere; }",
    "#flows-runs button { font: inherit; cursor: pointer; background: none; border: 1px solid #ccc;",
    "  border-radius: 3px; padding: 2px 8px; }",
    "#flows-runs button.chosen { border-color: #f57c00; background: #fff3e0; font-weight: bold; }",
    "#flows-page { border: 0; width: 100%; height: calc(100vh - 90px); }",
  ].join("\n");
  doc.head.appendChild(style);
  const head = doc.createElement("div");
  head.id = "flows-head";
  const status = doc.createElement("small");
  status.id = "flows-status";
  const list = doc.createElement("ul");
  list.id = "flows-runs";
  head.append(list, status);
  const frame = doc.createElement("iframe");
  frame.id = "flows-page";
  frame.title = "flowcallback run page";
  doc.body.append(head, frame);
  let chosen = null;

  function show(run) {
    chosen = run.path;
    const src = "site/" + run.url;  // the path segments are percent-encoded by the plugin
    if (frame.getAttribute("src") !== src) { frame.setAttribute("src", src); }
    Array.prototype.forEach.call(list.querySelectorAll("button"), (b) => {
      b.classList.toggle("chosen", b.dataset.path === chosen);
    });
  }

  async function refresh() {
    let runs;
    try {
      const r = await fetch("runs", {cache: "no-store", credentials: "same-origin"});
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      runs = await r.json();
    } catch (err) {
      status.textContent = "Cannot list the runs now (" + String(err && err.message || err) + "); retrying.";
      return;
    }
    if (!Array.isArray(runs)) { return; }
    list.replaceChildren();
    runs.forEach((run) => {
      const li = doc.createElement("li");
      const name = String(run.path === "." ? "(the logdir)" : run.path);
      if (run.error) {
        li.className = "bad";
        li.textContent = name + ": cannot be read: " + String(run.error);
      } else {
        const b = doc.createElement("button");
        b.type = "button";
        b.dataset.path = String(run.path);
        b.textContent = name;
        b.addEventListener("click", () => show(run));
        const epochs = Array.isArray(run.epochs) ? run.epochs.length : 0;
        const sets = Array.isArray(run.sets) ? " (held-out sets " + run.sets.map(String).join(", ") + ", compared)" : "";
        li.append(b, doc.createTextNode(" " + String(run.model) + ", " + epochs + " snapshot(s)" + sets));
      }
      list.appendChild(li);
    });
    const good = runs.filter((run) => !run.error);
    status.textContent = runs.length ? "" : "No flowcallback run under the logdir yet (a run is a folder with run.json).";
    const still = good.filter((run) => run.path === chosen);
    if (still.length) { show(still[0]); } else if (good.length) { show(good[0]); }
  }

  await refresh();
  window.setInterval(refresh, LIST_MS);
}
