// A driver killed while mkfs runs leaves whatever mkfs had written so far: for XFS that
// can be a valid primary superblock over a filesystem that does not exist yet. blkid then
// says "xfs", and a retried NodeStage that trusts it mounts garbage and fails for ever.
// Which bytes a real kill leaves depends on timing, so after the real kill (fail point
// host.mkfs:during) the test writes exactly that state: the first 4 KiB of a real XFS.
import { describe, it, expect, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { DriverHarness, mountCap, MiB } from '../lib/driver-harness.js';
import { codeName } from '../../sidecars/common/csi-client.js';

let h: DriverHarness | undefined;

afterAll(async () => {
  await h?.cleanup();
});

describe('a driver killed during mkfs', () => {
  it('formats the device again on the retried NodeStage, even when a superblock was already written', async () => {
    h = await DriverHarness.start({ failpoints: 'host.mkfs:during' });
    const cap = mountCap('xfs');
    const size = 320 * MiB;
    const vol = (await h.client!.Controller.CreateVolume({ name: 'pvc-mkfs-crash', capacity_range: { required_bytes: String(size) }, volume_capabilities: [cap] })).volume;
    const staging = path.join(h.dir, 'staging', 'mkfs-crash');

    const died = new Promise<NodeJS.Signals | null>((r) => h!.proc!.once('exit', (_code, sig) => r(sig)));
    const first = await h.client!.Node.NodeStageVolume({ volume_id: vol.volume_id, staging_target_path: staging, volume_capability: cap }).then(() => 'OK', (e) => codeName(e));
    expect(first).toBe('UNAVAILABLE');
    expect(await died).toBe('SIGKILL');
    expect(await h.log()).toContain('host.mkfs:during');

    // The device the killed NodeStage attached, and a half-made filesystem on it.
    const loops = (await execa('losetup', ['-l', '-n', '-O', 'NAME,BACK-FILE'])).stdout.split('\n').map((l) => l.trim().split(/\s+/));
    const device = loops.find(([, back]) => back?.includes(`${vol.volume_id}.img`))?.[0];
    expect(device).toMatch(/^\/dev\/loop\d+$/);
    const scratch = path.join(h.dir, 'scratch-xfs.img');
    await fs.writeFile(scratch, '');
    await fs.truncate(scratch, size);
    await execa('mkfs.xfs', ['-q', '-f', scratch]);
    await execa('blkdiscard', [device!]);
    await execa('dd', [`if=${scratch}`, `of=${device}`, 'bs=4096', 'count=1', 'conv=fsync,notrunc', 'status=none']);
    await fs.rm(scratch);
    expect((await execa('blkid', ['-o', 'value', '-s', 'TYPE', '-p', device!], { reject: false })).stdout.trim()).toBe('xfs');

    await h.stopProcess('SIGKILL');
    await h.startProcess();
    await h.client!.Node.NodeStageVolume({ volume_id: vol.volume_id, staging_target_path: staging, volume_capability: cap });
    const m = await execa('findmnt', ['-n', '-o', 'FSTYPE', '--mountpoint', staging]);
    expect(m.stdout.trim()).toBe('xfs');
    await fs.writeFile(path.join(staging, 'data.txt'), 'written after the retry');
    expect(await fs.readFile(path.join(staging, 'data.txt'), 'utf8')).toBe('written after the retry');

    await h.client!.Node.NodeUnstageVolume({ volume_id: vol.volume_id, staging_target_path: staging });
    await h.client!.Controller.DeleteVolume({ volume_id: vol.volume_id });
  }, 90_000);
});
