// The expert label form: walk the task tree from the first question, one select per question on
// the chosen path, so a scientist can give a complete (or early-stopping) answer path. The form
// posts as usual; each select is a field named "answer", in path order.

const tree = JSON.parse(document.getElementById("task-tree").textContent);
const picker = document.getElementById("path-picker");
const summary = document.getElementById("path-summary");

function select(key, chosen) {
  const task = tree.tasks[key];
  const label = document.createElement("label");
  label.textContent = task.question;
  label.dataset.task = key;
  const box = document.createElement("select");
  box.name = "answer";
  if (key !== tree.first) box.append(new Option("— stop here —", ""));
  task.answers.forEach((answer, i) => box.append(new Option(answer.label, String(i))));
  box.value = chosen ?? (key === tree.first ? "0" : "");
  if (box.selectedIndex < 0) box.selectedIndex = 0;
  box.addEventListener("change", render);
  label.append(box);
  return label;
}

function chosenByTask() {
  return Object.fromEntries([...picker.querySelectorAll("label[data-task]")].map(
    (row) => [row.dataset.task, row.querySelector("select").value]));
}

function render() {
  const previous = chosenByTask();
  picker.replaceChildren();
  let key = tree.first;
  const labels = [];
  while (key) {
    const row = select(key, previous[key]);
    picker.append(row);
    const value = row.querySelector("select").value;
    if (value === "") break;
    const answer = tree.tasks[key].answers[Number(value)];
    labels.push(answer.label);
    key = answer.next ?? null;
  }
  summary.textContent = `Label: ${labels.join(" → ")}${key ? " (stops early: deeper questions keep the crowd's answers)" : ""}`;
}

render();
picker.dataset.ready = "1";

// The subject in the volunteers' viewer (stretch, zoom, pixel readout; spectra with line lists),
// read-only: no drawing tools. The server's preview stays if the viewer cannot load.
async function showSubject() {
  const host = document.getElementById("subject-viewer");
  const subject = JSON.parse(document.getElementById("viewer-subject").textContent);
  try {
    const { createViewer } = await import("../flow/viewers.js");
    const viewer = await createViewer(subject.kind, host, { marksSpec: null, onChange: () => {} });
    await viewer.load(subject);
  } catch (error) {
    console.error("viewer unavailable, keeping the preview", error);
  }
  host.dataset.ready = "1";
}

showSubject();
