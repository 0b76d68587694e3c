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
    this.armed = null; // client_uuid whose Withdraw was pressed once: kept here so a re-render keeps it armed
    this.disarmTimer = null;
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
      this.#confirmThenWithdraw(record),
    );
    withdraw.classList.add("withdraw");
    if (this.armed === record.client_uuid) withdraw.textContent = CONFIRM;
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

  // Withdrawing cannot be undone: the first press asks, the second (within a few seconds) acts.
  // The armed record lives here, not on the button: answers acknowledged in between re-render
  // the list, and the second press must still act.
  #confirmThenWithdraw(record) {
    clearTimeout(this.disarmTimer);
    const uuid = record.client_uuid;
    if (this.armed === uuid) {
      this.armed = null;
      this.onWithdraw(record);
      return;
    }
    if (this.armed) this.#label(this.armed, "Withdraw"); // one armed at a time
    this.armed = uuid;
    this.#label(uuid, CONFIRM);
    this.disarmTimer = setTimeout(() => {
      this.armed = null;
      this.#label(uuid, "Withdraw");
    }, CONFIRM_MS);
  }

  #label(clientUuid, text) {
    const shown = this.list.querySelector(`li[data-uuid="${clientUuid}"] button.withdraw`);
    if (shown) shown.textContent = text;
  }
}

const CONFIRM = "Sure? Withdraw";
const CONFIRM_MS = 4000;

function button(text, label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "small";
  b.textContent = text;
  b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}
