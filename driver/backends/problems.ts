// The spec's rule for storage health: one entry per (status, reason). Several VGs, pools or
// clusters with the same problem share one entry whose message names every one of them.
import type { StorageProblem } from './backend.js';

export function mergeSameReason(problems: StorageProblem[]): StorageProblem[] {
  const byKey = new Map<string, StorageProblem>();
  for (const p of problems) {
    const k = `${p.status}\0${p.reason}`;
    const had = byKey.get(k);
    byKey.set(k, had ? { ...had, message: `${had.message}; ${p.message}` } : p);
  }
  return [...byKey.values()];
}
