// Quasar and galaxy lines a volunteer uses to read a redshift: VACUUM rest wavelengths in Å.
// Values follow the SDSS "Table of Spectral Lines Used in SDSS" (DR6 algorithms pages,
// classic.sdss.org/dr6/algorithms/linestable.html) and the NIST Atomic Spectra Database; doublets that
// SDSS-resolution spectra blend (N V, C IV, Mg II, [O II]) are given at their weighted mean.

export const LINE_LIST = Object.freeze([
  { name: "Lyβ", rest: 1025.72 },
  { name: "Lyα", rest: 1215.67 },
  { name: "N V", rest: 1240.14 },
  { name: "Si IV", rest: 1397.61 },
  { name: "C IV", rest: 1549.06 },
  { name: "He II", rest: 1640.42 },
  { name: "C III]", rest: 1908.73 },
  { name: "Mg II", rest: 2798.75 },
  { name: "[O II]", rest: 3728.48 },
  { name: "Ca K", rest: 3934.78 },
  { name: "Ca H", rest: 3969.59 },
  { name: "Hδ", rest: 4102.89 },
  { name: "Hγ", rest: 4341.68 },
  { name: "Hβ", rest: 4862.68 },
  { name: "[O III]", rest: 4960.3 },
  { name: "[O III]", rest: 5008.24 },
  { name: "Hα", rest: 6564.61 },
]);

export const Z_MIN = 0;
export const Z_MAX = 7;

/** Observed wavelength of a rest wavelength at redshift z. */
export function observed(rest, z) {
  return rest * (1 + z);
}

/** The lines of LINE_LIST that fall inside [lo, hi] Å at redshift z, with their observed wavelength. */
export function linesInRange(z, lo, hi) {
  return LINE_LIST.map((line) => ({ ...line, wave: observed(line.rest, z) })).filter(
    (line) => line.wave >= lo && line.wave <= hi,
  );
}

/** Redshift after dragging the line list from wavelength `from` to `to`: the grabbed point follows the pointer. */
export function draggedRedshift(zStart, from, to) {
  const z = (1 + zStart) * (to / from) - 1;
  return Math.min(Math.max(z, Z_MIN), Z_MAX);
}
