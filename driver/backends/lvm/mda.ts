// The commit state of an LVM2 physical volume's metadata, read from its on-disk headers
// without running lvm: every metadata commit (by this driver or anyone else) rewrites the
// header of each metadata area in use (where the new metadata lies and its checksum), so
// equal headers mean no commit happened in between. Layout: lvm2 lib/format_text/layout.h and
// lib/label/label.h (label in one of the first four sectors, pv_header after it).
import fs from 'node:fs/promises';

const SECTOR = 512;
const LABEL_ID = 'LABELONE';
const LABEL_TYPE = 'LVM2 001';
const MDA_MAGIC = ' LVM2 x[5A%r0N*>';
/** mda_header: checksum, magic, version, start, size, then raw_locn[0] (offset, size, checksum, flags). */
const MDA_HEADER_BYTES = 40 + 24;

async function readAt(fh: fs.FileHandle, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  const { bytesRead } = await fh.read(buf, 0, length, offset);
  if (bytesRead !== length) throw new Error(`short read at ${offset}`);
  return buf;
}

/** Where the metadata areas start on the PV, from its label's pv_header. */
function mdaOffsets(head: Buffer): number[] {
  for (let s = 0; s < 4; s++) {
    const label = head.subarray(s * SECTOR, (s + 1) * SECTOR);
    if (label.toString('latin1', 0, 8) !== LABEL_ID || label.toString('latin1', 24, 32) !== LABEL_TYPE) continue;
    // pv_header: uuid[32], device_size u64, then disk_locn lists {offset u64, size u64}: the
    // data areas, a zero entry, the metadata areas, a zero entry.
    let p = s * SECTOR + label.readUInt32LE(20) + 32 + 8;
    let list = 0;
    const out: number[] = [];
    while (p + 16 <= head.length) {
      const offset = Number(head.readBigUInt64LE(p));
      const size = Number(head.readBigUInt64LE(p + 8));
      p += 16;
      if (offset === 0 && size === 0) {
        if (++list === 2) break;
      } else if (list === 1) out.push(offset);
    }
    if (out.length === 0) throw new Error('the PV label lists no metadata area');
    return out;
  }
  throw new Error('no LVM2 label in the first four sectors');
}

/** raw_locn[0].flags: RAW_LOCN_IGNORED, an area lvm keeps but no longer writes (vgmetadatacopies, pvchange --metadataignore). */
const RAW_LOCN_FLAGS = 40 + 20;
const RAW_LOCN_IGNORED = 1;

/**
 * The PV's metadata commit state as an opaque string: the headers of its areas in use (an
 * ignored area is not rewritten by a commit, so it alone would hide one); throws when it is
 * not an LVM2 text-format PV or has no area in use.
 */
export async function metadataState(device: string): Promise<string> {
  const fh = await fs.open(device, 'r');
  try {
    const used: string[] = [];
    for (const mda of mdaOffsets(await readAt(fh, 0, 4 * SECTOR))) {
      const hdr = await readAt(fh, mda, MDA_HEADER_BYTES);
      if (hdr.toString('latin1', 4, 20) !== MDA_MAGIC) throw new Error(`no metadata area header at ${mda}`);
      if ((hdr.readUInt32LE(RAW_LOCN_FLAGS) & RAW_LOCN_IGNORED) === 0) used.push(hdr.toString('hex'));
    }
    if (used.length === 0) throw new Error('every metadata area of the PV is ignored');
    return used.join(',');
  } finally {
    await fh.close();
  }
}

/** Every PV's state joined, or undefined when any cannot be read (then nothing may be taken as unchanged). */
export async function metadataStates(devices: string[]): Promise<string | undefined> {
  try {
    return (await Promise.all(devices.map(metadataState))).join('|');
  } catch {
    return undefined;
  }
}
