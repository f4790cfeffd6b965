// driver/backends/lvm/mda.ts reads a PV's metadata-area headers to tell whether anyone
// committed LVM metadata since a report was taken (the guard of the report reuse). Here on PV
// images laid out as lvm2 writes them (lib/label/label.h, lib/format_text/layout.h), with the
// areas' "ignored" flag set as `vgmetadatacopies` / `pvchange --metadataignore` leave it.
import { describe, it, expect, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { metadataState } from '../../driver/backends/lvm/mda.js';

const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tscsi-mda-'));
afterAll(() => fs.rm(dir, { recursive: true, force: true }));

const MDA1 = 4096;
const MDA2 = 1536 * 1024;

/** A 2 MiB PV image with two metadata areas; `ignored` flags per area. */
async function pvImage(name: string, ignored: [boolean, boolean]): Promise<string> {
  const img = Buffer.alloc(2 * 1024 * 1024);
  const label = 512;
  img.write('LABELONE', label, 'latin1');
  img.writeUInt32LE(32, label + 20); // offset of the pv_header in the label sector
  img.write('LVM2 001', label + 24, 'latin1');
  let p = label + 32 + 32 + 8; // pv_header: uuid, device_size, then the disk_locn lists
  for (const [o, s] of [[1024 * 1024, 0], [0, 0], [MDA1, 512 * 1024], [MDA2, 512 * 1024], [0, 0]]) {
    img.writeBigUInt64LE(BigInt(o), p);
    img.writeBigUInt64LE(BigInt(s), p + 8);
    p += 16;
  }
  for (const [i, at] of [MDA1, MDA2].entries()) {
    img.write(' LVM2 x[5A%r0N*>', at + 4, 'latin1');
    img.writeBigUInt64LE(512n, at + 40); // raw_locn[0].offset: where the metadata text lies
    img.writeUInt32LE(ignored[i] ? 1 : 0, at + 60);
  }
  const file = path.join(dir, name);
  await fs.writeFile(file, img);
  return file;
}

/** A metadata commit as lvm writes it to one area: the text moves, the header says where. */
async function commit(file: string, at: number, textOffset: number): Promise<void> {
  const fh = await fs.open(file, 'r+');
  try {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(textOffset));
    await fh.write(b, 0, 8, at + 40);
  } finally {
    await fh.close();
  }
}

describe('metadataState', () => {
  it('changes with a commit to an area in use, also when the first area is an ignored one (which no commit rewrites)', async () => {
    const pv = await pvImage('first-ignored.img', [true, false]);
    const before = await metadataState(pv);
    await commit(pv, MDA1, 4096); // lvm never writes an ignored area; this shows it is not read
    expect(await metadataState(pv)).toBe(before);
    await commit(pv, MDA2, 8192);
    expect(await metadataState(pv)).not.toBe(before);
  });

  it('changes with a commit to either of two areas in use', async () => {
    const pv = await pvImage('both.img', [false, false]);
    const before = await metadataState(pv);
    await commit(pv, MDA2, 8192);
    const after = await metadataState(pv);
    expect(after).not.toBe(before);
    await commit(pv, MDA1, 8192);
    expect(await metadataState(pv)).not.toBe(after);
  });

  it('refuses a PV whose every area is ignored, and a device without an LVM2 label (the report is then never reused)', async () => {
    await expect(metadataState(await pvImage('all-ignored.img', [true, true]))).rejects.toThrow(/every metadata area of the PV is ignored/);
    const blank = path.join(dir, 'blank.img');
    await fs.writeFile(blank, Buffer.alloc(64 * 1024));
    await expect(metadataState(blank)).rejects.toThrow(/no LVM2 label/);
  });
});
