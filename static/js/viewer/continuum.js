// Local continuum beside an absorber, so a Voigt profile can be drawn on the level the volunteer sees.
//
// Choice (documented for scientists): two windows flank the trough, each starting where the model's
// optical depth falls below 0.05 and as wide as the trough's half-width (at least 25 rest-frame Å).
// In each window the level is the 90th percentile of the 5-pixel inverse-variance-weighted boxcar flux:
// a high percentile because Lyman-alpha forest lines only ever absorb (the unabsorbed continuum is the
// upper envelope), of smoothed flux so that noise does not push the envelope up. The continuum is the
// straight line through the two window levels (one flat level when a window falls off the spectrum).

import { lowerBound, percentile } from "./plot.js";

const MIN_PIXELS = 5;
const LEVEL_PERCENTILE = 90;
const MIN_WINDOW_REST = 25; // Å, rest frame of the absorber

function windowLevel(wave, smoothFlux, lo, hi) {
  const i0 = lowerBound(wave, lo);
  const i1 = lowerBound(wave, hi);
  if (i1 - i0 < MIN_PIXELS) return null;
  const level = percentile(smoothFlux.subarray(i0, i1), LEVEL_PERCENTILE);
  return Number.isFinite(level) ? { wave: (lo + hi) / 2, level } : null;
}

/**
 * Continuum model around an absorber centred at `centre` Å whose trough has half-width `halfWidth` Å.
 * wave (L,) ascending Å; smoothFlux (L,) the 5-pixel weighted boxcar flux.
 * @returns {((lambda: number) => number) | null} null when neither window has data
 */
export function localContinuum(wave, smoothFlux, centre, halfWidth, zAbs) {
  const width = Math.max(halfWidth, MIN_WINDOW_REST * (1 + zAbs));
  const blue = windowLevel(wave, smoothFlux, centre - halfWidth - width, centre - halfWidth);
  const red = windowLevel(wave, smoothFlux, centre + halfWidth, centre + halfWidth + width);
  if (!blue && !red) return null;
  if (!blue || !red) {
    const level = (blue ?? red).level;
    return () => level;
  }
  const slope = (red.level - blue.level) / (red.wave - blue.wave);
  return (lambda) => blue.level + slope * (Math.min(Math.max(lambda, blue.wave), red.wave) - blue.wave);
}
