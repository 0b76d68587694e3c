// IEEE 754 binary16 decoding: the server sends image pixels as little-endian float16 (half the bytes of float32).

const SUBNORMAL_UNIT = 2 ** -24;  // smallest half-precision step: 2^(1 - 15) / 2^10

/** One half-precision bit pattern (0..65535) -> its number value (NaN, ±Infinity and subnormals included). */
export function halfToNumber(bits) {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * fraction * SUBNORMAL_UNIT;
  if (exponent === 0x1f) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

let table = null;  // all 65536 values, built on first use (256 KB): decoding is then one lookup per pixel

/** Little-endian float16 bytes -> Float32Array of the same length (in values). */
export function decodeFloat16(buffer) {
  if (buffer.byteLength % 2) throw new Error(`float16 data has an odd byte count (${buffer.byteLength})`);
  if (!table) {
    table = new Float32Array(65536);
    for (let bits = 0; bits < 65536; bits++) table[bits] = halfToNumber(bits);
  }
  const view = new DataView(buffer);
  const out = new Float32Array(buffer.byteLength / 2);
  for (let i = 0; i < out.length; i++) out[i] = table[view.getUint16(2 * i, true)];
  return out;
}
