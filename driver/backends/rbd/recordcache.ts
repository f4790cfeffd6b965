// What the driver last read of each image's metadata (its CSI record), so that the several
// lookups of one operation, and the next operation on the same ID, need not each run
// `rbd image-meta list` (a process and a monitor round trip, 0.1–1 s here).
//
// Trust is narrow: an entry is served only to a caller holding the ID's lock (locks.ts
// holdsLock; the backend checks), since every writer of an ID holds it too, so such a caller
// runs after the last writer and sees what it wrote. Every write, remove or clone of an image
// drops its entries before it starts and again when it ends, and a read that overlapped a
// drop does not fill the cache. Nothing is kept on disk: a restarted driver asks Ceph again.
// Readers without the lock (listings, health) always ask Ceph; they may fill the cache.
import { createHash } from 'node:crypto';

/**
 * Where an image is looked for (cluster, pool, namespace) and as whom: an answer read with
 * one caller's Ceph credentials is never served to a caller with others, who may not be
 * allowed to read that pool at all.
 */
export interface PlaceKey {
  cluster: { clusterID: string };
  pool: { pool: string; namespace: string };
  readAs?: { user: string; key?: string; keyFile?: string };
}

/** An image's metadata, or null: the image was not there. */
export type CachedMeta = Record<string, string> | null;

/** Enough for every volume and snapshot of a large cluster; beyond it the oldest entries go. */
export const RECORD_CACHE_MAX_ENTRIES = 20_000;

// The secret itself never becomes part of a key: only a digest of it.
const whoOf = (c: PlaceKey['readAs']) => (c ? `${c.user}:${createHash('sha256').update(c.key ?? `file:${c.keyFile ?? ''}`).digest('hex').slice(0, 16)}` : '');
const placeOf = (at: PlaceKey) => `${at.cluster.clusterID}/${at.pool.pool}/${at.pool.namespace}/${whoOf(at.readAs)}`;

export class ImageRecordCache {
  /** image name -> place -> metadata; names in the order last filled (the oldest first). */
  private readonly entries = new Map<string, Map<string, CachedMeta>>();
  /** image name -> the clock value of its last drop, kept while any read that may predate it runs. */
  private readonly droppedAt = new Map<string, number>();
  private clock = 0;
  private readsRunning = 0;

  constructor(private readonly maxEntries = RECORD_CACHE_MAX_ENTRIES) {}

  /** The cached metadata of name at `at` (null: known absent), or undefined when nothing is known. */
  get(at: PlaceKey, name: string): CachedMeta | undefined {
    return this.entries.get(name)?.get(placeOf(at));
  }

  /** Reads through: runs read, and keeps its answer unless name was dropped meanwhile. */
  async fill(at: PlaceKey, name: string, read: () => Promise<Record<string, string> | undefined>): Promise<Record<string, string> | undefined> {
    const started = this.clock;
    this.readsRunning++;
    try {
      const meta = await read();
      if ((this.droppedAt.get(name) ?? -1) < started) this.put(name, placeOf(at), meta ?? null);
      return meta;
    } finally {
      if (--this.readsRunning === 0) this.droppedAt.clear();
    }
  }

  /** Runs a change of image `name` (metadata, existence, snapshots), dropping what is known of it around it. */
  async writing<T>(name: string, change: () => Promise<T>): Promise<T> {
    this.drop(name);
    try {
      return await change();
    } finally {
      this.drop(name);
    }
  }

  drop(name: string): void {
    this.clock++;
    if (this.readsRunning > 0) this.droppedAt.set(name, this.clock);
    this.entries.delete(name);
  }

  get size(): number {
    return this.entries.size;
  }

  private put(name: string, place: string, meta: CachedMeta): void {
    const places = this.entries.get(name) ?? new Map<string, CachedMeta>();
    places.set(place, meta);
    this.entries.delete(name); // re-inserted last: the oldest names stay first in the map
    this.entries.set(name, places);
    if (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value as string);
  }
}
