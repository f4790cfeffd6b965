// The driver's metrics on the RBD backend against a real Ceph cluster (test/lib/ceph): the
// pool gauges come from `ceph df` as the configured cephx user sees it, and move when data
// is written into a volume. Only a driver asked to (--metrics-shared-backends, the
// controller's) reads them, with one `rbd ls` per pool, not one process per image.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { cleanupDriverDir, type CephEnv } from '../lib/ceph/cluster.js';
import { RbdDriverRun } from '../lib/rbd-driver.js';
import { DriverHarness, mountCap, MiB } from '../lib/driver-harness.js';
import { freePort, waitFor } from '../lib/wait.js';
import { scrape, sampleOf, type Scrape } from '../lib/prometheus.js';

let ceph: CephEnv;
let h: DriverHarness | undefined;
let url: string;

const run = new RbdDriverRun('tscsi-metrics-rbd-', 'mc');

beforeAll(async () => {
  const port = await freePort();
  url = `http://127.0.0.1:${port}/metrics`;
  h = await run.start({ metricsAddress: `127.0.0.1:${port}`, metricsSharedBackends: 'true' });
  ceph = run.ceph;
}, 600_000);

afterAll(() => run.stop(), 180_000);

/** Host tools the driver ran, of one tool (all outcomes). */
function toolRuns(s: Scrape, tool: string): number {
  return s.samples.filter((x) => x.name === 'tscsi_child_processes_seconds_count' && x.labels.tool === tool).reduce((a, x) => a + x.value, 0);
}

describe('driver metrics on the rbd backend', () => {
  it('exports the Ceph pool as its user sees it, and the pool fills as a volume is written', async () => {
    const pool = { backend: 'rbd', pool: `mc/${ceph.pool}`, part: 'data' };
    const before = await scrape(url);
    const cap0 = sampleOf(before, 'tscsi_pool_capacity_bytes', pool)!;
    const free0 = sampleOf(before, 'tscsi_pool_free_bytes', pool)!;
    expect(cap0).toBeGreaterThan(0);
    expect(free0).toBeLessThanOrEqual(cap0);
    expect(sampleOf(before, 'tscsi_volumes', { backend: 'rbd' })).toBe(0);

    const c = h!.client!;
    const cap = mountCap('ext4');
    const params = { backend: 'rbd', clusterID: 'mc', pool: ceph.pool };
    const id = (await c.Controller.CreateVolume({ name: 'pvc-rbd-metrics', parameters: params, capacity_range: { required_bytes: String(128 * MiB) }, volume_capabilities: [cap] })).volume.volume_id;
    const staging = path.join(h!.dir, 'staging', 'r');
    const target = path.join(h!.dir, 'pods', 'r', 'mount');
    await fs.mkdir(staging, { recursive: true });
    await c.Node.NodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap });
    await c.Node.NodePublishVolume({ volume_id: id, staging_target_path: staging, target_path: target, volume_capability: cap });
    await execa('dd', ['if=/dev/urandom', `of=${path.join(target, 'blob')}`, 'bs=1M', 'count=48', 'conv=fsync'], { stdio: 'ignore' });

    // the mgr reports pool statistics every few seconds; the driver reads them at most every 10 s
    const after = await waitFor('the pool gauges to show the written data and the volume', async () => {
      const s = await scrape(url);
      const used = sampleOf(s, 'tscsi_pool_capacity_bytes', pool)! - sampleOf(s, 'tscsi_pool_free_bytes', pool)!;
      return used >= cap0 - free0 + 32 * MiB && sampleOf(s, 'tscsi_volumes', { backend: 'rbd' }) === 1 && s;
    }, { timeoutMs: 120_000 });
    expect(sampleOf(after, 'tscsi_operations_seconds_count', { method_name: '/csi.v1.Controller/CreateVolume', backend: 'rbd', grpc_status_code: 'OK' })).toBe(1);
    expect(sampleOf(after, 'tscsi_child_processes_seconds_count', { tool: 'ceph', outcome: 'ok' })).toBeGreaterThan(0);

    // Each scrape-time read runs one `ceph df` and one `rbd ls` (one pool configured), however
    // many images there are: no `rbd image-meta list` per image. Nothing else runs rbd now.
    const snap = (await c.Controller.CreateSnapshot({ name: 'snap-rbd-metrics', source_volume_id: id })).snapshot.snapshot_id;
    const counted = await waitFor('a read that shows the snapshot', async () => {
      const s = await scrape(url);
      return sampleOf(s, 'tscsi_snapshots', { backend: 'rbd' }) === 1 && s;
    }, { timeoutMs: 60_000, everyMs: 1_000 });
    const later = await waitFor('another scrape-time read', async () => {
      const s = await scrape(url);
      return toolRuns(s, 'ceph') > toolRuns(counted, 'ceph') && s;
    }, { timeoutMs: 60_000, everyMs: 1_000 });
    expect(toolRuns(later, 'rbd') - toolRuns(counted, 'rbd')).toBe(toolRuns(later, 'ceph') - toolRuns(counted, 'ceph'));
    expect(sampleOf(later, 'tscsi_volumes', { backend: 'rbd' })).toBe(1);
    await c.Controller.DeleteSnapshot({ snapshot_id: snap });

    await c.Node.NodeUnpublishVolume({ volume_id: id, target_path: target });
    await c.Node.NodeUnstageVolume({ volume_id: id, staging_target_path: staging });
    await c.Controller.DeleteVolume({ volume_id: id });
  });
});

describe('a node plugin on the rbd backend', () => {
  let node: DriverHarness | undefined;
  afterAll(async () => {
    await node?.stopProcess();
    if (node) await cleanupDriverDir(node.dir);
    await node?.cleanup();
  }, 120_000);

  it('with --metrics-shared-backends=false (as deploy/base/node.yaml runs it) reports its loop pool but not the shared Ceph pools, and runs no ceph or rbd for them', async () => {
    const port = await freePort();
    const nurl = `http://127.0.0.1:${port}/metrics`;
    node = await DriverHarness.start({ nodeId: 'it-node-2', driver: { rbdConfig: run.configFile, rbdMapper: 'fuse', metricsAddress: `127.0.0.1:${port}`, metricsSharedBackends: 'false' } });
    // two reads, the second after the cache period: a read that happened, not a guess
    const first = await waitFor('a first scrape-time read', async () => {
      const s = await scrape(nurl);
      return (sampleOf(s, 'tscsi_metrics_last_success_timestamp_seconds', { source: 'loop' }) ?? 0) > 0 && s;
    }, { timeoutMs: 60_000, everyMs: 1_000 });
    const s = await waitFor('a second scrape-time read', async () => {
      const x = await scrape(nurl);
      return sampleOf(x, 'tscsi_metrics_last_success_timestamp_seconds', { source: 'loop' })! > sampleOf(first, 'tscsi_metrics_last_success_timestamp_seconds', { source: 'loop' })! && x;
    }, { timeoutMs: 60_000, everyMs: 1_000 });
    expect(sampleOf(s, 'tscsi_pool_capacity_bytes', { backend: 'loop', pool: node.dataDir, part: 'data' })).toBeGreaterThan(0);
    expect(s.samples.filter((x) => x.labels.backend === 'rbd' && /^tscsi_(pool_|volumes|snapshots)/.test(x.name))).toEqual([]);
    expect(sampleOf(s, 'tscsi_metrics_last_success_timestamp_seconds', { source: 'rbd' })).toBeUndefined();
    expect([toolRuns(s, 'ceph'), toolRuns(s, 'rbd')]).toEqual([0, 0]);
  });
});
