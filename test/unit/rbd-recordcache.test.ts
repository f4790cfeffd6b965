import { describe, it, expect } from 'vitest';
import { ImageRecordCache } from '../../driver/backends/rbd/recordcache.js';

const at = { cluster: { clusterID: 'c1' }, pool: { pool: 'rbd', namespace: '' } };
const inNs = { cluster: { clusterID: 'c1' }, pool: { pool: 'rbd', namespace: 'ns1' } };

/** A read that finishes when the test says, with the metadata it is given. */
function pendingRead(): { read: () => Promise<Record<string, string> | undefined>; finish: (m?: Record<string, string>) => void } {
  let finish!: (m?: Record<string, string>) => void;
  const p = new Promise<Record<string, string> | undefined>((r) => (finish = r));
  return { read: () => p, finish };
}

describe('ImageRecordCache', () => {
  it('keeps what a read found, per place, absent images as null', async () => {
    const c = new ImageRecordCache();
    expect(c.get(at, 'img')).toBeUndefined();
    expect(await c.fill(at, 'img', async () => ({ k: 'v' }))).toEqual({ k: 'v' });
    await c.fill(inNs, 'img', async () => undefined);
    expect(c.get(at, 'img')).toEqual({ k: 'v' });
    expect(c.get(inNs, 'img')).toBeNull();
  });

  it('an answer read with one caller\'s credentials is not served to a caller with others', async () => {
    const c = new ImageRecordCache();
    const asA = { ...at, readAs: { user: 'csi', key: 'AQA-key-a' } };
    await c.fill(asA, 'img', async () => ({ k: 'v' }));
    expect(c.get(asA, 'img')).toEqual({ k: 'v' });
    expect(c.get({ ...at, readAs: { user: 'csi', key: 'AQA-key-b' } }, 'img')).toBeUndefined();
    expect(c.get({ ...at, readAs: { user: 'other', key: 'AQA-key-a' } }, 'img')).toBeUndefined();
    expect(c.get({ ...at, readAs: { user: 'csi', keyFile: '/etc/ceph/keyring' } }, 'img')).toBeUndefined();
    expect(c.get(at, 'img')).toBeUndefined();
  });

  it('a write forgets the image in every place, before and after it', async () => {
    const c = new ImageRecordCache();
    await c.fill(at, 'img', async () => ({ k: 'v' }));
    await c.fill(inNs, 'img', async () => undefined);
    const during = await c.writing('img', async () => {
      const seen = c.get(at, 'img');
      await c.fill(at, 'img', async () => ({ k: 'mid-write' })); // a reader during the write
      return seen;
    });
    expect(during).toBeUndefined();
    expect(c.get(at, 'img')).toBeUndefined();
    expect(c.get(inNs, 'img')).toBeUndefined();
  });

  it('a read that overlapped a drop of its image is not kept (it may have read the old record); other images are', async () => {
    const c = new ImageRecordCache();
    const slow = pendingRead();
    const other = pendingRead();
    const reading = c.fill(at, 'img', slow.read);
    const readingOther = c.fill(at, 'other', other.read);
    c.drop('img');
    slow.finish({ k: 'old' });
    other.finish({ k: 'o' });
    expect(await reading).toEqual({ k: 'old' });
    await readingOther;
    expect(c.get(at, 'img')).toBeUndefined();
    expect(c.get(at, 'other')).toEqual({ k: 'o' });
    // Once no read runs, a fresh one is kept again.
    await c.fill(at, 'img', async () => ({ k: 'new' }));
    expect(c.get(at, 'img')).toEqual({ k: 'new' });
  });

  it('a failed read keeps nothing; beyond its size the least recently filled image goes first', async () => {
    const c = new ImageRecordCache(2);
    await expect(c.fill(at, 'bad', async () => { throw new Error('monitor away'); })).rejects.toThrow('monitor away');
    expect(c.get(at, 'bad')).toBeUndefined();
    for (const n of ['a', 'b']) await c.fill(at, n, async () => ({ n }));
    await c.fill(at, 'a', async () => ({ n: 'a2' }));
    await c.fill(at, 'c', async () => ({ n: 'c' }));
    expect(c.get(at, 'b')).toBeUndefined();
    expect(c.get(at, 'a')).toEqual({ n: 'a2' });
    expect(c.size).toBe(2);
  });
});
