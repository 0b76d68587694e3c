// The review queue by keyboard and without reloads: j/k move between cards, 1-9 label the focused
// card with that answer of the first question, a/b/c set its grade, o opens the subject page.
// A label is POSTed to the API; the card leaves and the next one takes the focus.

const queue = document.getElementById("review-queue");
const status = document.getElementById("review-status");

function csrfToken() {
  return document.querySelector("[name=csrfmiddlewaretoken]")?.value ?? "";
}

function cards() {
  return [...queue.querySelectorAll(".review-card:not(.done)")];
}

function currentCard() {
  return document.activeElement?.closest?.(".review-card:not(.done)") ?? null;
}

function focusCard(card) {
  if (card) {
    card.focus();
    card.scrollIntoView({ block: "nearest" });
  }
}

function move(step) {
  const all = cards();
  const index = all.indexOf(currentCard());
  focusCard(all[Math.max(0, Math.min(all.length - 1, index + step))] ?? all[0]);
}

async function label(card, answer) {
  const form = card.querySelector("form.override");
  const grade = form.querySelector("input[name=grade]:checked")?.value ?? "";
  const buttons = form.querySelectorAll("button");
  const note = card.querySelector(".card-status");
  buttons.forEach((b) => { b.disabled = true; });
  note.textContent = "";
  try {
    const response = await fetch(card.dataset.apiUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify({ annotation: [{ task: queue.dataset.root, answer }], grade }),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error?.message ?? `the server answered ${response.status}`);
    const next = cards()[cards().indexOf(card) + 1] ?? cards()[cards().indexOf(card) - 1];
    card.classList.add("done");
    card.hidden = true;
    status.textContent = `Subject ${card.dataset.subject} labelled “${answerLabel(form, answer)}”${grade ? ` (grade ${grade})` : ""}.`;
    queue.dataset.labelled = String(Number(queue.dataset.labelled ?? 0) + 1);
    if (next) focusCard(next);
    else status.textContent += " Nothing left on this page.";
  } catch (error) {
    note.textContent = `Not labelled: ${error.message}`;
    buttons.forEach((b) => { b.disabled = false; });
  }
}

function answerLabel(form, answer) {
  const button = form.querySelector(`button[value="${answer}"]`);
  return button ? button.textContent.replace(/^\s*\d+\s*/, "").trim() : String(answer);
}

queue.addEventListener("submit", (event) => {
  const card = event.target.closest(".review-card");
  const answer = event.submitter?.value;
  if (!card || answer === undefined) return; // let the browser post the form
  event.preventDefault();
  label(card, Number(answer));
});

document.addEventListener("keydown", (event) => {
  if (event.altKey || event.ctrlKey || event.metaKey) return;
  if (event.target.matches?.("input[type=text], textarea, select")) return;
  const card = currentCard();
  const key = event.key.toLowerCase();
  if (key === "j" || key === "arrowdown") {
    move(1);
  } else if (key === "k" || key === "arrowup") {
    move(-1);
  } else if (card && /^[1-9]$/.test(key)) {
    const button = card.querySelector(`button.override-answer[value="${Number(key) - 1}"]`);
    if (!button) return;
    label(card, Number(key) - 1);
  } else if (card && ["a", "b", "c"].includes(key)) {
    const radio = card.querySelector(`input[name=grade][value="${key.toUpperCase()}"]`);
    if (radio) radio.checked = true;
  } else if (card && key === "o") {
    window.location.href = card.dataset.subjectUrl;
  } else {
    return;
  }
  event.preventDefault();
});

queue.dataset.ready = "1";
if (!currentCard()) focusCard(cards()[0]);
