// driver/host/superblock.ts, fs.ts probe and loop.ts deviceSize against real filesystems on
// real loop devices: what they read from the device is what blkid, dumpe2fs and blockdev
// say; probe starts blkid only (no dumpe2fs, no blockdev), and what blkid sees beyond the
// superblock (an md RAID member's signature at the end) wins.
import { describe, it, expect, afterAll, afterEach, beforeAll } from 'vitest';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { readSuperblock } from '../../driver/host/superblock.js';
import { probe } from '../../driver/host/fs.js';
import { deviceSize } from '../../driver/host/loop.js';
import { observeChildProcesses } from '../../driver/host/exec.js';

const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tscsi-superblock-'));
const attached: string[] = [];
let n = 0;

async function device(mib: number, losetupArgs: string[] = []): Promise<string> {
  const img = path.join(dir, `d${n++}.img`);
  await execa('truncate', ['-s', `${mib}M`, img]);
  const dev = (await execa('losetup', ['-f', '--show', ...losetupArgs, img])).stdout.trim();
  attached.push(dev);
  return dev;
}

async function blkidType(dev: string): Promise<string | undefined> {
  const r = await execa('blkid', ['-p', '-o', 'value', '-s', 'TYPE', dev], { reject: false });
  return r.stdout.trim() || undefined;
}

async function dumpe2fsBytes(dev: string): Promise<bigint> {
  const out = (await execa('dumpe2fs', ['-h', dev], { reject: false })).stdout;
  return BigInt(/^Block count:\s+(\d+)/m.exec(out)![1]) * BigInt(/^Block size:\s+(\d+)/m.exec(out)![1]);
}

const spawned: string[] = [];
beforeAll(() => observeChildProcesses((tool) => spawned.push(tool)));
afterEach(() => {
  spawned.length = 0;
});
afterAll(async () => {
  observeChildProcesses(undefined);
  for (const d of attached) await execa('losetup', ['-d', d], { reject: false });
  await fs.rm(dir, { recursive: true, force: true });
});

describe('filesystems named from their superblock', () => {
  const cases: Array<{ mkfs: string; args: string[]; mib?: number; losetup?: string[] }> = [
    // As the driver attaches a volume and makes its filesystem.
    { mkfs: 'mkfs.ext4', args: ['-q', '-F', '-E', 'lazy_itable_init=1,lazy_journal_init=1'], losetup: ['--sector-size', '4096', '--direct-io=on'] },
    { mkfs: 'mkfs.ext4', args: ['-q', '-F', '-O', '64bit', '-b', '1024'] },
    { mkfs: 'mkfs.ext4', args: ['-q', '-F', '-O', '^has_journal'] },
    { mkfs: 'mkfs.ext4', args: ['-q', '-F', '-E', 'test_fs'] },
    { mkfs: 'mkfs.ext3', args: ['-q', '-F'] },
    { mkfs: 'mkfs.ext2', args: ['-q', '-F'] },
    { mkfs: 'mke2fs', args: ['-q', '-F', '-O', 'journal_dev'] },
    { mkfs: 'mkfs.xfs', args: ['-q', '-f'], mib: 512, losetup: ['--sector-size', '4096'] },
    { mkfs: 'mkfs.btrfs', args: ['-q', '-f'], mib: 512 },
  ];
  for (const c of cases) {
    it(`${c.mkfs} ${c.args.join(' ')}: the type blkid names${c.mkfs.startsWith('mkfs.ext') ? ', the size dumpe2fs gives' : ''}, spanning its device, blkid the only process`, async () => {
      const dev = await device(c.mib ?? 64, c.losetup);
      await execa(c.mkfs, [...c.args, dev]);
      const want = await blkidType(dev);
      expect(want).toBeDefined();
      spawned.length = 0;
      const got = await probe(dev);
      expect(spawned).toEqual(['blkid']);
      expect(got?.type).toBe(want);
      if (c.mkfs.startsWith('mkfs.ext')) expect(got?.fsBytes).toBe(await dumpe2fsBytes(dev));
      // Made on the whole device: it spans it to the last whole block.
      const size = BigInt((await execa('blockdev', ['--getsize64', dev])).stdout.trim());
      if (got?.fsBytes !== undefined && c.mkfs !== 'mke2fs') expect(size - got.fsBytes).toBeLessThan(BigInt(got.blockBytes!));
    });
  }

  it('a blank window into a file (no blocks to go by) and two signatures at once are left to blkid', async () => {
    const img = path.join(dir, 'pv.img');
    await execa('truncate', ['-s', '128M', img]);
    const win = (await execa('losetup', ['-f', '--show', '--offset', String(32 << 20), '--sizelimit', String(64 << 20), img])).stdout.trim();
    attached.push(win);
    expect(await readSuperblock(win)).toBeUndefined();
    expect(await probe(win)).toBeUndefined();
    expect(spawned).toEqual(['blkid']);

    // An ext4 with a stray xfs magic over its first block: blkid calls that ambivalent, and so may not we.
    const dev = await device(64);
    await execa('mkfs.ext4', ['-q', '-F', dev]);
    const h = await fs.open(dev, 'r+');
    const xfsHead = Buffer.alloc(8);
    xfsHead.write('XFSB', 0, 'latin1');
    xfsHead.writeUInt32BE(4096, 4);
    await h.write(xfsHead, 0, 8, 0);
    await h.sync();
    await h.close();
    expect(await readSuperblock(dev)).toBeUndefined();
  });
});

// An md RAID1 member with metadata 1.0 (its superblock near the device's end, the array's
// data from offset 0): the ext4 made on the array shows at the start of each member. As
// libblkid's raid/md.c checks it: magic, version 1, super_offset, checksum.
async function writeMd10Superblock(dev: string, bytes: number): Promise<void> {
  const sectors = bytes / 512;
  const sbSector = (sectors - 16) & ~7;
  const sb = Buffer.alloc(1024);
  sb.writeUInt32LE(0xa92b4efc, 0);
  sb.writeUInt32LE(1, 4);
  sb.write('tscsi-test:0', 32, 'latin1');
  sb.writeUInt32LE(1, 72); // raid1
  sb.writeBigUInt64LE(BigInt(sbSector), 80);
  sb.writeUInt32LE(2, 92);
  sb.writeBigUInt64LE(BigInt(sbSector), 136);
  sb.writeBigUInt64LE(BigInt(sbSector), 144);
  sb.writeUInt32LE(2, 220); // max_dev
  sb.writeUInt16LE(1, 258);
  let csum = 0n;
  for (let i = 0; i < 256 + 2 * 2; i += 4) csum += BigInt(sb.readUInt32LE(i));
  csum = (csum & 0xffffffffn) + (csum >> 32n);
  sb.writeUInt32LE(Number(csum & 0xffffffffn), 216);
  const h = await fs.open(dev, 'r+');
  await h.write(sb, 0, sb.length, sbSector * 512);
  await h.sync();
  await h.close();
}

describe('a signature beyond the superblock', () => {
  it('an ext4 that is an md RAID member is named a RAID member, as blkid names it, not ext4 (NodeStage then refuses it)', async () => {
    const dev = await device(64);
    await execa('mkfs.ext4', ['-q', '-F', dev]);
    await writeMd10Superblock(dev, 64 << 20);
    expect(await blkidType(dev)).toBe('linux_raid_member');
    expect((await readSuperblock(dev))?.type).toBe('ext4');
    expect((await probe(dev))?.type).toBe('linux_raid_member');
  });
});

describe('deviceSize', () => {
  it('is what blockdev --getsize64 says, for a 4096-byte-sector window with a size limit too, without a process', async () => {
    const plain = await device(72);
    const img = path.join(dir, 'win.img');
    await execa('truncate', ['-s', '256M', img]);
    const win = (await execa('losetup', ['-f', '--show', '--sector-size', '4096', '--offset', String(8 << 20), '--sizelimit', String(40 << 20), img])).stdout.trim();
    attached.push(win);
    for (const d of [plain, win]) {
      spawned.length = 0;
      const got = await deviceSize(d);
      expect(spawned).toEqual([]);
      expect(got).toBe(BigInt((await execa('blockdev', ['--getsize64', d])).stdout.trim()));
    }
    expect(await deviceSize(win)).toBe(40n << 20n);
  });
});
