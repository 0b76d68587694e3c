// Walking a workflow's decision tree (the JSON of mlcore/tasktree.py): the path so far,
// the current question, back within the tree, and the question panel with its answer buttons.

export class TreeWalk {
  constructor(tree) {
    this.tree = tree;
    this.path = []; // [{task, answer}], what the API stores as the annotation
  }

  // The key of the question to answer now; null once the tree has ended.
  get current() {
    let key = this.tree.first;
    for (const step of this.path) key = this.tree.tasks[step.task].answers[step.answer].next ?? null;
    return key;
  }

  get finished() {
    return this.current === null;
  }

  choose(answer) {
    const key = this.current;
    if (key === null || !Number.isInteger(answer) || answer < 0 || answer >= this.tree.tasks[key].answers.length) {
      return false;
    }
    this.path.push({ task: key, answer });
    return true;
  }

  back() {
    return this.path.pop() !== undefined;
  }

  reset(path = []) {
    this.path = path.map(({ task, answer }) => ({ task, answer }));
  }

  // "Smooth → Completely round → No": how the volunteer's answers read back.
  describe(path = this.path) {
    return path.map((step) => this.tree.tasks[step.task]?.answers[step.answer]?.label ?? "?").join(" → ");
  }
}

// Fills the question panel: the question, its help, one button per answer (hotkey 1-9).
export function renderQuestion({ question, help, answers, summary }, walk, onChoose) {
  const key = walk.current;
  if (key === null) {
    question.textContent = walk.path.length ? "All questions answered" : "";
    help.textContent = "";
    answers.replaceChildren();
    summary.textContent = walk.path.length ? `Your answers: ${walk.describe()}` : "";
    return;
  }
  const task = walk.tree.tasks[key];
  question.textContent = task.question;
  help.textContent = task.help ?? "";
  summary.textContent = walk.path.length ? `So far: ${walk.describe()}` : "";
  answers.replaceChildren(
    ...task.answers.map((answer, i) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "answer";
      button.dataset.answer = String(i);
      if (i < 9) {
        const kbd = document.createElement("kbd");
        kbd.textContent = String(i + 1);
        kbd.setAttribute("aria-hidden", "true");
        button.append(kbd, " ");
        button.setAttribute("aria-keyshortcuts", String(i + 1));
      }
      button.append(answer.label);
      button.addEventListener("click", () => onChoose(i));
      return button;
    }),
  );
}
