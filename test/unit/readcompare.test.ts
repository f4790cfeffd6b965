// The read-compare behind computed deltas (RBD, LVM), on real child processes reading real
// files: which blocks it reports, that a known-same range is not compared, that a short or
// failed read is an error and never "unchanged", that a hung tool is given up, and that it
// leaves no tool running.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { readOutput, childProcessCounts, withCallSignal } from '../../driver/host/exec.js';
import { changedBlocks, compareBlockBytes } from '../../driver/host/readcompare.js';

const K = 1024;
const SIZE = 1024 * K;
let dir: string;
let base: string;
let target: string;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tscsi-readcompare-'));
  const bytes = randomBytes(SIZE);
  base = path.join(dir, 'base');
  await fs.writeFile(base, bytes);
  // One byte changed in block 3, two bytes across the border of blocks 8 and 9, block 12 written with its own bytes.
  const changed = Buffer.from(bytes);
  changed[3 * 64 * K + 17] ^= 0xff;
  changed[9 * 64 * K - 1] ^= 0xff;
  changed[9 * 64 * K] ^= 0xff;
  bytes.copy(changed, 12 * 64 * K, 12 * 64 * K, 13 * 64 * K);
  target = path.join(dir, 'target');
  await fs.writeFile(target, changed);
});

afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

const cat = (file: string) => readOutput('cat', [file]);
const rng = (offset: number, length: number) => ({ offset: BigInt(offset), length: BigInt(length) });

describe('changedBlocks', () => {
  it('reports exactly the blocks whose bytes differ, joined where they touch', async () => {
    expect(await changedBlocks(await cat(base), await cat(target), { sizeBytes: BigInt(SIZE), blockBytes: 64 * K })).toEqual([rng(3 * 64 * K, 64 * K), rng(8 * 64 * K, 128 * K)]);
    expect(await changedBlocks(await cat(base), await cat(base), { sizeBytes: BigInt(SIZE), blockBytes: 64 * K })).toEqual([]);
    expect(childProcessCounts().running).toBe(0);
  });

  it('reads a long output to its end every time (the tail is not lost when the tool exits)', async () => {
    const big = path.join(dir, 'big');
    await fs.writeFile(big, randomBytes(32 * SIZE));
    const dd = () => readOutput('dd', [`if=${big}`, 'bs=1M', 'status=none']);
    // Inside a call, as the driver runs it.
    await withCallSignal(new AbortController().signal, async () => {
      for (let i = 0; i < 6; i++) expect(await changedBlocks(await dd(), await dd(), { sizeBytes: BigInt(32 * SIZE), blockBytes: 64 * K })).toEqual([]);
    });
  });

  it('does not compare what the caller knows to be the same', async () => {
    const same = [rng(0, 4 * 64 * K)];
    expect(await changedBlocks(await cat(base), await cat(target), { sizeBytes: BigInt(SIZE), blockBytes: 64 * K, same })).toEqual([rng(8 * 64 * K, 128 * K)]);
  });

  it('fails on an output that ends early or a tool that fails, and stops the other tool', async () => {
    const short = readOutput('head', ['-c', String(100 * K), base]);
    await expect(changedBlocks(await short, await cat(target), { sizeBytes: BigInt(SIZE), blockBytes: 64 * K })).rejects.toThrow(/ended after 102400 of 1048576 bytes/);
    await expect(changedBlocks(await cat(path.join(dir, 'gone')), await readOutput('cat', ['/dev/zero']), { sizeBytes: BigInt(SIZE), blockBytes: 64 * K })).rejects.toThrow(/No such file/);
    expect(childProcessCounts().running).toBe(0);
  });

  it('gives up a tool that stays silent', async () => {
    const silent = await readOutput('sleep', ['30'], { idleTimeoutMs: 200 });
    await expect(changedBlocks(silent, await cat(base), { sizeBytes: BigInt(SIZE), blockBytes: 64 * K })).rejects.toThrow(/sleep 30 timed out/);
    expect(childProcessCounts().running).toBe(0);
  });
});

describe('compareBlockBytes', () => {
  it('is 64 KiB when it divides the size, else the largest power of two that does', () => {
    expect(compareBlockBytes(64n * 1024n * 1024n)).toBe(64 * K);
    expect(compareBlockBytes(64n * 1024n * 1024n + 4096n)).toBe(4 * K);
    expect(compareBlockBytes(1001n)).toBe(1);
  });
});
