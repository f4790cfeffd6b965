// driver/host/loop.ts against real loop devices: a device whose backing path was seen
// through a mount that no longer exists (a node plugin container that restarted) is still
// recognised as backed by the file.
import { describe, it, expect, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { devicesFor } from '../../driver/host/loop.js';

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
