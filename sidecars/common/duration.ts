/** Parses a Go-style duration ("1s", "500ms", "1m30s", "2.5s"), as the kubernetes-csi livenessprobe's flags take; a bare number is seconds. Returns milliseconds. */
export function parseDuration(s: string): number {
  const t = s.trim();
  if (/^\d+(\.\d+)?$/.test(t)) return Number(t) * 1000;
  const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;
  let total = 0;
  let pos = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(t))) {
    total += Number(m[1]) * units[m[2]!]!;
    pos = re.lastIndex;
  }
  if (pos === 0 || pos !== t.length) throw new Error(`not a duration: ${JSON.stringify(s)}`);
  return total;
}
