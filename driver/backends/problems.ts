// The spec's rule for health entries, volume and storage alike: one entry per (status,
// reason). Several VGs, pools, clusters, backends or mounts with the same problem share one
// entry whose message names every one of them. Here, beside the backends, so that both the
// backends and the CSI services may use it (backends never import the services).

export function mergeSameReason<P extends { status: string; reason: string; message: string }>(problems: P[]): P[] {
  const byKey = new Map<string, P>();
  for (const p of problems) {
    const k = `${p.status}\0${p.reason}`;
    const had = byKey.get(k);
    // The same words twice (one condition seen from two places) say nothing more.
    if (had && had.message.split('; ').includes(p.message)) continue;
    byKey.set(k, had ? { ...had, message: `${had.message}; ${p.message}` } : p);
  }
  return [...byKey.values()];
}
