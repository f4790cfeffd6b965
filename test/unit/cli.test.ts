// The CLI's own pieces (cli/): where it finds the driver, and which loop devices its demo
// unmounts and detaches, read from the real `findmnt -J` and `losetup -J` on real mounts and
// a real loop device.
import { afterEach, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { driverEntryPoint, loopDevicesBelow, mountsBelow } from '../../cli/demo.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('tscsi-cli', () => {
  it('finds the driver through the package\'s "tscsi/driver" export, not a path relative to itself', () => {
    expect(driverEntryPoint()).toBe(path.join(ROOT, 'dist', 'driver', 'main.js'));
  });

  it('picks from losetup -J exactly the loop devices backed by files below its directory, spaces and all', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tscsi cli demo '));
    cleanups.push(async () => fs.rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'data pool.img');
    fs.writeFileSync(file, '');
    fs.truncateSync(file, 1 << 20);
    const dev = (await execa('losetup', ['--find', '--show', file])).stdout.trim();
    cleanups.push(() => execa('losetup', ['-d', dev], { reject: false }));
    const out = (await execa('losetup', ['-J', '-l', '-O', 'NAME,BACK-FILE'])).stdout;
    expect(loopDevicesBelow(out, dir)).toEqual([dev]);
    expect(loopDevicesBelow(out, dir.slice(0, -1))).toEqual([]); // a sibling directory's prefix is not below it
    expect(loopDevicesBelow('', dir)).toEqual([]); // losetup prints nothing when no device exists
  });

  it('unmounts from findmnt -J the mounts below its directory, deepest first', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tscsi-cli-mnt-'));
    cleanups.push(async () => fs.rmSync(dir, { recursive: true, force: true }));
    const outer = path.join(dir, 'pool');
    const inner = path.join(outer, 'staging vol');
    fs.mkdirSync(outer);
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tscsi-cli-test', outer]);
    cleanups.push(() => execa('umount', [outer], { reject: false }));
    fs.mkdirSync(inner);
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tscsi-cli-test', inner]);
    cleanups.push(() => execa('umount', [inner], { reject: false }));
    const out = (await execa('findmnt', ['-J', '-l', '-o', 'TARGET'])).stdout;
    expect(mountsBelow(out, dir)).toEqual([inner, outer]);
    expect(mountsBelow(out, outer + 'x')).toEqual([]);
  });
});
