// A bind remount the kernel refuses (#11 item 14): NodePublishVolume binds the staged
// filesystem, then remounts the bind read-only and with the pod's per-mount flags. A node
// plugin in a user namespace (Kubernetes' user-namespaced pods, rootless containers) sees the
// host's mounts with their flags locked, and the kernel refuses (EPERM) a remount that changes
// a locked atime flag, although noatime is a valid flag. Here the real driver, node mode,
// runs inside `unshare -Urm` on the same data and state directories as the normal driver
// that created and staged a volume on a real loop device; the refusal is the kernel's own.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { DriverHarness, DRIVER_MAIN, mountCap, MiB } from '../lib/driver-harness.js';
import { CsiClient, codeName } from '../../sidecars/common/csi-client.js';

let h: DriverHarness;
let volumeId: string;
let staging: string;
let userns: ChildProcess | undefined;
let nsClient: CsiClient | undefined;

const nsSocket = () => path.join(h.dir, 'userns.sock');

/** The userns driver's own mount table (its bind mounts are private to its namespace). */
async function usernsMountTargets(): Promise<string[]> {
  const text = await fs.readFile(`/proc/${userns!.pid}/mountinfo`, 'utf8');
  return text.split('\n').filter(Boolean).map((l) => l.split(' ')[4]);
}

async function startUsernsDriver(): Promise<void> {
  const log = await fs.open(path.join(h.dir, 'userns-driver.log'), 'a');
  // unshare execs node in place (no --fork): the child's PID is the driver's.
  userns = spawn(
    'unshare',
    ['-Urm', process.execPath, DRIVER_MAIN, '--mode', 'node', '--endpoint', `unix://${nsSocket()}`, '--node-id', h.nodeId,
      '--data-dir', h.dataDir, '--state-dir', h.stateDir, '--allowed-path-root', path.join(h.dir, 'pods'), '--log-level', 'debug'],
    { stdio: ['ignore', 'ignore', log.fd] },
  );
  await log.close();
  const until = Date.now() + 20_000;
  for (;;) {
    if (userns.exitCode !== null) throw new Error(`userns driver exited: ${await fs.readFile(path.join(h.dir, 'userns-driver.log'), 'utf8')}`);
    if (Date.now() > until) throw new Error('userns driver did not become ready');
    if (existsSync(nsSocket())) {
      const probe = new CsiClient(nsSocket(), 2_000);
      const ready = await probe.Identity.Probe({}).then((r) => r.ready?.value === true, () => false);
      probe.close();
      if (ready) break;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  nsClient = new CsiClient(nsSocket());
}

async function stopUsernsDriver(): Promise<void> {
  nsClient?.close();
  const p = userns;
  if (!p || p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise((r) => p.once('exit', r));
  p.kill('SIGKILL'); // its namespace, and every mount in it, goes with it
  await exited;
}

beforeAll(async () => {
  h = await DriverHarness.start();
  const c = h.client!;
  volumeId = (await c.Controller.CreateVolume({ name: 'remount', capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [mountCap('ext4')] })).volume.volume_id;
  staging = path.join(h.dir, 'staging', 'remount');
  await fs.mkdir(staging);
  await c.Node.NodeStageVolume({ volume_id: volumeId, staging_target_path: staging, volume_capability: mountCap('ext4') });
  await startUsernsDriver();
});

afterAll(async () => {
  // The userns driver first: its namespace holds a copy of the staging mount, which would keep the loop device busy.
  await stopUsernsDriver();
  if (h && volumeId) {
    await h.client!.Node.NodeUnstageVolume({ volume_id: volumeId, staging_target_path: staging }).catch(() => undefined);
    await h.client!.Controller.DeleteVolume({ volume_id: volumeId }).catch(() => undefined);
  }
  await h?.cleanup();
});

describe('NodePublishVolume when the kernel refuses the bind remount', () => {
  it('a refused per-mount flag is FAILED_PRECONDITION, and the bind mount, the target and the record are taken back', async () => {
    const target = path.join(h.dir, 'pods', 'p1', 'mount');
    const req = { volume_id: volumeId, staging_target_path: staging, target_path: target, readonly: true };
    const refused = await nsClient!.Node.NodePublishVolume({ ...req, volume_capability: mountCap('ext4', 'SINGLE_NODE_WRITER', ['noatime']) }).catch((e: unknown) => e);
    expect(codeName(refused)).toBe('FAILED_PRECONDITION');
    expect((refused as { details: string }).details).toMatch(/refused mount flag\(s\) noatime/);
    expect(await usernsMountTargets()).not.toContain(target);
    expect(existsSync(target)).toBe(false);
    const rec = JSON.parse(await fs.readFile(path.join(h.stateDir, `${volumeId}.json`), 'utf8')) as { publications: Record<string, unknown> };
    expect(Object.keys(rec.publications)).toEqual([]);

    // The same publish without the flag works in that namespace: the refusal was the flag's.
    await nsClient!.Node.NodePublishVolume({ ...req, volume_capability: mountCap('ext4') });
    expect(await usernsMountTargets()).toContain(target);
    await nsClient!.Node.NodeUnpublishVolume({ volume_id: volumeId, target_path: target });
    expect(await usernsMountTargets()).not.toContain(target);
    expect(existsSync(target)).toBe(false);
  });
});
