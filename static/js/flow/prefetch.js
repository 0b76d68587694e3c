// The next subjects, ready before they are needed: fetched from next?exclude= (the ids this page
// already holds, so the server never hands out the same one twice), with the preview decoded and
// the pixel data read once, so the viewer finds both in the browser's cache when Done is pressed.

import { api } from "./api.js";

const MAX_EXCLUDE = 20; // the API's limit
const MAX_AGE_MS = 120_000; // older picks may have been retired by other volunteers meanwhile

export class Prefetcher {
  // excluded(): ids to keep out besides the queued and handed-out ones (e.g. answers not yet sent).
  constructor(nextUrl, { depth = 2, excluded = () => [] } = {}) {
    this.nextUrl = nextUrl;
    this.depth = depth;
    this.excluded = excluded;
    this.queue = []; // [{subject, fetchedAt, warm}]
    this.handedOut = []; // ids taken from the queue, newest first: on screen or just answered
    this.filling = null;
    this.exhausted = false;
  }

  get queuedIds() {
    return this.queue.map((item) => item.subject.id);
  }

  // The next subject (null when none is left), waiting only when nothing was ready.
  async take() {
    this.queue = this.queue.filter((item) => Date.now() - item.fetchedAt < MAX_AGE_MS);
    if (!this.queue.length) {
      this.exhausted = false;
      await this.fill();
    }
    const item = this.queue.shift() ?? null;
    if (item) this.handedOut = [item.subject.id, ...this.handedOut].slice(0, MAX_EXCLUDE);
    this.fill().catch(() => {}); // refill behind the scenes; a failure is retried at the next take
    // Not awaiting item.warm: the viewer paints the preview at once, and a data request still on
    // its way is shared through the cache rather than sent twice.
    return item ? item.subject : null;
  }

  // Drop queued subjects (e.g. after an edit changed what this volunteer has seen).
  forget(id) {
    this.queue = this.queue.filter((item) => item.subject.id !== id);
  }

  fill() {
    this.filling ??= this.#fill().finally(() => {
      this.filling = null;
    });
    return this.filling;
  }

  async #fill() {
    while (this.queue.length < this.depth && !this.exhausted) {
      const keep = [...new Set([...this.queuedIds, ...this.handedOut.slice(0, 1), ...this.excluded(), ...this.handedOut])]
        .slice(0, MAX_EXCLUDE);
      const url = keep.length ? `${this.nextUrl}?exclude=${keep.join(",")}` : this.nextUrl;
      const { subject } = await api(url);
      if (!subject) {
        this.exhausted = true;
        return;
      }
      if (keep.includes(subject.id)) return; // a server that ignored exclude: never show it twice
      this.queue.push({ subject, fetchedAt: Date.now(), warm: warm(subject) });
    }
  }
}

// Decode the preview and read the data once: both are served with immutable cache headers.
async function warm(subject) {
  const image = new Image();
  image.decoding = "async";
  image.src = subject.preview_url;
  const jobs = [image.decode().catch(() => null)];
  if (subject.data_url) {
    jobs.push(
      fetch(subject.data_url, { credentials: "same-origin" })
        .then((res) => (res.ok ? res.arrayBuffer() : null))
        .catch(() => null),
    );
  }
  await Promise.all(jobs);
  return image;
}
