// The driver's logger is lib/process.ts's createLogger; this is what the driver alone adds.
export type { Logger } from 'pino';

/**
 * A copy of a request that is safe to log: every map the spec marks `csi_secret`
 * is called `secrets` in csi.proto (a unit test holds that true), so those are
 * replaced wherever they appear, at any depth. Mount flags are hidden too: the spec
 * says they MAY carry sensitive information and MUST NOT leak.
 */
export function redactSecrets(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(redactSecrets);
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (k === 'secrets' && v && typeof v === 'object') {
      out[k] = Object.keys(v as object).length ? '[REDACTED]' : {};
    } else if (k === 'mount_flags' && Array.isArray(v)) {
      out[k] = v.length ? `[${v.length} REDACTED]` : [];
    } else {
      out[k] = redactSecrets(v);
    }
  }
  return out;
}
