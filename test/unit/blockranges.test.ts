// The range math of changed-block tracking, on extent maps shaped like the ones XFS gives
// two reflinked snapshots (test/integration/snapshot-metadata.test.ts checks it on real files).
import { describe, it, expect } from 'vitest';
import { allocatedRanges, blocksIn, changedRanges, coalesce, outsideBoth, pages, type Extent } from '../../driver/blockranges.js';
import { parseFiemap } from '../../driver/host/extents.js';

const K = 1024n;
const ext = (logical: bigint, physical: bigint, length: bigint, flags = 0): Extent => ({ logical, physical, length, flags });
const rng = (offset: bigint, length: bigint) => ({ offset, length });

describe('coalesce', () => {
  it('joins touching and overlapping ranges and drops empty ones', () => {
    expect(coalesce([rng(0n, 4n), rng(4n, 4n), rng(6n, 4n), rng(20n, 0n), rng(30n, 1n)])).toEqual([rng(0n, 10n), rng(30n, 1n)]);
  });
});

describe('allocatedRanges', () => {
  it('is the extents, sorted and joined where they touch', () => {
    expect(allocatedRanges([ext(64n * K, 9000n * K, 8n * K), ext(4n * K, 80n * K, 4n * K), ext(8n * K, 500n * K, 4n * K)])).toEqual([rng(4n * K, 8n * K), rng(64n * K, 8n * K)]);
  });
  it('is empty for a file of holes', () => {
    expect(allocatedRanges([])).toEqual([]);
  });
});

describe('changedRanges', () => {
  it('finds nothing between identical maps', () => {
    const m = [ext(0n, 100n * K, 64n * K), ext(1024n * K, 900n * K, 4n * K)];
    expect(changedRanges(m, m)).toEqual([]);
  });

  it('reports a block rewritten in place of a shared one, however the extents are split', () => {
    // base: one 64 KiB extent; target: the same blocks, but 8 KiB in the middle moved (CoW).
    const base = [ext(1024n * K, 5000n * K, 64n * K)];
    const target = [ext(1024n * K, 5000n * K, 16n * K), ext(1040n * K, 200n * K, 8n * K), ext(1048n * K, 5024n * K, 40n * K)];
    expect(changedRanges(base, target)).toEqual([rng(1040n * K, 8n * K)]);
  });

  it('reports data that exists on one side only, and keeps a neighbour merged physically unchanged', () => {
    // XFS placed the new block right after the old one, so the target shows one extent of two blocks.
    const base = [ext(4n * K, 40n * K, 4n * K)];
    const target = [ext(4n * K, 40n * K, 8n * K), ext(48n * 1024n * K, 7n * K, 12n * K)];
    expect(changedRanges(base, target)).toEqual([rng(8n * K, 4n * K), rng(48n * 1024n * K, 12n * K)]);
    // A block punched out of the target is a change too (it now reads zeros).
    expect(changedRanges(target, base)).toEqual([rng(8n * K, 4n * K), rng(48n * 1024n * K, 12n * K)]);
  });

  it('treats the same logical range on different physical blocks as changed even when the extents line up', () => {
    expect(changedRanges([ext(0n, 0n, 8n * K)], [ext(0n, 4n * K, 8n * K)])).toEqual([rng(0n, 8n * K)]);
  });
});

describe('pages', () => {
  const rs = [rng(0n, 10n), rng(20n, 10n), rng(40n, 10n)];
  it('cuts ranges into pages of at most maxResults', () => {
    expect([...pages(rs, 0n, 2)]).toEqual([[rng(0n, 10n), rng(20n, 10n)], [rng(40n, 10n)]]);
  });
  it('leaves out ranges that end at or before the starting offset and sends a straddling one whole', () => {
    expect([...pages(rs, 10n, 10)]).toEqual([[rng(20n, 10n), rng(40n, 10n)]]);
    expect([...pages(rs, 25n, 10)]).toEqual([[rng(20n, 10n), rng(40n, 10n)]]);
    expect([...pages(rs, 50n, 10)]).toEqual([]);
  });
});

describe('blocksIn', () => {
  it('cuts block-aligned ranges into their blocks, in order', () => {
    expect([...blocksIn([rng(0n, 8n), rng(24n, 4n)], 4n)]).toEqual([rng(0n, 4n), rng(4n, 4n), rng(24n, 4n)]);
  });
});

describe('outsideBoth', () => {
  it('is what neither list covers, up to the size', () => {
    expect(outsideBoth([rng(4n, 4n), rng(20n, 4n)], [rng(6n, 6n), rng(30n, 10n)], 36n)).toEqual([rng(0n, 4n), rng(12n, 8n), rng(24n, 6n)]);
    expect(outsideBoth([], [], 16n)).toEqual([rng(0n, 16n)]);
    expect(outsideBoth([rng(0n, 16n)], [], 16n)).toEqual([]);
  });
});

describe('parseFiemap', () => {
  it('reads xfs_io fiemap -v output: 512-byte units, holes left out, flags kept', () => {
    const out = [
      '/data/snapshots/s2.img:',
      ' EXT: FILE-OFFSET      BLOCK-RANGE      TOTAL FLAGS',
      '   0: [0..7]:          hole                 8',
      '   1: [8..23]:         80..95              16 0x2000',
      '   2: [24..2047]:      hole              2024',
      '   3: [40000..40023]:  40072..40095        24 0x2001',
      '',
    ].join('\n');
    expect(parseFiemap(out)).toEqual([ext(4096n, 40960n, 8192n, 0x2000), ext(40000n * 512n, 40072n * 512n, 24n * 512n, 0x2001)]);
  });
  it('reads an empty file as no extents', () => {
    expect(parseFiemap('/data/x.img:\n')).toEqual([]);
  });
});
