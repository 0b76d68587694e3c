// The workflow's tutorial (a dialog shown once, on a volunteer's first visit, re-openable) and
// its field guide (a panel that stays open beside the object while the volunteer works).

export function setUpTutorial(workflowId) {
  const dialog = document.getElementById("tutorial");
  const opener = document.getElementById("open-tutorial");
  if (!dialog || !opener) return;
  const seenKey = `skyloop:tutorial-seen:${workflowId}`;
  let openedByVolunteer = false;
  opener.addEventListener("click", () => {
    openedByVolunteer = true;
    dialog.showModal();
  });
  dialog.addEventListener("close", () => {
    remember(seenKey);
    // Back to the button that opened it; after the first-visit showing, to the question, so that
    // Enter means Done rather than "show the tutorial again".
    (openedByVolunteer ? opener : document.getElementById("question")).focus();
    openedByVolunteer = false;
  });
  if (!recalled(seenKey)) dialog.showModal();
}

export function setUpFieldGuide() {
  const panel = document.getElementById("field-guide");
  const opener = document.getElementById("open-guide");
  if (!panel || !opener) return () => false;
  const show = (open) => {
    panel.hidden = !open;
    opener.setAttribute("aria-expanded", String(open));
    (open ? panel.querySelector("button") : opener).focus();
  };
  opener.addEventListener("click", () => show(panel.hidden));
  document.getElementById("close-guide").addEventListener("click", () => show(false));
  // Escape closes it; returns whether it did, so Escape does nothing else then.
  return () => {
    if (panel.hidden) return false;
    show(false);
    return true;
  };
}

function remember(key) {
  try {
    localStorage.setItem(key, "1");
  } catch {
    // No storage: the tutorial simply shows again next time.
  }
}

function recalled(key) {
  try {
    return localStorage.getItem(key) === "1";
  } catch {
    return false;
  }
}
