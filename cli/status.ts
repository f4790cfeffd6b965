// `tscsi-cli status`: one node's view for a person at a terminal. The volumes come from the
// driver over CSI (ListVolumes, when it serves a controller) and from its node records under
// --state-dir (where each is staged and published: CSI has no call that tells); how full its
// pools are from its own /metrics (--metrics-url), as bars.
import { codeName, type CsiClient } from '../sidecars/common/csi-client.js';
import { readNodeRecords, type NodeVolumeState } from '../lib/node-records.js';

export interface StatusOptions {
  stateDir: string;
  /** The driver's /metrics (its --metrics-address); absent: no pool bars. */
  metricsUrl?: string;
  /** Width of a pool's bar, in characters. */
  barWidth?: number;
}

interface ListedVolume {
  id: string;
  bytes?: bigint;
  publishedNodes: string[];
}

interface Pool {
  backend: string;
  pool: string;
  part: string;
  capacity: number;
  free?: number;
}

/** Every volume the driver lists, page by page; undefined when it serves no controller (--mode node). */
async function listVolumes(c: CsiClient): Promise<ListedVolume[] | undefined> {
  const out: ListedVolume[] = [];
  let token = '';
  do {
    const r = await c.Controller.ListVolumes({ starting_token: token }).catch((err: unknown) => {
      if (codeName(err) === 'UNIMPLEMENTED') return undefined;
      throw err;
    });
    if (!r) return undefined;
    for (const e of r.entries ?? []) out.push({ id: e.volume.volume_id, bytes: e.volume.capacity_bytes ? BigInt(e.volume.capacity_bytes) : undefined, publishedNodes: e.status?.published_node_ids ?? [] });
    token = r.next_token ?? '';
  } while (token);
  return out;
}

/** The pool gauges of a Prometheus text exposition (the driver's tscsi_pool_* families). */
export function poolsFromMetrics(text: string): Pool[] {
  const pools = new Map<string, Pool>();
  const line = /^tscsi_pool_(capacity|free)_bytes\{([^}]*)\} (\S+)$/;
  for (const l of text.split('\n')) {
    const m = line.exec(l);
    if (!m) continue;
    const labels = Object.fromEntries([...m[2].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2].replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c))]));
    const key = `${labels.backend}\0${labels.pool}\0${labels.part}`;
    const p = pools.get(key) ?? { backend: labels.backend ?? '', pool: labels.pool ?? '', part: labels.part ?? '', capacity: 0 };
    if (m[1] === 'capacity') p.capacity = Number(m[3]);
    else p.free = Number(m[3]);
    pools.set(key, p);
  }
  return [...pools.values()].sort((a, b) => `${a.backend} ${a.pool} ${a.part}`.localeCompare(`${b.backend} ${b.pool} ${b.part}`));
}

/** Bytes in the largest binary unit that keeps a whole part, one decimal: 19.9Gi. */
export function human(bytes: number): string {
  const units = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${bytes}` : `${v.toFixed(1)}${units[i]}`;
}

/** A pool's line: its used share as a bar; unknown free bytes (an inactive thin pool) as such. */
export function poolLine(p: Pool, width: number): string {
  const name = `${p.backend} ${p.pool}${p.part === 'data' ? '' : ` (${p.part})`}`;
  if (p.free === undefined || !(p.capacity > 0)) return `  ${name}\n    [${'?'.repeat(width)}]   ?%  usage unknown, ${human(p.capacity)} in all`;
  const used = Math.max(0, p.capacity - p.free);
  const share = used / p.capacity;
  const filled = Math.min(width, Math.round(share * width));
  const pct = `${Math.round(share * 100)}%`.padStart(4);
  return `  ${name}\n    [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${pct}  ${human(used)} of ${human(p.capacity)} used`;
}

function volumeLines(listed: ListedVolume[] | undefined, records: NodeVolumeState[]): string[] {
  const byId = new Map(records.map((r) => [r.volumeId, r]));
  const ids = [...new Set([...(listed ?? []).map((v) => v.id), ...records.map((r) => r.volumeId)])].sort();
  const sizes = new Map((listed ?? []).map((v) => [v.id, v.bytes]));
  const lines: string[] = [];
  for (const id of ids) {
    const rec = byId.get(id);
    const size = sizes.get(id);
    lines.push(`  ${id}${size !== undefined ? `  ${human(Number(size))}` : ''}${listed && !sizes.has(id) ? '  (not listed by the driver)' : ''}`);
    lines.push(`    staged:    ${rec?.stagingPath ? `${rec.stagingPath} (${rec.accessType}${rec.fsType ? `, ${rec.fsType}` : ''}${rec.device ? `, ${rec.device}` : ''})` : '-'}`);
    const pubs = Object.entries(rec?.publications ?? {});
    if (pubs.length === 0) lines.push('    published: -');
    for (const [target, p] of pubs) lines.push(`    published: ${target} (${p.readonly ? 'ro' : 'rw'})`);
  }
  return lines;
}

/** The whole report, as printed. */
export async function status(c: CsiClient, opts: StatusOptions): Promise<string> {
  const [info, node, listed, records] = await Promise.all([c.Identity.GetPluginInfo({}), c.Node.NodeGetInfo({}), listVolumes(c), readNodeRecords(opts.stateDir)]);
  const out = [`node ${node.node_id}: ${info.name} ${info.vendor_version}`, ''];
  const staged = records.filter((r) => r.stagingPath).length;
  const published = records.reduce((n, r) => n + Object.keys(r.publications ?? {}).length, 0);
  const counted = listed ? `${listed.length} listed by the driver, ` : 'the driver lists none (node only), ';
  out.push(`volumes: ${counted}${staged} staged and ${published} published here (records in ${opts.stateDir})`);
  out.push(...volumeLines(listed, records), '');
  if (!opts.metricsUrl) {
    out.push('pools: give --metrics-url (the driver\'s --metrics-address, http://HOST:PORT/metrics) to see them');
  } else {
    const res = await fetch(opts.metricsUrl, { signal: AbortSignal.timeout(15_000) });
    if (!res.ok) throw new Error(`${opts.metricsUrl} answered ${res.status} ${res.statusText}`);
    const pools = poolsFromMetrics(await res.text());
    out.push(pools.length ? 'pools:' : 'pools: none reported');
    for (const p of pools) out.push(poolLine(p, opts.barWidth ?? 40));
  }
  return out.join('\n') + '\n';
}
