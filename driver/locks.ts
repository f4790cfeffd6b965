// One operation at a time per volume/snapshot ID. A second caller gets ABORTED at once
// (the spec's "operation pending for volume"), never a queue: the CO retries with back-off.
import { AsyncLocalStorage } from 'node:async_hooks';
import { aborted } from './errors.js';
import { unlocated } from './ids.js';

/**
 * The keys the running operation holds, visible to everything it awaits: a backend may then
 * trust what it cached of an object only while no other operation can be writing it.
 */
const heldHere = new AsyncLocalStorage<ReadonlySet<string>>();

/** Whether the calling operation holds the lock of this ID (in any of its location forms). */
export function holdsLock(id: string): boolean {
  return heldHere.getStore()?.has(unlocated(id)) ?? false;
}

export class KeyedLocks {
  private readonly held = new Map<string, string>();

  /**
   * Runs fn while holding every key; the keys are always released, also when fn throws.
   * IDs that differ only in their location are one object (ids.ts), so they are one key.
   */
  async with<T>(keys: string[], what: string, fn: () => Promise<T>): Promise<T> {
    const unique = [...new Set(keys.map(unlocated))];
    for (const k of unique) {
      const by = this.held.get(k);
      if (by !== undefined) {
        throw aborted(`an operation (${by}) is already in progress for ${k}; retry later`);
      }
    }
    for (const k of unique) this.held.set(k, what);
    try {
      return await heldHere.run(new Set([...(heldHere.getStore() ?? []), ...unique]), fn);
    } finally {
      for (const k of unique) this.held.delete(k);
    }
  }

  get size(): number {
    return this.held.size;
  }
}
