// A computed delta where no block map exists: the two snapshots are read side by side, each
// as one tool's output (rbd export, dd of a device), in blocks of a fixed size, and the
// blocks whose bytes differ are the changed ones. A block rewritten with the same bytes is
// unchanged, which is what a backup needs to know. Memory holds one block and one piece of
// each output; the caller's deadline or cancel kills both tools (readOutput).
import { coalesce, type ByteRange } from '../blockranges.js';
import type { OutputReader } from './exec.js';

/** The compare block when the volume's size allows it: small enough to pin a 4 KiB write down to it, big enough to keep the list short. */
export const COMPARE_BLOCK_BYTES = 64 * 1024;

/** The largest power of two up to COMPARE_BLOCK_BYTES that divides sizeBytes: every block, the last too, is then whole. */
export function compareBlockBytes(sizeBytes: bigint): number {
  let b = COMPARE_BLOCK_BYTES;
  while (b > 1 && sizeBytes % BigInt(b) !== 0n) b /= 2;
  return b;
}

/** Hands out an output in pieces of an exact length (shorter only at its end). */
class Blocks {
  private held: Buffer[] = [];
  private heldBytes = 0;
  constructor(private readonly out: OutputReader) {}

  async take(n: number): Promise<Buffer> {
    while (this.heldBytes < n) {
      const piece = await this.out.next();
      if (!piece) break;
      this.held.push(piece);
      this.heldBytes += piece.length;
    }
    const all = this.held.length === 1 ? this.held[0] : Buffer.concat(this.held);
    const block = all.subarray(0, Math.min(n, all.length));
    const rest = all.subarray(block.length);
    this.held = rest.length ? [rest] : [];
    this.heldBytes = rest.length;
    return block;
  }
}

export interface CompareOptions {
  sizeBytes: bigint;
  blockBytes: number;
  /** Ranges known to read the same in both (unallocated in both: zeros): read past, not compared. Sorted. */
  same?: ByteRange[];
}

/**
 * The blocks (joined where they touch) whose bytes differ between two outputs of sizeBytes
 * each. Both tools are stopped when this returns or throws; an output that ends early is an
 * error (a truncated read must never pass for "unchanged").
 */
export async function changedBlocks(base: OutputReader, target: OutputReader, opts: CompareOptions): Promise<ByteRange[]> {
  const a = new Blocks(base);
  const b = new Blocks(target);
  const block = BigInt(opts.blockBytes);
  const same = opts.same ?? [];
  const changed: ByteRange[] = [];
  let k = 0;
  try {
    for (let off = 0n; off < opts.sizeBytes; off += block) {
      const n = Number(opts.sizeBytes - off < block ? opts.sizeBytes - off : block);
      const [x, y] = [await a.take(n), await b.take(n)];
      for (const [out, got] of [[base, x], [target, y]] as const) {
        if (got.length < n) throw new Error(`${out.command} ended after ${off + BigInt(got.length)} of ${opts.sizeBytes} bytes`);
      }
      while (k < same.length && same[k].offset + same[k].length <= off) k++;
      const known = k < same.length && same[k].offset <= off && off + BigInt(n) <= same[k].offset + same[k].length;
      if (!known && !x.equals(y)) changed.push({ offset: off, length: BigInt(n) });
    }
  } finally {
    await Promise.all([base.close(), target.close()]);
  }
  return coalesce(changed);
}
