// The one size grammar of every process (driver flags, sidecars reading claims and PVs, the
// CLI): a Kubernetes resource quantity counted in bytes. It is the grammar people already
// write in claims, so a size copied from a PVC into a flag means the same thing everywhere.
//
//   size     = number [suffix]
//   number   = digits ["." digits] | "." digits
//   suffix   = "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"        powers of 1024
//            | "m" | "k" | "M" | "G" | "T" | "P" | "E"        powers of 1000 ("m" is 1/1000)
//            | ("e" | "E") ["+" | "-"] digits              a decimal exponent, "1e9"
//
// Surrounding white space is ignored; a fraction of a byte is rounded up (a volume is never
// smaller than asked). No sign, no "K", no "GB", no space before the suffix; more than the
// largest CSI size (int64) is refused, since no RPC could carry it.

/** One mebibyte, the unit of most sizes the storage tools take (lvcreate, rbd --size). */
export const MiB = 1n << 20n;

/** The largest byte count a CSI message can carry (int64). */
export const MAX_SIZE_BYTES = (1n << 63n) - 1n;

const SUFFIX_SCALE: Readonly<Record<string, { mul: bigint; div: bigint }>> = {
  '': { mul: 1n, div: 1n },
  Ki: { mul: 1n << 10n, div: 1n },
  Mi: { mul: 1n << 20n, div: 1n },
  Gi: { mul: 1n << 30n, div: 1n },
  Ti: { mul: 1n << 40n, div: 1n },
  Pi: { mul: 1n << 50n, div: 1n },
  Ei: { mul: 1n << 60n, div: 1n },
  m: { mul: 1n, div: 1000n },
  k: { mul: 1000n, div: 1n },
  M: { mul: 1000n ** 2n, div: 1n },
  G: { mul: 1000n ** 3n, div: 1n },
  T: { mul: 1000n ** 4n, div: 1n },
  P: { mul: 1000n ** 5n, div: 1n },
  E: { mul: 1000n ** 6n, div: 1n },
};

const SIZE_RE = /^(\d+(?:\.\d*)?|\.\d+)(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E))?$/;

function notASize(s: string, why = ''): Error {
  return new Error(`not a size: ${JSON.stringify(s)}${why} (examples: 1073741824, 512Mi, 20Gi, 1.5Gi, 500M)`);
}

/** Parses a size in the grammar above into bytes. */
export function parseSize(s: string): bigint {
  const m = SIZE_RE.exec(s.trim());
  if (!m) throw notASize(s);
  const [whole, frac = ''] = m[1]!.split('.');
  let num = BigInt(`${whole || '0'}${frac}`);
  let den = 10n ** BigInt(frac.length);
  if (m[2]) {
    const exp = Number(m[2].slice(1));
    // A larger exponent than any int64 needs would only make a huge BigInt to refuse.
    if (Math.abs(exp) > 40) throw notASize(s, ': exponent out of range');
    if (exp >= 0) num *= 10n ** BigInt(exp);
    else den *= 10n ** BigInt(-exp);
  } else {
    const scale = SUFFIX_SCALE[m[3] ?? '']!;
    num *= scale.mul;
    den *= scale.div;
  }
  const bytes = (num + den - 1n) / den;
  if (bytes > MAX_SIZE_BYTES) throw notASize(s, ': larger than the largest CSI size (2^63-1 bytes)');
  return bytes;
}

/** Bytes as Kubernetes shows a quantity: "1Gi" when a binary unit divides it evenly, else the plain number. */
export function formatSize(bytes: bigint): string {
  for (const [suffix, unit] of [['Ti', 1n << 40n], ['Gi', 1n << 30n], ['Mi', 1n << 20n], ['Ki', 1n << 10n]] as const) {
    if (bytes % unit === 0n && bytes >= unit) return `${bytes / unit}${suffix}`;
  }
  return bytes.toString();
}
