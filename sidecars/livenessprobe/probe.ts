// The liveness probe's one check: CSI Identity Probe on the driver's socket within a
// timeout. A fresh connection per check, so a restarted driver is seen at once (a kept
// channel would sit in gRPC's reconnect back-off).
import { CsiClient, codeName } from '../common/csi-client.js';
import type { CsiCallMetrics } from '../common/metrics.js';

/** Parses a Go-style duration ("1s", "500ms", "1m30s", "2.5s"); a bare number is seconds. */
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

/** Calls Probe; resolves to undefined when the driver is ready, else to the reason it is not. */
export async function probeDriver(csiAddress: string, timeoutMs: number, metrics?: CsiCallMetrics): Promise<string | undefined> {
  const csi = new CsiClient(csiAddress);
  metrics?.instrument(csi);
  try {
    const res = await csi.Identity.Probe({}, timeoutMs);
    // ready is a BoolValue; unset means ready (CSI spec)
    const ready = res?.ready;
    if (ready && ready.value === false) return 'driver reports not ready';
    return undefined;
  } catch (err) {
    const code = codeName(err) ?? 'UNKNOWN';
    const detail = (err as { details?: string })?.details || (err as Error)?.message || String(err);
    return `Probe failed: ${code}: ${detail}`;
  } finally {
    csi.close();
  }
}
