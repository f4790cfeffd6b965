// Pure figures for the benchmark: percentiles, summaries and ratios. No I/O here, so the
// tests can check them on known inputs.

/**
 * The p-th percentile (0..100) of `values` by linear interpolation between closest ranks
 * (the "R-7" / NumPy default / Excel PERCENTILE.INC method): rank = p/100 * (n-1).
 * Returns NaN for an empty input. The input is not modified.
 */
export function percentile(values: readonly number[], p: number): number {
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile must be within 0..100, got ${p}`);
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const rank = (p / 100) * (s.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  if (lo === hi) return s[lo];
  return s[lo] + (s[hi] - s[lo]) * (rank - lo);
}

export interface LatencySummary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  mean: number;
  max: number;
}

export function summarize(values: readonly number[]): LatencySummary {
  const n = values.length;
  return {
    count: n,
    p50: percentile(values, 50),
    p90: percentile(values, 90),
    p99: percentile(values, 99),
    mean: n ? values.reduce((a, b) => a + b, 0) / n : NaN,
    max: n ? Math.max(...values) : NaN,
  };
}

/** ours / theirs, or undefined when either side is missing or theirs is zero. */
export function ratio(ours: number | undefined, theirs: number | undefined): number | undefined {
  if (ours === undefined || theirs === undefined || !Number.isFinite(ours) || !Number.isFinite(theirs) || theirs === 0) return undefined;
  return ours / theirs;
}

export function fmtMs(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return '—';
  if (v >= 100) return v.toFixed(0);
  if (v >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

export function fmtRatio(v: number | undefined): string {
  return v === undefined ? '—' : `${v.toFixed(2)}x`;
}

export function fmtMiB(bytes: number | undefined): string {
  return bytes === undefined || !Number.isFinite(bytes) ? '—' : (bytes / 1024 / 1024).toFixed(1);
}
