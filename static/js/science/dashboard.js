// Project dashboard: classifications-per-hour bars and live training bars per workflow.

import { barChart } from "./plots.js";
import { pollProgress } from "./models-progress.js";

const charts = JSON.parse(document.getElementById("charts").textContent);

for (const svg of document.querySelectorAll("svg[data-chart]")) {
  const hours = charts[svg.dataset.chart] ?? [];
  const values = hours.map(({ t, n }) => {
    const hour = new Date(t);
    return { label: `${String(hour.getHours()).padStart(2, "0")}h`, value: n, when: hour };
  });
  barChart(svg, values, { labelEvery: 6, title: (d) => `${d.when.toLocaleString()}: ${d.value} classifications` });
  svg.dataset.drawn = "1";
}

for (const container of document.querySelectorAll(".training-runs[data-progress-url]")) {
  // A dashboard stays open for hours: poll slowly until a training starts.
  pollProgress(container, { idleMs: 10_000, onFinished: () => window.location.reload() });
}
