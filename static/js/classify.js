// Classify page: show the next subject, walk the decision tree, submit, repeat.
// Answers have hotkeys 1-9; Backspace goes back one question.

const root = document.getElementById("classifier");
const tree = JSON.parse(document.getElementById("task-tree").textContent);
const csrf = document.querySelector("[name=csrfmiddlewaretoken]").value;
const el = (id) => document.getElementById(id);

let subject = null;
let path = [];          // [{task, answer}]
let startedAt = null;
let done = 0;
let busy = false;

function currentTask() {
  let key = tree.first;
  for (const step of path) key = tree.tasks[step.task].answers[step.answer].next;
  return key;           // null when the tree has ended
}

function showSubject(next) {
  subject = next;
  path = [];
  if (!subject) {
    el("subject-image").removeAttribute("src");
    el("question").textContent = "Nothing left for you here: thank you!";
    el("answers").replaceChildren();
    el("help").textContent = "";
    return;
  }
  el("subject-image").src = subject.preview_url;
  el("subject-caption").textContent = subject.external_id;
  startedAt = new Date();
  showTask();
}

function showTask() {
  const key = currentTask();
  el("back").disabled = path.length === 0;
  if (key === null) return submit();
  const task = tree.tasks[key];
  el("question").textContent = task.question;
  el("help").textContent = task.help || "";
  const buttons = task.answers.map((answer, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "answer";
    b.dataset.answer = i;
    b.innerHTML = `<kbd>${i + 1}</kbd> `;
    b.append(answer.label);
    b.addEventListener("click", () => choose(key, i));
    return b;
  });
  el("answers").replaceChildren(...buttons);
}

function choose(task, answer) {
  if (busy || !subject) return;
  path.push({ task, answer });
  showTask();
}

async function submit() {
  busy = true;
  el("status").textContent = "Saving…";
  const body = {
    workflow: Number(root.dataset.workflow),
    subject: subject.id,
    client_uuid: crypto.randomUUID(),
    annotation: path,
    started_at: startedAt.toISOString(),
    duration_ms: Date.now() - startedAt.getTime(),
    flagged: el("flag").checked,
  };
  try {
    const reply = await postWithRetry(body);
    done += 1;
    el("done-count").textContent = done;
    el("flag").checked = false;
    el("status").textContent = feedbackText(reply.feedback);
    showSubject(reply.next);
  } catch (err) {
    el("status").textContent = `Could not save: ${err.message}. Your answers are kept; press an answer to retry.`;
    path.pop();
    showTask();
  } finally {
    busy = false;
  }
}

function feedbackText(feedback) {
  if (!feedback) return "Saved. Thank you!";
  if (feedback.correct) return "Saved. That one was a known object, and you got it right!";
  const expected = feedback.expected.map((e) => e.answer).join(" → ");
  return `Saved. That one was a known object: experts say ${expected}.`;
}

async function postWithRetry(body, attempts = 3) {
  // The same client_uuid on every attempt: the server stores it once.
  for (let i = 1; ; i++) {
    try {
      const res = await fetch(root.dataset.submitUrl, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
        body: JSON.stringify(body),
      });
      const data = await res.json();
      if (!res.ok) {
        const err = new Error(data.error ? data.error.message : res.statusText);
        err.final = res.status < 500;  // the server refused it: retrying cannot help
        throw err;
      }
      return data;
    } catch (err) {
      if (i >= attempts || err.final || err instanceof SyntaxError) throw err;
      await new Promise((r) => setTimeout(r, 400 * i));
    }
  }
}

async function loadNext() {
  const [next, progress] = await Promise.all([
    fetch(root.dataset.nextUrl).then((r) => r.json()),
    fetch(root.dataset.progressUrl).then((r) => r.json()),
  ]);
  done = progress.classified;
  el("done-count").textContent = done;
  showSubject(next.subject);
}

el("back").addEventListener("click", () => { path.pop(); showTask(); });
document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT") return;
  const n = Number(e.key);
  const key = currentTask();
  if (n >= 1 && n <= 9 && key && n <= tree.tasks[key].answers.length) choose(key, n - 1);
  if (e.key === "Backspace" && path.length) { path.pop(); showTask(); }
});

loadNext();
