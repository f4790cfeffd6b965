// The driver's own metrics (--metrics-address), scraped over HTTP from the real driver
// process after real RPCs on the loop backend: what Prometheus would store.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
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

/** Host tools the driver ran, of one tool (all outcomes). */
function toolRuns(s: Scrape, tool: string): number {
  return s.samples.filter((x) => x.name === 'tscsi_child_processes_seconds_count' && x.labels.tool === tool).reduce((a, x) => a + x.value, 0);
}

const lastRead = (s: Scrape, source: string) => sampleOf(s, 'tscsi_metrics_last_success_timestamp_seconds', { source });

// Thin pools need device-mapper, which this machine's kernel lacks: their data and metadata
// gauges are checked where dm is (the guest tier); here the volume group's own. This driver
// has the loop backend too, so one source can be slow or fail while the others answer.
describe('driver metrics on the lvm backend', () => {
  let lh: DriverHarness | undefined;
  let vg: TestVg | undefined;
  let lurl: string;
  /** The driver's own sbin: every tool of /usr/sbin linked, so one can be taken away (lvm) while it runs. */
  let sbin: string;
  let lockHolder: ResultPromise | undefined;
  let lock: { file: string; madeDir: string | undefined } | undefined;

  beforeAll(async () => {
    vg = await TestVg.create(await fs.mkdtemp('/tmp/tscsi-metrics-lvm-'), 1);
    sbin = path.join(vg.dir, 'sbin');
    await fs.mkdir(sbin);
    for (const t of await fs.readdir('/usr/sbin')) await fs.symlink(path.join('/usr/sbin', t), path.join(sbin, t));
    const port = await freePort();
    lurl = `http://127.0.0.1:${port}/metrics`;
    lh = await DriverHarness.start({
      env: { PATH: `${sbin}:/usr/local/bin:/usr/bin:/bin` },
      driver: { lvmVolumeGroups: vg.name, lvmDevices: vg.pvs.join(','), defaultBackend: 'lvm', metricsAddress: `127.0.0.1:${port}` },
    });
    lock = await vgLockFile();
  });
  afterAll(async () => {
    lockHolder?.kill();
    await lockHolder?.catch(() => undefined);
    await lh?.cleanup();
    await vg?.remove();
    if (lock) {
      await fs.rm(lock.file, { force: true });
      // Only a directory this file made, and only while empty: lvm's own locks may be in it now.
      if (lock.madeDir) await fs.rmdir(lock.madeDir).catch(() => undefined);
    }
  });

  /**
   * The VG's lock file where the driver's lvm takes it: lvm's locking_dir (as the driver's own
   * configuration gives it), made here when it is not there yet and removed again after.
   */
  async function vgLockFile(): Promise<{ file: string; madeDir: string | undefined }> {
    const r = await execa('lvm', ['lvmconfig', '--typeconfig', 'full', 'global/locking_dir'], { env: { LVM_SYSTEM_DIR: path.join(lh!.stateDir, 'lvm-conf'), LVM_SUPPRESS_FD_WARNINGS: '1' } });
    const dir = /^locking_dir="(.+)"$/m.exec(r.stdout)?.[1];
    if (!dir) throw new Error(`lvmconfig named no locking_dir: ${r.stdout}`);
    const madeDir = await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    return { file: path.join(dir, `V_${vg!.name}`), madeDir };
  }

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
  it('a scrape after the cache period runs lvm again; one right after it runs no host tool', async () => {
    const start = await scrape(lurl);
    // A scrape that read afresh: the cache period starts as it answers.
    const first = await waitFor('a scrape after the cache period to run lvm again', async () => {
      const s = await scrape(lurl);
      return lastRead(s, 'lvm')! > lastRead(start, 'lvm')! && s;
    }, { timeoutMs: 60_000, everyMs: 1_000 });
    expect(toolRuns(first, 'lvm')).toBeGreaterThan(toolRuns(start, 'lvm'));
    const second = await scrape(lurl);
    // Nothing else runs lvm between the two: the second answered from the cache.
    expect(toolRuns(second, 'lvm')).toBe(toolRuns(first, 'lvm'));
    expect(lastRead(second, 'lvm')).toBe(lastRead(first, 'lvm'));
  });

  it('a hung lvm (its VG lock held) makes the scrape answer in time with the other sources read, again and again, and lvm stale', async () => {
    const before = await scrape(lurl);
    // lvm waits for the VG's file lock, as behind a stuck lvm command on a node.
    lockHolder = execa('flock', ['-x', lock!.file, 'sh', '-c', 'echo held; exec cat'], { stdin: 'pipe', stdout: 'pipe' });
    await new Promise<void>((resolve) => lockHolder!.stdout!.once('data', () => resolve()));
    try {
      await hungLvmAnswers(before);
    } finally {
      lockHolder.stdin!.end();
      await lockHolder;
      lockHolder = undefined;
    }
    await waitFor('lvm to be read again once its lock is free', async () => lastRead(await scrape(lurl), 'lvm')! > lastRead(before, 'lvm')!, { timeoutMs: 90_000, everyMs: 1_000 });
  });

  /** What a scrape shows while lvm waits for its lock. */
  async function hungLvmAnswers(before: Scrape): Promise<void> {
    const timeoutsBefore = sampleOf(before, 'tscsi_metrics_collect_errors_total', { source: 'timeout' }) ?? 0;
    const during = await waitFor('a scrape that timed out waiting for lvm', async () => {
      const s = await scrape(lurl);
      return (sampleOf(s, 'tscsi_metrics_collect_errors_total', { source: 'timeout' }) ?? 0) > timeoutsBefore && s;
    }, { timeoutMs: 90_000, everyMs: 1_000 });
    // The scrape answered while lvm still waited: loop and node were read, lvm was not.
    expect(lastRead(during, 'loop')).toBeGreaterThan(lastRead(before, 'loop')!);
    expect(lastRead(during, 'node')).toBeGreaterThan(lastRead(before, 'node')!);
    expect(lastRead(during, 'lvm')).toBe(lastRead(before, 'lvm'));
    expect(sampleOf(during, 'tscsi_pool_capacity_bytes', { backend: 'loop', pool: lh!.dataDir, part: 'data' })).toBeGreaterThan(0);
    // lvm's last values stay (it has not failed, only not finished), with their age shown
    expect(sampleOf(during, 'tscsi_pool_capacity_bytes', { backend: 'lvm', pool: vg!.name, part: 'data' })).toBeGreaterThan(0);
    expect(sampleOf(during, 'tscsi_child_processes', { state: 'running' })).toBeGreaterThanOrEqual(1);
    // Each source on its own clock: past the cache period loop and node are read again while
    // lvm still hangs (one stuck source used to hold back every other source's next read).
    const later = await waitFor('loop and node read again while lvm still hangs', async () => {
      const s = await scrape(lurl);
      return lastRead(s, 'loop')! > lastRead(during, 'loop')! && lastRead(s, 'node')! > lastRead(during, 'node')! && s;
    }, { timeoutMs: 60_000, everyMs: 1_000 });
    expect(lastRead(later, 'lvm')).toBe(lastRead(before, 'lvm'));
  }

  it('a failing lvm (the tool gone) loses its series and counts an error; loop and node keep theirs', async () => {
    const before = await scrape(lurl);
    expect(sampleOf(before, 'tscsi_volumes', { backend: 'lvm' })).toBe(0);
    await fs.rm(path.join(sbin, 'lvm'));
    try {
      const after = await waitFor('the lvm source to fail at scrape time', async () => {
        const s = await scrape(lurl);
        return (sampleOf(s, 'tscsi_metrics_collect_errors_total', { source: 'lvm' }) ?? 0) > (sampleOf(before, 'tscsi_metrics_collect_errors_total', { source: 'lvm' }) ?? 0) && s;
      }, { timeoutMs: 60_000, everyMs: 1_000 });
      for (const name of ['tscsi_pool_capacity_bytes', 'tscsi_pool_free_bytes', 'tscsi_volumes', 'tscsi_snapshots']) {
        expect([name, after.samples.filter((x) => x.name === name && x.labels.backend === 'lvm')]).toEqual([name, []]);
      }
      expect(lastRead(after, 'lvm')).toBe(lastRead(before, 'lvm'));
      expect(lastRead(after, 'loop')).toBeGreaterThan(lastRead(before, 'loop')!);
      expect(sampleOf(after, 'tscsi_volumes', { backend: 'loop' })).toBe(0);
      expect(sampleOf(after, 'tscsi_pool_capacity_bytes', { backend: 'loop', pool: lh!.dataDir, part: 'data' })).toBeGreaterThan(0);
      expect(sampleOf(after, 'tscsi_node_staged_volumes')).toBe(0);
    } finally {
      await fs.symlink('/usr/sbin/lvm', path.join(sbin, 'lvm'));
    }
  });
});
