// What a production driver owes its users beyond the happy path: one volume per name under
// a burst of retries, hostile input refused before it touches anything, half-done work
// finished after a crash, a socket only root can use, a graceful stop, no secrets in logs.
import { describe, it, expect } from 'vitest';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { type DriverHarness, mountCap, blockCap, MiB, loopDevicesUnder } from '../lib/driver-harness.js';
import { driverPerFile } from '../lib/driver-per-file.js';
import { codeName, type CsiClient } from '../../sidecars/common/csi-client.js';

let h: DriverHarness;
let c: CsiClient;
driverPerFile((driver, client) => ([h, c] = [driver, client]));

const outcomeOf = (p: Promise<unknown>) => p.then(() => 'OK', (e) => codeName(e));

/**
 * What this test's driver could have changed, and nothing a neighbour owns: loop devices
 * backed by files under the harness's directory, mounts below it and mounts of those
 * devices anywhere (a volume mounted over /etc shows), and the volume files. Other test
 * files attach and mount their own devices while this one runs; a host-wide listing of
 * every loop device and mount flaked on them.
 */
async function ownedSnapshot() {
  const loops = (await loopDevicesUnder(h.dir)).sort();
  const mounts = (await execa('findmnt', ['-rn', '-o', 'TARGET,SOURCE'])).stdout
    .split('\n')
    .map((l) => l.split(' '))
    .filter(([target, source = '']) => target === h.dir || target.startsWith(h.dir + '/') || loops.includes(source.replace(/\[.*\]$/, '')))
    .map((f) => f.join(' '))
    .sort();
  const files = await fs.readdir(path.join(h.dataDir, 'volumes'));
  return { loops, mounts, files: files.sort() };
}

/** A neighbour test at work: a loop device and a mount of its own, outside the harness. */
async function neighbour(): Promise<() => Promise<void>> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tscsi-safety-neighbour-'));
  await execa('truncate', ['-s', '8M', path.join(dir, 'img')]);
  const dev = (await execa('losetup', ['-f', '--show', path.join(dir, 'img')])).stdout.trim();
  await fs.mkdir(path.join(dir, 'mnt'));
  await execa('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tscsi-neighbour', path.join(dir, 'mnt')]);
  return async () => {
    await execa('umount', [path.join(dir, 'mnt')], { reject: false });
    await execa('losetup', ['-d', dev], { reject: false });
    await fs.rm(dir, { recursive: true, force: true });
  };
}

describe('concurrency', () => {
  it('twenty parallel CreateVolume calls with one name make exactly one volume', async () => {
    const req = { name: 'pvc-burst', capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [mountCap()] };
    const results = await Promise.all(Array.from({ length: 20 }, () => c.Controller.CreateVolume(req).then((r) => r.volume.volume_id, (e) => codeName(e))));
    const ids = new Set(results.filter((r) => r?.startsWith('vol-')));
    expect(ids.size).toBe(1);
    for (const r of results) expect([...ids, 'ABORTED']).toContain(r);
    // A retry after the burst returns the same volume.
    const again = await c.Controller.CreateVolume(req);
    expect(again.volume.volume_id).toBe([...ids][0]);
    const listed = (await c.Controller.ListVolumes({})).entries.filter((e: any) => e.volume.volume_id === again.volume.volume_id);
    expect(listed).toHaveLength(1);
    expect((await fs.readdir(path.join(h.dataDir, 'volumes'))).filter((f) => f.endsWith('.img'))).toHaveLength(1);
    // Same name, different size: the spec's ALREADY_EXISTS.
    expect(await outcomeOf(c.Controller.CreateVolume({ ...req, capacity_range: { required_bytes: String(128 * MiB), limit_bytes: String(128 * MiB) } }))).toBe('ALREADY_EXISTS');
    await c.Controller.DeleteVolume({ volume_id: again.volume.volume_id });
  });

  it('a second operation on a volume that is busy gets ABORTED', async () => {
    const v = (await c.Controller.CreateVolume({ name: 'pvc-busy', capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [mountCap('ext4')] })).volume;
    const staging = path.join(h.dir, 'staging', 'busy');
    await fs.mkdir(staging, { recursive: true });
    const [stage, expand] = await Promise.all([
      outcomeOf(c.Node.NodeStageVolume({ volume_id: v.volume_id, staging_target_path: staging, volume_capability: mountCap('ext4') })),
      outcomeOf(c.Controller.ControllerExpandVolume({ volume_id: v.volume_id, capacity_range: { required_bytes: String(96 * MiB) } })),
    ]);
    // Sent together they overlap: one runs, the other is told ABORTED and nothing else.
    expect([stage, expand].sort()).toEqual(['ABORTED', 'OK']);
    if (stage === 'OK') await c.Node.NodeUnstageVolume({ volume_id: v.volume_id, staging_target_path: staging });
    await c.Controller.DeleteVolume({ volume_id: v.volume_id });
  });
});

describe('hostile input', () => {
  it('is refused with INVALID_ARGUMENT (or the spec code) and touches nothing', async () => {
    const cap = mountCap();
    const traversal = '../../etc';
    const cases: Array<[string, () => Promise<unknown>, string[]]> = [
      ['DeleteVolume ../../etc', () => c.Controller.DeleteVolume({ volume_id: traversal }), ['INVALID_ARGUMENT']],
      ['NodeStage ../../etc', () => c.Node.NodeStageVolume({ volume_id: traversal, staging_target_path: path.join(h.dir, 's'), volume_capability: cap }), ['INVALID_ARGUMENT']],
      ['NodePublish ../../etc', () => c.Node.NodePublishVolume({ volume_id: traversal, staging_target_path: path.join(h.dir, 's'), target_path: path.join(h.dir, 't'), volume_capability: cap }), ['INVALID_ARGUMENT']],
      ['ControllerPublish ../../etc', () => c.Controller.ControllerPublishVolume({ volume_id: traversal, node_id: h.nodeId, volume_capability: cap }), ['INVALID_ARGUMENT']],
      ['CreateSnapshot of ../../etc', () => c.Controller.CreateSnapshot({ name: 's', source_volume_id: traversal }), ['INVALID_ARGUMENT']],
      ['DeleteSnapshot ../x', () => c.Controller.DeleteSnapshot({ snapshot_id: '../x' }), ['INVALID_ARGUMENT']],
      ['name with NUL', () => c.Controller.CreateVolume({ name: 'pvc-\u0000-x', volume_capabilities: [cap] }), ['INVALID_ARGUMENT']],
      ['10 kB name', () => c.Controller.CreateVolume({ name: 'n'.repeat(10_240), volume_capabilities: [cap] }), ['INVALID_ARGUMENT']],
      ['capacity 2^63-1', () => c.Controller.CreateVolume({ name: 'pvc-huge', capacity_range: { required_bytes: '9223372036854775807' }, volume_capabilities: [cap] }), ['OUT_OF_RANGE']],
      ['capacity 2^63', () => c.Controller.CreateVolume({ name: 'pvc-huge2', capacity_range: { required_bytes: '9223372036854775808' }, volume_capabilities: [cap] }), ['INVALID_ARGUMENT', 'OUT_OF_RANGE']],
      ['unknown fsType', () => c.Controller.CreateVolume({ name: 'pvc-fs', volume_capabilities: [mountCap('ntfs')] }), ['INVALID_ARGUMENT']],
      ['fsType with shell', () => c.Controller.CreateVolume({ name: 'pvc-fs2', volume_capabilities: [mountCap('ext4;reboot')] }), ['INVALID_ARGUMENT']],
      ['mount flag with comma', () => c.Controller.CreateVolume({ name: 'pvc-mf', volume_capabilities: [mountCap('', 'SINGLE_NODE_WRITER', ['ro,exec'])] }), ['INVALID_ARGUMENT']],
      ['mount flag exec', () => c.Controller.CreateVolume({ name: 'pvc-mf2', volume_capabilities: [mountCap('', 'SINGLE_NODE_WRITER', ['exec'])] }), ['INVALID_ARGUMENT']],
      ['mkfsOptions with a device path', () => c.Controller.CreateVolume({ name: 'pvc-mk', parameters: { mkfsOptions: '-L x /dev/sda' }, volume_capabilities: [cap] }), ['INVALID_ARGUMENT']],
      ['unknown backend', () => c.Controller.CreateVolume({ name: 'pvc-be', parameters: { backend: '../loop' }, volume_capabilities: [cap] }), ['INVALID_ARGUMENT']],
      ['unknown parameter', () => c.Controller.CreateVolume({ name: 'pvc-p', parameters: { fstype: 'ext4' }, volume_capabilities: [cap] }), ['INVALID_ARGUMENT']],
      ['relative staging path', () => c.Node.NodeStageVolume({ volume_id: 'vol-loop-00000000000000000000000000000000', staging_target_path: 'rel/path', volume_capability: cap }), ['INVALID_ARGUMENT']],
      ['staging path with ..', () => c.Node.NodeStageVolume({ volume_id: 'vol-loop-00000000000000000000000000000000', staging_target_path: '/tmp/../etc', volume_capability: cap }), ['INVALID_ARGUMENT']],
      ['garbage list token', () => c.Controller.ListVolumes({ starting_token: 'not-a-token' }), ['ABORTED']],
    ];
    const before = await ownedSnapshot();
    // Another test attaching and mounting meanwhile is none of this test's business.
    const leaveNeighbour = await neighbour();
    try {
      for (const [what, call, codes] of cases) {
        const got = await outcomeOf(call());
        expect(codes, what).toContain(got);
      }
      expect(await ownedSnapshot()).toEqual(before);
    } finally {
      await leaveNeighbour();
    }
  });

  it('does not unmount a path that is not its volume', async () => {
    const v = (await c.Controller.CreateVolume({ name: 'pvc-victim', capacity_range: { required_bytes: String(32 * MiB) }, volume_capabilities: [mountCap('ext4')] })).volume;
    // The pool itself is a mount the driver must never be tricked into removing.
    const code = await outcomeOf(c.Node.NodeUnpublishVolume({ volume_id: v.volume_id, target_path: h.dataDir }));
    expect(code).toBe('FAILED_PRECONDITION');
    expect((await execa('findmnt', ['-n', '--mountpoint', h.dataDir])).stdout).toContain(h.dataDir);
    await c.Controller.DeleteVolume({ volume_id: v.volume_id });
  });
});

describe('crash safety', () => {
  it('start-up finishes half-done creates and deletes; a killed driver comes back to the same volumes', async () => {
    const v = (await c.Controller.CreateVolume({ name: 'pvc-survivor', capacity_range: { required_bytes: String(32 * MiB) }, volume_capabilities: [blockCap()] })).volume;
    await h.stopProcess('SIGKILL');
    const vols = path.join(h.dataDir, 'volumes');
    // Leftovers of a crash at every step: a temp file, an image whose record was never
    // written (create), a record whose image was already removed (delete).
    await fs.writeFile(path.join(vols, 'vol-loop-11111111111111111111111111111111.img.tmp'), '');
    await fs.writeFile(path.join(vols, 'vol-loop-22222222222222222222222222222222.img'), '');
    await fs.writeFile(path.join(vols, 'vol-loop-33333333333333333333333333333333.json'), '{}');
    await h.startProcess();
    c = h.client!;
    const left = await fs.readdir(vols);
    expect(left).toEqual(expect.arrayContaining([`${v.volume_id}.img`, `${v.volume_id}.json`]));
    expect(left.filter((f) => /-(1{32}|2{32}|3{32})/.test(f))).toEqual([]);
    const again = await c.Controller.CreateVolume({ name: 'pvc-survivor', capacity_range: { required_bytes: String(32 * MiB) }, volume_capabilities: [blockCap()] });
    expect(again.volume.volume_id).toBe(v.volume_id);
    expect(await h.log()).toMatch(/create that did not finish/);
    await c.Controller.DeleteVolume({ volume_id: v.volume_id });
  });

  it('a node plugin restart after a reboot-like loss of the loop device re-attaches at NodeStage', async () => {
    const cap = mountCap('ext4');
    const v = (await c.Controller.CreateVolume({ name: 'pvc-reboot', capacity_range: { required_bytes: String(32 * MiB) }, volume_capabilities: [cap] })).volume;
    const staging = path.join(h.dir, 'staging', 'reboot');
    await fs.mkdir(staging, { recursive: true });
    await c.Node.NodeStageVolume({ volume_id: v.volume_id, staging_target_path: staging, volume_capability: cap });
    await fs.writeFile(path.join(staging, 'marker'), 'before reboot');
    // A reboot loses mounts and loop devices; the staging record on disk stays.
    await h.stopProcess('SIGKILL');
    await execa('umount', [staging]);
    for (const d of await loopDevicesUnder(path.join(h.dataDir, 'volumes'))) await execa('losetup', ['-d', d]);
    await h.startProcess();
    c = h.client!;
    await c.Node.NodeStageVolume({ volume_id: v.volume_id, staging_target_path: staging, volume_capability: cap });
    expect(await fs.readFile(path.join(staging, 'marker'), 'utf8')).toBe('before reboot');
    await c.Node.NodeUnstageVolume({ volume_id: v.volume_id, staging_target_path: staging });
    await c.Controller.DeleteVolume({ volume_id: v.volume_id });
  });
});

describe('the server', () => {
  it('serves on a 0600 socket, replaces a stale one, keeps secrets out of its log, and removes its socket on SIGTERM', async () => {
    expect((await fs.stat(h.socket)).mode & 0o777).toBe(0o600);
    const info = await c.Identity.GetPluginInfo({});
    expect(info.name).toBe('csi.tscsi.dev');
    const secret = 'hunter2-do-not-log';
    await outcomeOf(c.Controller.CreateVolume({ name: '', secrets: { password: secret }, volume_capabilities: [mountCap()] }));
    await outcomeOf(c.Controller.CreateVolume({ name: 'pvc-secret', secrets: { password: secret }, capacity_range: { required_bytes: '-1' }, volume_capabilities: [mountCap()] }));
    const log = await h.log();
    expect(log).not.toContain(secret);
    const lines = log.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.some((l) => l.rpc === 'CreateVolume' && l.code === 'INVALID_ARGUMENT')).toBe(true);

    expect(await h.stopProcess('SIGTERM')).toBe(0);
    await expect(fs.stat(h.socket)).rejects.toThrow();
    // A socket left by a crash is replaced at the next start.
    await h.startProcess();
    await h.stopProcess('SIGKILL');
    expect((await fs.lstat(h.socket)).isSocket()).toBe(true);
    await h.startProcess();
    c = h.client!;
    expect((await c.Identity.Probe({})).ready.value).toBe(true);
  });
});
