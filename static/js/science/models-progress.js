// Live training progress: polls the workflow's progress.json every 2 s and redraws its bars.
// The server also renders the bars, so the page shows them before the first poll (or without JS).

const INTERVAL_MS = 2000;

function duration(seconds) {
  const s = Math.round(seconds);
  if (s >= 3600) return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
  if (s >= 60) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  return `${s} s`;
}

export function describe(run) {
  const parts = [`${Math.round(100 * run.progress)}%`];
  if (run.phase) parts.push(run.phase);
  if (run.epoch !== null) parts.push(`epoch ${run.epoch}${run.epochs ? `/${run.epochs}` : ""}`);
  if (run.step !== null && run.epoch === null) parts.push(`step ${run.step}`);
  if (run.eta_s !== null) parts.push(`about ${duration(run.eta_s)} left`);
  return parts.join(" · ");
}

function runNode(run) {
  const node = document.createElement("div");
  node.className = "training-run";
  node.dataset.version = run.number;
  node.innerHTML = `<span></span><div class="progress" role="progressbar" aria-valuemin="0" aria-valuemax="100">
    <div class="bar"></div></div><span class="run-detail"></span>`;
  return node;
}

function render(container, runs) {
  const seen = new Set();
  for (const run of runs) {
    seen.add(String(run.number));
    let node = container.querySelector(`.training-run[data-version="${run.number}"]`);
    if (!node) {
      container.querySelector(".idle")?.remove();
      node = container.appendChild(runNode(run));
    }
    node.dataset.status = run.status;
    node.children[0].textContent = `v${run.number} ${run.status}`;
    const percent = Math.round(100 * run.progress);
    node.querySelector(".progress").setAttribute("aria-valuenow", percent);
    node.querySelector(".bar").style.width = `${percent}%`;
    node.querySelector(".run-detail").textContent = describe(run);
  }
  for (const node of container.querySelectorAll(".training-run")) {
    if (!seen.has(node.dataset.version)) node.remove();
  }
  if (!runs.length && !container.querySelector(".idle")) {
    container.insertAdjacentHTML("beforeend", '<p class="idle">No training in progress.</p>');
  }
}

// Polls while the page is open, every `intervalMs` while a run is in progress and every `idleMs`
// otherwise; `onFinished(numbers)` runs when versions leave the in-progress list.
export function pollProgress(container, { onFinished = () => {}, intervalMs = INTERVAL_MS, idleMs = INTERVAL_MS } = {}) {
  const url = container.dataset.progressUrl;
  let running = new Set([...container.querySelectorAll(".training-run")].map((n) => n.dataset.version));
  async function tick() {
    try {
      const res = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (res.ok) {
        const data = await res.json();
        render(container, data.versions);
        const now = new Set(data.versions.map((v) => String(v.number)));
        const finished = [...running].filter((n) => !now.has(n));
        running = now;
        container.dataset.polls = String(Number(container.dataset.polls || 0) + 1);
        if (finished.length) onFinished(finished, data);
      }
    } catch {
      // Offline for a moment: the next tick tries again.
    }
    setTimeout(tick, running.size ? intervalMs : idleMs);
  }
  setTimeout(tick, running.size ? intervalMs : idleMs);
}
