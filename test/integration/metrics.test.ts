// The driver's own metrics (--metrics-address), scraped over HTTP from the real driver
// process after real RPCs on the loop backend: what Prometheus would store.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { DriverHarness, mountCap, MiB } from '../lib/driver-harness.js';
import { codeName, type CsiClient } from '../../sidecars/common/csi-client.js';
import { freePort, waitFor } from '../lib/wait.js';
import { scrape, sampleOf, type Scrape } from '../lib/prometheus.js';
import { TestVg } from '../lib/lvm-vg.js';

let h: DriverHarness | undefined;
let c: CsiClient;
let url: string;

beforeAll(async () => {
  const port = await freePort();
  url = `http://127.0.0.1:${port}/metrics`;
  h = await DriverHarness.start({ driver: { metricsAddress: `127.0.0.1:${port}` } });
  c = h.client!;
});
afterAll(async () => {
  await h?.cleanup();
});

const DRIVER = 'csi.tscsi.dev';
const CREATE = '/csi.v1.Controller/CreateVolume';

/** Calls of one method, backend and code: the histogram's _count. */
function calls(s: Scrape, method: string, backend: string, code: string): number {
  return sampleOf(s, 'tscsi_operations_seconds_count', { driver_name: DRIVER, method_name: method, backend, grpc_status_code: code }) ?? 0;
}

/** Scrape-time values are cached for a while: ask until they show what is awaited. */
function scrapeUntil(what: string, ok: (s: Scrape) => boolean): Promise<Scrape> {
  return waitFor(what, async () => {
    const s = await scrape(url);
    return ok(s) && s;
  }, { timeoutMs: 60_000, describe: async () => (await fetch(url).then((r) => r.text())).split('\n').filter((l) => l.startsWith('tscsi_pool') || l.startsWith('tscsi_node') || l.startsWith('tscsi_volumes')).join('\n') });
}

describe('driver metrics on the loop backend', () => {
  it('counts RPCs by method, backend and code, and the pool, volume and node gauges follow real work', async () => {
    const before = await scrape(url);
    const pool = { backend: 'loop', pool: h!.dataDir, part: 'data' };
    // the harness keeps the data directory on a 20 GiB XFS pool image
    expect(sampleOf(before, 'tscsi_pool_capacity_bytes', pool)).toBeGreaterThan(19 * 1024 * MiB);
    const freeBefore = sampleOf(before, 'tscsi_pool_free_bytes', pool)!;
    expect(sampleOf(before, 'tscsi_volumes', { backend: 'loop' })).toBe(0);
    expect(sampleOf(before, 'tscsi_node_staged_volumes')).toBe(0);
    expect(before.types.get('tscsi_operations_seconds')).toBe('histogram');
    // the harness's readiness Probe went through the wrapper too, with no backend
    expect(calls(before, '/csi.v1.Identity/Probe', '', 'OK')).toBeGreaterThanOrEqual(1);

    const cap = mountCap('ext4');
    const vol = (await c.Controller.CreateVolume({ name: 'pvc-metrics', capacity_range: { required_bytes: String(256 * MiB) }, volume_capabilities: [cap] })).volume;
    const refused = await c.Controller.CreateVolume({ name: 'pvc-nope', parameters: { backend: 'nope' }, volume_capabilities: [cap] }).catch((e: unknown) => e);
    expect(codeName(refused)).toBe('INVALID_ARGUMENT');
    // an ID naming a backend the driver does not have is not one of ours: deleting it succeeds, with no backend label
    await c.Controller.DeleteVolume({ volume_id: 'vol-evil-0123456789abcdef0123456789abcdef' });

    const staging = path.join(h!.dir, 'staging', 'm');
    const target = path.join(h!.dir, 'pods', 'm', 'mount');
    await fs.mkdir(staging, { recursive: true });
    await c.Node.NodeStageVolume({ volume_id: vol.volume_id, staging_target_path: staging, volume_capability: cap });
    await c.Node.NodePublishVolume({ volume_id: vol.volume_id, staging_target_path: staging, target_path: target, volume_capability: cap });
    // 64 MiB of real data through the volume: the sparse file (and so the pool) takes it
    await execa('dd', ['if=/dev/urandom', `of=${path.join(target, 'blob')}`, 'bs=1M', 'count=64', 'conv=fsync'], { stdio: 'ignore' });

    const after = await scrapeUntil('the scrape-time gauges to show the volume, its attachment and its data', (s) =>
      sampleOf(s, 'tscsi_volumes', { backend: 'loop' }) === 1 &&
      sampleOf(s, 'tscsi_node_staged_volumes') === 1 &&
      sampleOf(s, 'tscsi_node_published_volumes') === 1 &&
      (sampleOf(s, 'tscsi_pool_free_bytes', pool) ?? Infinity) <= freeBefore - 64 * MiB,
    );
    expect(calls(after, CREATE, 'loop', 'OK')).toBe(1);
    expect(calls(after, CREATE, '', 'INVALID_ARGUMENT')).toBe(1);
    expect(calls(after, '/csi.v1.Controller/DeleteVolume', '', 'OK')).toBe(1);
    expect(calls(after, '/csi.v1.Node/NodeStageVolume', 'loop', 'OK')).toBe(1);
    expect(calls(after, '/csi.v1.Node/NodePublishVolume', 'loop', 'OK')).toBe(1);
    // the histogram's buckets are cumulative and end in +Inf = _count
    const inf = sampleOf(after, 'tscsi_operations_seconds_bucket', { method_name: CREATE, backend: 'loop', grpc_status_code: 'OK', le: '+Inf' });
    expect(inf).toBe(1);
    expect(sampleOf(after, 'tscsi_operations_seconds_sum', { method_name: CREATE, backend: 'loop', grpc_status_code: 'OK' })).toBeGreaterThan(0);
    // nothing is being served between the calls
    expect(sampleOf(after, 'tscsi_operations_in_flight', { method_name: CREATE })).toBe(0);
    // NodeStage formatted the new volume with mkfs, a host tool the driver ran
    const mkfs = after.samples.filter((x) => x.name === 'tscsi_child_processes_seconds_count' && x.labels.tool.startsWith('mkfs') && x.labels.outcome === 'ok');
    expect(mkfs.map((x) => x.value).reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(1);
    expect(sampleOf(after, 'tscsi_child_processes', { state: 'running' })).toBe(0);

    await c.Node.NodeUnpublishVolume({ volume_id: vol.volume_id, target_path: target });
    await c.Node.NodeUnstageVolume({ volume_id: vol.volume_id, staging_target_path: staging });
    await c.Controller.DeleteVolume({ volume_id: vol.volume_id });
    await scrapeUntil('the gauges to drop back once the volume is gone', (s) =>
      sampleOf(s, 'tscsi_volumes', { backend: 'loop' }) === 0 && sampleOf(s, 'tscsi_node_staged_volumes') === 0 && sampleOf(s, 'tscsi_node_published_volumes') === 0,
    );
  });

  it('answers only GET and HEAD on /metrics and nothing else on the port', async () => {
    expect((await fetch(url, { method: 'POST' })).status).toBe(405);
    expect((await fetch(url.replace('/metrics', '/other'))).status).toBe(404);
    const res = await fetch(url);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  });
});

// Thin pools need device-mapper, which this machine's kernel lacks: their data and metadata
// gauges are checked where dm is (the guest tier); here the volume group's own.
describe('driver metrics on the lvm backend', () => {
  let lh: DriverHarness | undefined;
  let vg: TestVg | undefined;
  let lurl: string;

  beforeAll(async () => {
    vg = await TestVg.create(await fs.mkdtemp('/tmp/tscsi-metrics-lvm-'), 1);
    const port = await freePort();
    lurl = `http://127.0.0.1:${port}/metrics`;
    lh = await DriverHarness.start({ driver: { lvmVolumeGroups: vg.name, lvmDevices: vg.pvs.join(','), defaultBackend: 'lvm', metricsAddress: `127.0.0.1:${port}` } });
  });
  afterAll(async () => {
    await lh?.cleanup();
    await vg?.remove();
  });

  it('shows the volume group filling when a volume is made, and the lvm calls it ran', async () => {
    const pool = { backend: 'lvm', pool: vg!.name, part: 'data' };
    const before = await scrape(lurl);
    const size = sampleOf(before, 'tscsi_pool_capacity_bytes', pool)!;
    expect(size).toBeGreaterThan(900 * MiB);
    expect(sampleOf(before, 'tscsi_pool_free_bytes', pool)).toBe(size);
    const vol = (
      await lh!.client!.Controller.CreateVolume({ name: 'pvc-lvm-metrics', parameters: vg!.params(), capacity_range: { required_bytes: String(256 * MiB) }, volume_capabilities: [mountCap('ext4')] })
    ).volume;
    const after = await waitFor('the VG gauge to lose the new LV', async () => {
      const s = await scrape(lurl);
      return sampleOf(s, 'tscsi_pool_free_bytes', pool) === size - 256 * MiB && s;
    }, { timeoutMs: 60_000 });
    expect(sampleOf(after, 'tscsi_volumes', { backend: 'lvm' })).toBe(1);
    expect(sampleOf(after, 'tscsi_operations_seconds_count', { method_name: CREATE, backend: 'lvm', grpc_status_code: 'OK' })).toBe(1);
    expect(sampleOf(after, 'tscsi_child_processes_seconds_count', { tool: 'lvm', outcome: 'ok' })).toBeGreaterThan(0);
    await lh!.client!.Controller.DeleteVolume({ volume_id: vol.volume_id });
  });
});
