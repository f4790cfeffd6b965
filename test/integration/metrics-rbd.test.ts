// The driver's metrics on the RBD backend against a real Ceph cluster (test/lib/ceph): the
// pool gauges come from `ceph df` as the configured cephx user sees it, and move when data
// is written into a volume.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import type { CephEnv } from '../lib/ceph/cluster.js';
import { RbdDriverRun } from '../lib/rbd-driver.js';
import { DriverHarness, mountCap, MiB } from '../lib/driver-harness.js';
import { freePort, waitFor } from '../lib/wait.js';
import { scrape, sampleOf } from '../lib/prometheus.js';

let ceph: CephEnv;
let h: DriverHarness | undefined;
let url: string;

const run = new RbdDriverRun('tscsi-metrics-rbd-', 'mc');

beforeAll(async () => {
  const port = await freePort();
  url = `http://127.0.0.1:${port}/metrics`;
  h = await run.start({ metricsAddress: `127.0.0.1:${port}` });
  ceph = run.ceph;
}, 600_000);

afterAll(() => run.stop(), 180_000);

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

    await c.Node.NodeUnpublishVolume({ volume_id: id, target_path: target });
    await c.Node.NodeUnstageVolume({ volume_id: id, staging_target_path: staging });
    await c.Controller.DeleteVolume({ volume_id: id });
  });
});
