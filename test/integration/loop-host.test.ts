// driver/host/loop.ts against real loop devices: a device whose backing path was seen
// through a mount that no longer exists (a node plugin container that restarted) is still
// recognised as backed by the file; a device's binding read from sysfs is what losetup says.
import { describe, it, expect, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { devicesFor, detachAll, describe as describeLoop } from '../../driver/host/loop.js';

const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tscsi-loophost-'));
const attached: string[] = [];

afterAll(async () => {
  for (const d of attached) await execa('losetup', ['-d', d], { reject: false });
  await execa('umount', ['-l', path.join(dir, 'view')], { reject: false });
  await fs.rm(dir, { recursive: true, force: true });
});

describe('devicesFor', () => {
  it('finds a device by path, and by inode when it was attached through a mount that is gone', async () => {
    const real = path.join(dir, 'store');
    const view = path.join(dir, 'view');
    await fs.mkdir(real);
    await fs.mkdir(view);
    const img = path.join(real, 'vol.img');
    await execa('truncate', ['-s', '16M', img]);
    const other = path.join(real, 'other.img');
    await execa('truncate', ['-s', '16M', other]);

    // As a container would: attach through its own view of the directory ...
    await execa('mount', ['--bind', real, view]);
    const dev = (await execa('losetup', ['-f', '--show', path.join(view, 'vol.img')])).stdout.trim();
    attached.push(dev);
    expect((await devicesFor(path.join(view, 'vol.img'))).map((d) => d.name)).toEqual([dev]);
    // ... then the container goes away, and with it that view.
    await execa('umount', ['-l', view]);
    const shown = (await fs.readFile(`/sys/block/${path.basename(dev)}/loop/backing_file`, 'utf8')).trim();
    expect(shown).not.toBe(img);

    expect((await devicesFor(img)).map((d) => d.name)).toEqual([dev]);
    expect(await devicesFor(other)).toEqual([]);
  });
});

describe('describe', () => {
  it("says what losetup says of a bound device (window offset and size, read-only, direct I/O), and nothing of an unbound one or a non-loop path", async () => {
    const img = path.join(dir, 'window.img');
    await execa('truncate', ['-s', '64M', img]);
    const dev = (await execa('losetup', ['-f', '--show', '--offset', '4194304', '--sizelimit', '8388608', '-r', '--direct-io=on', img])).stdout.trim();
    attached.push(dev);
    const plain = (await execa('losetup', ['-f', '--show', img])).stdout.trim();
    attached.push(plain);
    const fromLosetup = async (d: string) => {
      const j = JSON.parse((await execa('losetup', ['-l', '-J', '-O', 'NAME,BACK-FILE,SIZELIMIT,OFFSET,RO,DIO', d])).stdout) as {
        loopdevices: Array<{ name: string; 'back-file': string; sizelimit: number; offset: number; ro: boolean; dio: boolean }>;
      };
      const x = j.loopdevices[0];
      return { name: x.name, backFile: x['back-file'], sizeLimit: Number(x.sizelimit), offset: Number(x.offset), readOnly: !!x.ro, directIO: !!x.dio };
    };
    expect(await describeLoop(dev)).toEqual(await fromLosetup(dev));
    expect(await describeLoop(dev)).toMatchObject({ offset: 4194304, sizeLimit: 8388608, readOnly: true, backFile: await fs.realpath(img) });
    expect(await describeLoop(plain)).toEqual(await fromLosetup(plain));
    expect(await describeLoop(plain)).toMatchObject({ offset: 0, sizeLimit: 0, readOnly: false });

    await execa('losetup', ['-d', plain]);
    expect(await describeLoop(plain)).toBeUndefined();
    expect(await describeLoop('/dev/null')).toBeUndefined();
    expect(await describeLoop(img)).toBeUndefined();
  });
});

describe('detachAll', () => {
  it('answers once the device is unbound, also when something held it open at the detach (losetup -d only marks it autoclear then)', async () => {
    const img = path.join(dir, 'held.img');
    await execa('truncate', ['-s', '16M', img]);
    const dev = (await execa('losetup', ['-f', '--show', img])).stdout.trim();
    attached.push(dev);
    // As an lvm or blkid scan of every block device does: open, read a little, close.
    const holder = await fs.open(dev, 'r');
    const released = new Promise<void>((resolve) => setTimeout(() => void holder.close().then(resolve), 300));
    try {
      await detachAll(img);
      // Before the fix: still bound here (autoclear pending), so a DeleteVolume right after
      // an answered NodeUnstage refused with "still attached".
      expect(await devicesFor(img)).toEqual([]);
    } finally {
      await released;
    }
  });
});
