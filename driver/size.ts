/** Parses "1073741824", "512Mi", "20Gi", "1Ti" (binary units) or "1G" (decimal) into bytes. */
export function parseSize(s: string): bigint {
  const m = /^(\d+)(Ki|Mi|Gi|Ti|Pi|k|K|M|G|T|P)?$/.exec(s.trim());
  if (!m) throw new Error(`not a size: ${JSON.stringify(s)} (examples: 1073741824, 512Mi, 20Gi)`);
  const mult: Record<string, bigint> = {
    '': 1n, Ki: 1n << 10n, Mi: 1n << 20n, Gi: 1n << 30n, Ti: 1n << 40n, Pi: 1n << 50n,
    k: 1000n, K: 1000n, M: 1000n ** 2n, G: 1000n ** 3n, T: 1000n ** 4n, P: 1000n ** 5n,
  };
  return BigInt(m[1]) * mult[m[2] ?? ''];
}
