import { describe, it, expect } from 'vitest';
import { status } from '@grpc/grpc-js';
import { KeyedLocks, holdsLock } from '../../driver/locks.js';
import { deriveId, unlocated } from '../../driver/ids.js';
import { CsiError } from '../../driver/errors.js';

/** A promise plus its resolver, to hold a lock open for as long as a test needs. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

describe('KeyedLocks', () => {
  it('returns what fn returns and releases the key', async () => {
    const locks = new KeyedLocks();
    await expect(locks.with(['vol-a'], 'CreateVolume', async () => 7)).resolves.toBe(7);
    expect(locks.size).toBe(0);
  });

  it('a second concurrent call on the same key gets ABORTED naming the holder, and fn is not run', async () => {
    const locks = new KeyedLocks();
    const g = gate();
    const first = locks.with(['vol-a'], 'DeleteVolume', () => g.promise.then(() => 'done'));
    let ran = false;
    const err = await locks
      .with(['vol-a'], 'ControllerExpandVolume', async () => {
        ran = true;
      })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(ran).toBe(false);
    expect(err).toBeInstanceOf(CsiError);
    expect((err as CsiError).code).toBe(status.ABORTED);
    expect((err as CsiError).message).toContain('DeleteVolume');
    expect((err as CsiError).message).toContain('vol-a');
    g.open();
    await expect(first).resolves.toBe('done');
    // released: the key can be taken again
    await expect(locks.with(['vol-a'], 'again', async () => 'ok')).resolves.toBe('ok');
  });

  it('different keys run concurrently', async () => {
    const locks = new KeyedLocks();
    const g = gate();
    const a = locks.with(['vol-a'], 'A', () => g.promise.then(() => 'a'));
    const b = locks.with(['vol-b'], 'B', () => g.promise.then(() => 'b'));
    expect(locks.size).toBe(2);
    g.open();
    await expect(Promise.all([a, b])).resolves.toEqual(['a', 'b']);
    expect(locks.size).toBe(0);
  });

  it('releases the key when fn throws, and passes the error through unchanged', async () => {
    const locks = new KeyedLocks();
    const boom = new Error('boom');
    await expect(
      locks.with(['vol-a'], 'X', async () => {
        throw boom;
      }),
    ).rejects.toBe(boom);
    expect(locks.size).toBe(0);
    await expect(locks.with(['vol-a'], 'Y', async () => 1)).resolves.toBe(1);
  });

  it('holds every key of a multi-key call; a clash on any of them is ABORTED and takes none', async () => {
    const locks = new KeyedLocks();
    const g = gate();
    const snap = locks.with(['vol-a', 'snap-1'], 'CreateSnapshot', () => g.promise);
    expect(locks.size).toBe(2);
    await expect(locks.with(['snap-1'], 'DeleteSnapshot', async () => 1)).rejects.toMatchObject({ code: status.ABORTED });
    // a call that clashes on its second key must not leave its first key held
    await expect(locks.with(['vol-b', 'vol-a'], 'Group', async () => 1)).rejects.toMatchObject({ code: status.ABORTED });
    expect(locks.size).toBe(2);
    await expect(locks.with(['vol-b'], 'Other', async () => 'free')).resolves.toBe('free');
    g.open();
    await snap;
    expect(locks.size).toBe(0);
  });

  it('a repeated key in one call does not deadlock itself', async () => {
    const locks = new KeyedLocks();
    await expect(locks.with(['vol-a', 'vol-a'], 'X', async () => 'ok')).resolves.toBe('ok');
    expect(locks.size).toBe(0);
  });
});

describe('holdsLock', () => {
  it('is true inside the operation holding an ID (in either location form), also after awaits, and false outside it', async () => {
    const locks = new KeyedLocks();
    const located = deriveId('vol', 'rbd', 'pvc-held', ['c1', 'pool', '']);
    const g = gate();
    const seen: boolean[] = [];
    const op = locks.with([located], 'CreateVolume', async () => {
      await g.promise;
      seen.push(holdsLock(located), holdsLock(unlocated(located)), holdsLock(deriveId('vol', 'rbd', 'pvc-other')));
    });
    // Another caller's code, running while the lock is held, does not hold it.
    expect(holdsLock(located)).toBe(false);
    g.open();
    await op;
    expect(seen).toEqual([true, true, false]);
    expect(holdsLock(located)).toBe(false);
  });
});
