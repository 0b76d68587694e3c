// Classify page: the object in its viewer, the decision tree (hotkeys 1-9, Backspace = back),
// the workflow's drawing tools, then Done (Enter). Answers go through a persistent outbox, the next
// subjects are prefetched, and recent classifications can be edited or withdrawn.
// Timing: performance.measure("skyloop:next") spans Done -> the next subject drawn.

import { api, uuid4 } from "./flow/api.js";
import { setUpFieldGuide, setUpTutorial } from "./flow/guides.js";
import { History } from "./flow/history.js";
import { Outbox } from "./flow/outbox.js";
import { Prefetcher } from "./flow/prefetch.js";
import { renderQuestion, TreeWalk } from "./flow/tree.js";
import { createViewer } from "./flow/viewers.js";

const el = (id) => document.getElementById(id);
const root = el("classifier");
const tree = JSON.parse(el("task-tree").textContent);
const marksSpec = tree.marks ?? null;
const maxMarks = marksSpec?.max_marks ?? 50;
const workflowId = Number(root.dataset.workflow);
const workflowUrl = root.dataset.workflowUrl; // /api/workflows/<id>/
const submitUrl = root.dataset.submitUrl; // /api/classifications/
const questionEls = { question: el("question"), help: el("help"), answers: el("answers"), summary: el("summary") };

const walk = new TreeWalk(tree);
let subject = null; // the subject on screen
let startedAt = null;
let editing = null; // the record being edited, or null
let parked = null; // the unfinished new subject, put aside while an earlier one is edited
let busy = false; // between Done and the next subject: answers wait
let viewer = null; // the resolved viewer
let viewerReady = null; // its promise, and the kind it shows
let viewerKind = null;
let presenting = 0; // the latest present() call; older ones stop when they wake
let count = 0;

const outbox = new Outbox(`skyloop:outbox:${workflowId}`, { onDelivered, onRefused, onChange: showOutbox });
const prefetch = new Prefetcher(`${workflowUrl}next/`, {
  excluded: () => [subject?.id, ...unsentSubjectIds()].filter(Boolean),
});
const recent = new History(el("recent-list"), `${workflowUrl}mine/`, {
  describe: (annotation) => walk.describe(annotation),
  onEdit: startEdit,
  onWithdraw: withdraw,
  onRender: () => {
    el("edit-previous").disabled = Boolean(editing) || !recent.latest;
  },
});
const closeGuide = setUpFieldGuide();

// --- showing a subject -------------------------------------------------------------------

async function present(next, saved = null) {
  const token = ++presenting;
  subject = next;
  busy = false;
  walk.reset(saved?.annotation ?? []);
  setExtras(saved);
  showTask();
  el("viewer").hidden = !next;
  root.dataset.subject = next ? String(next.id) : "";
  delete root.dataset.drawn;
  if (!next) {
    el("subject-caption").textContent = "";
    el("question").textContent = "Nothing left for you here: thank you! Come back later for more.";
    root.setAttribute("aria-busy", "false");
    return;
  }
  el("subject-caption").textContent = caption(next);
  startedAt = saved?.startedAt ? new Date(saved.startedAt) : new Date();
  root.setAttribute("aria-busy", "true");
  const shown = await viewerFor(next.kind);
  if (token !== presenting) return;
  shown.clearMarks();
  await shown.load(next);
  if (token !== presenting) return;
  if (saved?.marks?.length) shown.setMarks(saved.marks);
  showMarkCount();
  root.setAttribute("aria-busy", "false");
  root.dataset.drawn = String(next.id);
}

async function viewerFor(kind) {
  if (kind !== viewerKind) {
    viewer?.destroy();
    viewer = null;
    viewerKind = kind;
    viewerReady = createViewer(kind, el("viewer"), { marksSpec, onChange: showMarkCount }).then((v) => {
      viewer = v;
      return v;
    });
  }
  return viewerReady;
}

function caption(s) {
  const where = Number.isFinite(s.ra) && Number.isFinite(s.dec) ? ` · RA ${s.ra.toFixed(4)}°, Dec ${s.dec.toFixed(4)}°` : "";
  return `${s.external_id}${where}`;
}

function currentMarks() {
  return viewer && subject ? viewer.getMarks() : [];
}

// --- the questions -------------------------------------------------------------------------

function showTask() {
  const focusWasInAnswers = questionEls.answers.contains(document.activeElement);
  if (subject) renderQuestion(questionEls, walk, choose);
  else for (const node of Object.values(questionEls)) node.replaceChildren();
  if (walk.finished && subject) {
    questionEls.help.textContent = marksSpec
      ? "Draw your marks if you have not yet, then press Done (Enter)."
      : "Press Done (Enter) to save, or Back to change an answer.";
  }
  el("back").disabled = !subject || walk.path.length === 0;
  refreshDone();
  if (focusWasInAnswers) (questionEls.answers.querySelector("button") ?? el("done")).focus();
}

function refreshDone() {
  el("done").disabled = !subject || !walk.finished || currentMarks().length > maxMarks;
}

function showMarkCount() {
  const n = currentMarks().length;
  el("mark-count").textContent = String(n);
  el("mark-noun").textContent = n === 1 ? "mark" : "marks";
  if (n > maxMarks) say(`At most ${maxMarks} marks per object: please delete ${n - maxMarks}.`);
  refreshDone();
}

function choose(answer) {
  if (busy || !subject || !walk.choose(answer)) return;
  showTask();
  if (walk.finished && !marksSpec && !editing) done(); // nothing to draw: the last answer is Done
}

function back() {
  if (busy || !walk.back()) return;
  showTask();
}

function done() {
  if (busy || !subject || !walk.finished || currentMarks().length > maxMarks) return;
  if (editing) saveEdit();
  else submit();
}

// --- favourite, flag, comment ----------------------------------------------------------------

function extras() {
  return {
    comment: el("comment").value.trim(),
    favourite: el("favourite").getAttribute("aria-pressed") === "true",
    flagged: el("flag").checked,
  };
}

function setExtras(saved) {
  el("comment").value = saved?.comment ?? "";
  el("discuss").open = Boolean(saved?.comment);
  setFavourite(Boolean(saved?.favourite));
  el("flag").checked = Boolean(saved?.flagged);
}

function setFavourite(on) {
  const b = el("favourite");
  b.setAttribute("aria-pressed", String(on));
  b.textContent = on ? "★ Favourite" : "☆ Favourite";
}

// --- submitting, editing, withdrawing -----------------------------------------------------------

function submit() {
  performance.mark("skyloop:done");
  busy = true;
  const record = {
    client_uuid: uuid4(),
    subject,
    annotation: structuredClone(walk.path),
    marks: currentMarks(),
    ...extras(),
    created_at: new Date().toISOString(),
    edited_at: null,
    editable: true,
  };
  const body = {
    workflow: workflowId,
    subject: subject.id,
    client_uuid: record.client_uuid,
    annotation: record.annotation,
    marks: record.marks,
    comment: record.comment,
    favourite: record.favourite,
    flagged: record.flagged,
    started_at: startedAt.toISOString(),
    duration_ms: Date.now() - startedAt.getTime(),
  };
  outbox.add({ id: record.client_uuid, method: "POST", url: submitUrl, body, record });
  recent.add(record);
  setCount(count + 1);
  advance({ timed: true });
}

async function advance({ timed = false } = {}) {
  busy = true;
  let next;
  for (let failures = 0; ; failures++) {
    try {
      next = await prefetch.take();
      break;
    } catch (err) {
      say(`Could not load the next object (${err.message}). Trying again…`);
      await sleep(Math.min(30_000, 1000 * 2 ** failures));
    }
  }
  if (editing) {
    parked = { subject: next }; // the volunteer went back to an earlier one meanwhile
    return;
  }
  await present(next);
  if (timed && next && root.dataset.drawn === String(next.id)) {
    await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
    performance.mark("skyloop:drawn");
    performance.measure("skyloop:next", "skyloop:done", "skyloop:drawn");
  }
}

function startEdit(record) {
  if (!record || record.editable === false || busy) return;
  if (!editing) parked = { subject, annotation: structuredClone(walk.path), marks: currentMarks(), ...extras(), startedAt };
  editing = record;
  recent.setEditing(record.client_uuid);
  el("editing").hidden = false;
  el("editing-text").textContent = `Editing your classification of ${record.subject.external_id}: change answers (Back) or marks, then press Done.`;
  present(record.subject, record);
  el("question").focus();
}

function endEdit() {
  editing = null;
  recent.setEditing(null);
  el("editing").hidden = true;
  const resume = parked;
  parked = null;
  if (resume) present(resume.subject, resume);
  else advance();
}

function saveEdit() {
  const record = editing;
  const changes = { annotation: structuredClone(walk.path), marks: currentMarks(), ...extras() };
  if (!outbox.amend(record.client_uuid, changes)) {
    outbox.add({ id: record.client_uuid, method: "PATCH", url: `${submitUrl}${record.client_uuid}/`, body: changes });
  }
  recent.update(record.client_uuid, changes);
  say(`Your changes to ${record.subject.external_id} are kept.`);
  endEdit();
}

function withdraw(record) {
  if (!outbox.cancel(record.client_uuid)) {
    outbox.add({ id: record.client_uuid, method: "DELETE", url: `${submitUrl}${record.client_uuid}/` });
  }
  recent.remove(record.client_uuid);
  setCount(count - 1);
  say(`Withdrawn: your classification of ${record.subject.external_id}.`);
  if (editing?.client_uuid === record.client_uuid) endEdit();
}

function onDelivered(entry, reply) {
  if (entry.method === "POST") {
    recent.update(entry.id, { pending: false });
    if (reply?.feedback) say(feedbackText(entry.record.subject, reply.feedback));
  } else if (entry.method === "PATCH" && reply) {
    recent.update(entry.id, { ...reply, pending: false });
  }
}

function onRefused(entry) {
  if (entry.method === "POST") {
    recent.remove(entry.id);
    setCount(count - 1);
  } else {
    refreshFromServer(); // an edit or withdrawal was refused: show what the server really holds
  }
}

function refreshFromServer() {
  const unsent = outbox.waiting.filter((e) => e.method === "POST");
  api(`${workflowUrl}me/`)
    .then((progress) => setCount(progress.classified + unsent.length))
    .catch(() => {});
  return recent.load(unsent.map((e) => e.record));
}

function unsentSubjectIds() {
  return outbox.waiting.filter((e) => e.method === "POST").map((e) => e.body.subject);
}

function feedbackText(s, feedback) {
  const expected = feedback.expected.map((e) => e.answer).join(", ");
  const verdict = feedback.correct ? " You agreed: well spotted!" : " Compare with what you saw: it helps next time.";
  return `${s.external_id} was a known object: the experts marked this as ${expected}.${verdict}`;
}

// --- messages ---------------------------------------------------------------------------------

function say(text) {
  el("status").textContent = text;
}

function setCount(n) {
  count = Math.max(0, n);
  el("done-count").textContent = String(count);
}

function showOutbox() {
  const waiting = outbox.waiting.length;
  const refused = outbox.refused;
  root.dataset.waiting = String(waiting);
  const banner = el("outbox-banner");
  const answers = (n) => (n === 1 ? "1 answer" : `${n} answers`);
  if (refused.length) {
    const reasons = [...new Set(refused.map((e) => e.refused))].join("; ");
    el("outbox-message").textContent = `The server refused ${answers(refused.length)} and did not save it: ${reasons}.`;
  } else if (waiting && outbox.lastError) {
    const offline = navigator.onLine === false ? "You are offline" : `Cannot save right now (${outbox.lastError.message})`;
    el("outbox-message").textContent =
      `${offline}. ${answers(waiting)} waiting, kept on this device and sent again automatically.`;
  }
  banner.hidden = !(refused.length || (waiting && outbox.lastError));
  el("outbox-retry").hidden = !(waiting && outbox.lastError);
  el("outbox-dismiss").hidden = !refused.length;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// --- keyboard --------------------------------------------------------------------------------

const TYPING = "textarea, select, [contenteditable], input:not([type=checkbox]):not([type=radio]):not([type=button])";
const NATIVE_ENTER = "button, a, summary, input, textarea, select";

document.addEventListener("keydown", (e) => {
  if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === "Escape") {
    if (!closeGuide() && editing && !document.querySelector("dialog[open]")) endEdit();
    return;
  }
  if (document.querySelector("dialog[open]") || e.target.closest(TYPING)) return;
  if (/^[1-9]$/.test(e.key) && walk.current) {
    e.preventDefault();
    choose(Number(e.key) - 1);
  } else if (e.key === "Backspace") {
    e.preventDefault();
    back();
  } else if (e.key === "Enter" && !e.target.closest(NATIVE_ENTER)) {
    // Also from the viewer's stage after drawing: a viewer that uses Enter itself prevents the default.
    e.preventDefault();
    done();
  }
});

// --- start -----------------------------------------------------------------------------------

function wire() {
  el("back").addEventListener("click", back);
  el("done").addEventListener("click", done);
  el("favourite").addEventListener("click", () => setFavourite(!extras().favourite));
  el("cancel-edit").addEventListener("click", endEdit);
  el("edit-previous").addEventListener("click", () => startEdit(recent.latest));
  el("outbox-retry").addEventListener("click", () => outbox.retryNow());
  el("outbox-dismiss").addEventListener("click", () => outbox.dismissRefused());
  if (marksSpec) {
    el("marks-step").hidden = false;
    el("marks-instruction").textContent = `${marksSpec.instruction ?? "Mark what you see."} Then press Done.`;
  }
}

async function start() {
  wire();
  setUpTutorial(workflowId);
  showOutbox();
  outbox.pump();
  refreshFromServer().catch((err) => {
    recent.render();
    say(`Your recent classifications could not be loaded (${err.message}).`);
  });
  await advance();
}

start();
