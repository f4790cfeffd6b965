// Whether a Ceph cluster answers the driver's user, and how full its pools are: short,
// timeout-bounded `ceph` calls (a health poll must not wait out the ordinary tool timeout
// behind a dead monitor). Messages name the monitors and the user, never the key.
import { CommandError } from '../../host/exec.js';
import type { StorageProblem } from '../backend.js';
import type { CephCli, Credentials } from './cli.js';
import type { ClusterConfig } from './config.js';

/** How long a health check waits for the monitors (the ceph CLI's own connect timeout, then ours). */
export const HEALTH_CONNECT_TIMEOUT_S = 10;
const HEALTH_TOOL_TIMEOUT_MS = (HEALTH_CONNECT_TIMEOUT_S + 5) * 1000;
/** A pool with this much of what it can hold in use (stored / (stored + max_avail)) is reported. */
export const POOL_USAGE_WARN_PERCENT = 85;

const lastLine = (s: string) => s.trim().split('\n').filter((l) => l && !/did not load config/.test(l)).slice(-1)[0] ?? '';

/** Why the cluster does not answer this user, in words a person can act on. */
function unreachableWhy(err: unknown): string {
  if (err instanceof CommandError) {
    if (err.timedOut) return `no monitor answered within ${HEALTH_TOOL_TIMEOUT_MS / 1000} s`;
    const line = lastLine(err.stderr);
    if (/timed out|\(110\)/i.test(line)) return `no monitor answered within ${HEALTH_CONNECT_TIMEOUT_S} s`;
    return line || `ceph exited ${err.exitCode ?? '?'}`;
  }
  return err instanceof Error ? err.message : String(err);
}

export function describeCluster(cluster: ClusterConfig, user: string | undefined): string {
  return `Ceph cluster ${cluster.clusterID} (monitors ${cluster.monitors.join(', ')}) as client.${user ?? '?'}`;
}

/** A bounded `ceph` call; throws what unreachableWhy explains. */
async function ceph(cli: CephCli, cluster: ClusterConfig, creds: Credentials, args: string[]): Promise<unknown> {
  const r = await cli.tool('ceph', cluster, creds, ['--connect-timeout', String(HEALTH_CONNECT_TIMEOUT_S), ...args, '--format', 'json'], HEALTH_TOOL_TIMEOUT_MS);
  return JSON.parse(r.stdout || 'null') as unknown;
}

/** undefined when the cluster answers this user, else why it does not. */
export async function clusterUnreachable(cli: CephCli, cluster: ClusterConfig, creds: Credentials): Promise<string | undefined> {
  try {
    await ceph(cli, cluster, creds, ['osd', 'pool', 'ls']);
    return undefined;
  } catch (err) {
    return unreachableWhy(err);
  }
}

interface DfPool {
  name: string;
  /** `ceph df detail`: quota_bytes is 0 without a quota. */
  stats: { stored?: number; bytes_used?: number; max_avail: number; quota_bytes?: number };
}

/**
 * One cluster's problems: unreachable (then nothing else can be known), each configured pool
 * missing or near full. The pools' usage is what `ceph df` says a pool can still take
 * (max_avail counts replication and full ratios) and its quota.
 */
export async function clusterProblems(cli: CephCli, cluster: ClusterConfig, creds: Credentials): Promise<StorageProblem[]> {
  const who = describeCluster(cluster, creds.user);
  const why = await clusterUnreachable(cli, cluster, creds);
  if (why) return [{ status: 'STORAGE_UNREACHABLE', reason: 'ClusterUnreachable', message: `${who} cannot be reached: ${why}; volumes of this cluster cannot be staged, and I/O to staged ones may hang` }];
  const out: StorageProblem[] = [];
  try {
    const pools = (await ceph(cli, cluster, creds, ['osd', 'pool', 'ls'])) as string[];
    const df = (await ceph(cli, cluster, creds, ['df', 'detail'])) as { pools?: DfPool[] };
    for (const name of [...new Set(cluster.pools.map((p) => p.pool))]) {
      if (!pools.includes(name)) {
        out.push({ status: 'STORAGE_UNREACHABLE', reason: 'PoolMissing', message: `pool ${name} of ${who} does not exist: its volumes are gone or were never made; check the rbd config` });
        continue;
      }
      const s = df.pools?.find((p) => p.name === name)?.stats;
      if (!s) continue; // the mgr has not reported it yet: nothing known, nothing wrong
      const used = s.stored ?? s.bytes_used ?? 0;
      // max_avail ignores a pool quota, which blocks writes as surely as full OSDs: whichever is nearer.
      const quota = s.quota_bytes ?? 0;
      const room = quota > 0 ? Math.min(s.max_avail, Math.max(0, quota - used)) : s.max_avail;
      const pct = used + room > 0 ? (100 * used) / (used + room) : 0;
      if (pct >= POOL_USAGE_WARN_PERCENT) {
        out.push({
          status: 'STORAGE_DEGRADED',
          reason: 'PoolNearlyFull',
          message: `pool ${name} of ${who} holds ${used} bytes and can take ${room} more (${pct.toFixed(1)}% used, threshold ${POOL_USAGE_WARN_PERCENT}%${quota > 0 ? `, quota ${quota} bytes` : ''}): ${room > 0 ? 'writes will soon block' : 'writes to its images block now'}; add OSDs, raise its quota or delete volumes`,
        });
      }
    }
  } catch (err) {
    out.push({ status: 'STORAGE_UNREACHABLE', reason: 'ClusterUnreadable', message: `${who} answered, but its pools could not be read: ${unreachableWhy(err)}` });
  }
  return out;
}
