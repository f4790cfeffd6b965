// The range math of changed-block tracking (the SnapshotMetadata service): which byte
// ranges of a snapshot hold data, which differ between two snapshots of one volume, and
// how a list of ranges is cut into the pages of a stream. Pure: no I/O, every number a
// bigint (volumes reach int64).

/** A run of bytes of a volume: [offset, offset + length). */
export interface ByteRange {
  offset: bigint;
  length: bigint;
}

/**
 * One mapped extent of a file as FIEMAP reports it (holes are simply absent): `physical`
 * is where its first byte lies on the device. Two files whose extents map an offset to the
 * same physical byte share that block (a reflink), so it holds the same bytes in both.
 */
export interface Extent {
  logical: bigint;
  physical: bigint;
  length: bigint;
  /** FIEMAP_EXTENT_* flags. */
  flags: number;
}

/** Joins ranges that touch or overlap; the input is sorted by offset. */
export function coalesce(ranges: ByteRange[]): ByteRange[] {
  const out: ByteRange[] = [];
  for (const r of ranges) {
    if (r.length <= 0n) continue;
    const last = out[out.length - 1];
    if (last && r.offset <= last.offset + last.length) {
      const end = r.offset + r.length > last.offset + last.length ? r.offset + r.length : last.offset + last.length;
      last.length = end - last.offset;
    } else {
      out.push({ offset: r.offset, length: r.length });
    }
  }
  return out;
}

/** The ranges that hold data: every extent, joined where they touch. */
export function allocatedRanges(extents: Extent[]): ByteRange[] {
  return coalesce(sortedByLogical(extents).map((e) => ({ offset: e.logical, length: e.length })));
}

function sortedByLogical(extents: Extent[]): Extent[] {
  return [...extents].sort((a, b) => (a.logical < b.logical ? -1 : a.logical > b.logical ? 1 : 0));
}

/** The extent covering offset, walking a sorted list from index i (returned to resume there). */
function covering(list: Extent[], i: number, offset: bigint): { i: number; ext?: Extent } {
  while (i < list.length && list[i].logical + list[i].length <= offset) i++;
  const e = list[i];
  return { i, ext: e && e.logical <= offset ? e : undefined };
}

/**
 * The ranges whose bytes may differ between two files that began as reflinks of one
 * another: where one has data and the other a hole, or both have data on different
 * physical blocks. Where both map to the same physical block the bytes are the same one
 * block, so it is unchanged; where both have holes nothing changed either. Extents are
 * compared piece by piece (the filesystem may split or merge them differently per file).
 */
export function changedRanges(base: Extent[], target: Extent[]): ByteRange[] {
  const a = sortedByLogical(base);
  const b = sortedByLogical(target);
  const cuts = new Set<bigint>();
  for (const e of [...a, ...b]) {
    cuts.add(e.logical);
    cuts.add(e.logical + e.length);
  }
  const points = [...cuts].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
  const out: ByteRange[] = [];
  let ia = 0;
  let ib = 0;
  for (let k = 0; k + 1 < points.length; k++) {
    const from = points[k];
    const ca = covering(a, ia, from);
    const cb = covering(b, ib, from);
    ia = ca.i;
    ib = cb.i;
    if (!ca.ext && !cb.ext) continue;
    // Within one piece both mappings are linear, so comparing its first byte is enough.
    const same = ca.ext && cb.ext && ca.ext.physical + (from - ca.ext.logical) === cb.ext.physical + (from - cb.ext.logical);
    if (!same) out.push({ offset: from, length: points[k + 1] - from });
  }
  return coalesce(out);
}

/**
 * The stream's pages: ranges that end after startingOffset (a range that straddles it is
 * sent whole, as the spec allows, so its alignment holds), at most maxResults per page.
 */
export function* pages(ranges: Iterable<ByteRange>, startingOffset: bigint, maxResults: number): Generator<ByteRange[]> {
  let page: ByteRange[] = [];
  for (const r of ranges) {
    if (r.offset + r.length <= startingOffset) continue;
    page.push(r);
    if (page.length === maxResults) {
      yield page;
      page = [];
    }
  }
  if (page.length > 0) yield page;
}

/** Ranges cut into the blocks of a fixed size they are made of (each range starts and ends on a multiple of it). */
export function* blocksIn(ranges: Iterable<ByteRange>, blockBytes: bigint): Generator<ByteRange> {
  for (const r of ranges) {
    for (let off = r.offset; off < r.offset + r.length; off += blockBytes) yield { offset: off, length: blockBytes };
  }
}

/** What lies in [0, size) outside every range of both lists (sorted, each coalesced). */
export function outsideBoth(a: ByteRange[], b: ByteRange[], size: bigint): ByteRange[] {
  const taken = coalesce([...a, ...b].sort((x, y) => (x.offset < y.offset ? -1 : x.offset > y.offset ? 1 : 0)));
  const out: ByteRange[] = [];
  let at = 0n;
  for (const r of taken) {
    if (r.offset > at) out.push({ offset: at, length: (r.offset < size ? r.offset : size) - at });
    if (r.offset + r.length > at) at = r.offset + r.length;
    if (at >= size) break;
  }
  if (at < size) out.push({ offset: at, length: size - at });
  return out.filter((r) => r.length > 0n);
}
