// Answers on their way to the server. Every submission, edit and withdrawal is queued here and
// kept in localStorage until the server acknowledges it, so a reload, a dropped connection or
// a server error never loses one. Entries are sent in order (an edit after the answer it edits),
// each replayed with the same client_uuid or address, which the server applies once.
// A refusal (4xx) is kept, and shown, until the volunteer has read it.

import { api } from "./api.js";

const BACKOFF_MS = [1000, 2000, 4000, 8000, 15000, 30000];

export class Outbox {
  constructor(storageKey, { onDelivered = () => {}, onRefused = () => {}, onChange = () => {} } = {}) {
    this.storageKey = storageKey;
    this.onDelivered = onDelivered;
    this.onRefused = onRefused;
    this.onChange = onChange;
    this.entries = this.#restore(); // [{id, method, url, body, record?, refused?}]
    this.inFlight = null; // the entry being sent right now
    this.failures = 0; // consecutive transient failures of the head entry
    this.lastError = null;
    this.retryAt = null;
    this.timer = null;
    this.pumping = false;
    window.addEventListener("online", () => this.retryNow());
  }

  get waiting() {
    return this.entries.filter((e) => !e.refused);
  }

  get refused() {
    return this.entries.filter((e) => e.refused);
  }

  add(entry) {
    this.entries.push(structuredClone(entry));
    this.#save();
    this.onChange(this);
    this.pump();
  }

  // Change a queued, unsent submission in place (an edit before the server has seen it).
  amend(id, changes) {
    const entry = this.entries.find((e) => e.id === id && e.method === "POST" && !e.refused);
    if (!entry || entry === this.inFlight) return false;
    Object.assign(entry.body, structuredClone(changes));
    if (entry.record) Object.assign(entry.record, structuredClone(changes));
    this.#save();
    return true;
  }

  // Forget a queued, unsent submission (withdrawn before the server has seen it).
  cancel(id) {
    const entry = this.entries.find((e) => e.id === id && e.method === "POST" && !e.refused);
    if (!entry || entry === this.inFlight) return false;
    this.entries = this.entries.filter((e) => e.id !== id);
    this.#save();
    this.onChange(this);
    return true;
  }

  // The volunteer has read why the server refused these: now they may go.
  dismissRefused() {
    this.entries = this.entries.filter((e) => !e.refused);
    this.#save();
    this.onChange(this);
  }

  retryNow() {
    clearTimeout(this.timer);
    this.timer = null;
    this.retryAt = null;
    this.pump();
  }

  async pump() {
    if (this.pumping || this.timer) return;
    this.pumping = true;
    try {
      for (let entry = this.waiting[0]; entry; entry = this.waiting[0]) {
        if (!(await this.#send(entry))) return; // a transient failure: the timer sends it again
      }
    } finally {
      this.inFlight = null;
      this.pumping = false;
      this.onChange(this);
    }
  }

  async #send(entry) {
    this.inFlight = entry;
    this.onChange(this);
    try {
      const reply = await api(entry.url, { method: entry.method, body: entry.body });
      this.#remove(entry);
      this.failures = 0;
      this.lastError = null;
      this.onDelivered(entry, reply);
      return true;
    } catch (err) {
      if (err.transient) {
        this.failures += 1;
        this.lastError = err;
        const delay = BACKOFF_MS[Math.min(this.failures, BACKOFF_MS.length) - 1] * (0.8 + 0.4 * Math.random());
        this.retryAt = Date.now() + delay;
        this.timer = setTimeout(() => {
          this.timer = null;
          this.retryAt = null;
          this.pump();
        }, delay);
        return false;
      }
      if (entry.method === "DELETE" && err.status === 404) {
        this.#remove(entry); // already withdrawn: what the volunteer wanted
        this.onDelivered(entry, null);
        return true;
      }
      entry.refused = err.message;
      this.#save();
      this.onRefused(entry, err);
      return true;
    } finally {
      this.inFlight = null;
    }
  }

  #remove(entry) {
    this.entries = this.entries.filter((e) => e !== entry);
    this.#save();
  }

  #restore() {
    try {
      const saved = JSON.parse(localStorage.getItem(this.storageKey) ?? "[]");
      return Array.isArray(saved) ? saved : [];
    } catch {
      return [];
    }
  }

  #save() {
    try {
      if (this.entries.length) localStorage.setItem(this.storageKey, JSON.stringify(this.entries));
      else localStorage.removeItem(this.storageKey);
    } catch {
      // Storage full or disabled: the entries stay in memory and are still retried.
    }
  }
}
