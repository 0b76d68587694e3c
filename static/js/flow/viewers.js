// The viewer for a subject's kind, given the workflow's marks tools of the types it can draw.
// Both viewers share one interface: load(subject), getMarks(), setMarks(), clearMarks(), destroy().

const VIEWERS = {
  image: { module: "../viewer/image.js", name: "ImageViewer", types: ["box", "line"] },
  spectrum: { module: "../viewer/spectrum.js", name: "SpectrumViewer", types: ["absorber", "redshift"] },
};

// The tools of the marks spec this viewer draws, each keeping its index into marks.tools.
export function toolsFor(kind, marksSpec) {
  const types = VIEWERS[kind]?.types ?? [];
  return (marksSpec?.tools ?? [])
    .map((tool, index) => ({ index, type: tool.type, label: tool.label, help: tool.help ?? "" }))
    .filter((tool) => types.includes(tool.type));
}

export async function createViewer(kind, container, { marksSpec, onChange }) {
  const spec = VIEWERS[kind];
  const tools = toolsFor(kind, marksSpec);
  try {
    if (!spec) throw new Error(`no viewer for ${kind} subjects`);
    const module = await import(spec.module);
    return new module[spec.name](container, { tools, onChange, maxMarks: marksSpec?.max_marks ?? 50 });
  } catch (err) {
    console.error("viewer unavailable, showing previews only", err);
    return new PreviewOnly(container, tools.length > 0);
  }
}

// When the interactive viewer cannot load (an old browser, a failed download), the server's
// preview still lets the volunteer answer the questions; drawing is not possible then.
class PreviewOnly {
  constructor(container, wantedTools) {
    this.container = container;
    this.image = document.createElement("img");
    this.image.className = "preview-only";
    this.image.alt = "the object to classify";
    const notice = document.createElement("p");
    notice.className = "notice";
    notice.textContent = wantedTools
      ? "The interactive viewer could not load: you can answer the questions, but not draw. Reload to try again."
      : "The interactive viewer could not load: showing the preview image.";
    container.replaceChildren(this.image, notice);
  }

  async load(subject) {
    this.image.src = subject.preview_url;
    await this.image.decode().catch(() => null);
  }

  getMarks() {
    return [];
  }

  setMarks() {}

  clearMarks() {}

  destroy() {
    this.container.replaceChildren();
  }
}
