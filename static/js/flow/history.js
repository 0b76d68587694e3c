// "Recent": this volunteer's latest classifications in the workflow (GET .../mine/), newest first,
// each with Edit and Withdraw. Answers still waiting in the outbox are listed too, marked so.

import { api } from "./api.js";

const LIMIT = 20;

export class History {
  constructor(list, mineUrl, { describe, onEdit, onWithdraw, onRender = () => {} }) {
    this.list = list;
    this.mineUrl = mineUrl;
    this.describe = describe; // annotation -> "Smooth → Round"
    this.onEdit = onEdit;
    this.onWithdraw = onWithdraw;
    this.onRender = onRender;
    this.records = []; // newest first, the shape of one item of /mine/, plus `pending`
    this.editing = null; // client_uuid being edited
  }

  async load(pendingRecords = []) {
    const mine = await api(`${this.mineUrl}?limit=${LIMIT}`);
    const known = new Set(mine.map((r) => r.client_uuid));
    const unsent = pendingRecords.filter((r) => !known.has(r.client_uuid)).map((r) => ({ ...r, pending: true }));
    this.records = [...unsent.reverse(), ...mine].slice(0, LIMIT);
    this.render();
  }

  get latest() {
    return this.records.find((r) => r.editable !== false) ?? null;
  }

  find(clientUuid) {
    return this.records.find((r) => r.client_uuid === clientUuid) ?? null;
  }

  add(record) {
    this.records = [{ ...record, pending: true }, ...this.records].slice(0, LIMIT);
    this.render();
  }

  update(clientUuid, changes) {
    const record = this.find(clientUuid);
    if (record) Object.assign(record, changes);
    this.render();
  }

  remove(clientUuid) {
    this.records = this.records.filter((r) => r.client_uuid !== clientUuid);
    this.render();
  }

  setEditing(clientUuid) {
    this.editing = clientUuid;
    this.render();
  }

  render() {
    if (this.records.length) {
      this.list.replaceChildren(...this.records.map((r) => this.#item(r)));
    } else {
      const empty = document.createElement("li");
      empty.className = "recent-empty";
      empty.textContent = "Nothing yet: your classifications will appear here.";
      this.list.replaceChildren(empty);
    }
    this.onRender();
  }

  #item(record) {
    const li = document.createElement("li");
    li.className = "recent-item";
    li.dataset.uuid = record.client_uuid;
    li.dataset.subject = String(record.subject.id);
    if (record.client_uuid === this.editing) li.classList.add("editing");
    const what = document.createElement("span");
    what.className = "recent-what";
    const name = document.createElement("strong");
    name.textContent = record.subject.external_id;
    const marks = record.marks?.length ? `, ${record.marks.length} mark${record.marks.length === 1 ? "" : "s"}` : "";
    what.append(name, ` ${this.describe(record.annotation)}${marks}`);
    if (record.favourite) what.append(" ★");
    if (record.pending) what.append(" (sending…)");
    else if (record.edited_at) what.append(" (edited)");
    const edit = button("Edit", `Edit your classification of ${record.subject.external_id}`, () => this.onEdit(record));
    const withdraw = button("Withdraw", `Withdraw your classification of ${record.subject.external_id}`, () =>
      confirmThen(withdraw, () => this.onWithdraw(record)),
    );
    if (record.editable === false) {
      edit.disabled = withdraw.disabled = true;
      edit.title = withdraw.title = "This object has been retired: it can no longer be changed.";
    }
    const actions = document.createElement("span");
    actions.className = "recent-actions";
    actions.append(edit, withdraw);
    li.append(what, actions);
    return li;
  }
}

function button(text, label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "small";
  b.textContent = text;
  b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

// Withdrawing cannot be undone: the first press asks, the second (within a few seconds) acts.
function confirmThen(b, act) {
  if (b.dataset.armed) {
    act();
    return;
  }
  b.dataset.armed = "1";
  const text = b.textContent;
  b.textContent = "Sure? Withdraw";
  setTimeout(() => {
    delete b.dataset.armed;
    b.textContent = text;
  }, 4000);
}
