// Model page: learning curve, per-epoch curve, confusion matrix, reliability diagram, live progress.

import { heatmap, lineChart, reliabilityDiagram, emptyPlot } from "./plots.js";
import { pollProgress } from "./models-progress.js";

const plots = JSON.parse(document.getElementById("model-plots").textContent);

function draw(id, fn) {
  const svg = document.getElementById(id);
  if (!svg) return;
  fn(svg);
  svg.dataset.drawn = "1";
}

draw("learning-curve", (svg) =>
  lineChart(svg, [{ name: "accuracy", points: plots.learning_curve.map((p) => [p.label_count, p.accuracy]) }], {
    xLabel: "labels", yLabel: "held-out accuracy", fmtY: (v) => v.toFixed(2),
  }),
);

draw("epoch-curve", (svg) => {
  if (!plots.epochs.length) return emptyPlot(svg, "no per-epoch history in this version's metrics");
  lineChart(svg, [
    { name: "training loss", points: plots.epochs.map((r) => [r.epoch, r.train_loss]) },
    { name: "held-out loss", cls: "second", points: plots.epochs.map((r) => [r.epoch, r.val_loss]) },
  ], { xLabel: "epoch", yLabel: "loss", fmtY: (v) => v.toFixed(2) });
});

draw("confusion", (svg) => {
  if (!plots.confusion) return emptyPlot(svg, "not measured for this version");
  heatmap(svg, plots.confusion.labels, plots.confusion.matrix);
});

draw("reliability", (svg) => {
  if (!plots.reliability) return emptyPlot(svg, "not measured for this version");
  reliabilityDiagram(svg, plots.reliability);
});

const runs = document.getElementById("training-runs");
// A finished run changes the versions table: reload to show it (keeping the selected version).
pollProgress(runs, { onFinished: () => window.location.reload() });
