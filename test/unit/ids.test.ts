import { describe, it, expect } from 'vitest';
import { status } from '@grpc/grpc-js';
import { deriveId, parseId, locationOf, unlocated, locationFits, MAX_ID_LENGTH, encodeToken, decodeToken, paginate } from '../../driver/ids.js';
import { KeyedLocks } from '../../driver/locks.js';
import { CsiError } from '../../driver/errors.js';

function codeOfCall(fn: () => unknown): number | undefined {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(CsiError);
    return (e as CsiError).code;
  }
  return undefined;
}

describe('deriveId', () => {
  it('is deterministic for the same kind, backend and name', () => {
    expect(deriveId('vol', 'loop', 'pvc-1')).toBe(deriveId('vol', 'loop', 'pvc-1'));
  });

  it('has the form <kind>-<backend>-<32 hex>', () => {
    expect(deriveId('vol', 'loop', 'pvc-1')).toMatch(/^vol-loop-[0-9a-f]{32}$/);
    expect(deriveId('snap', 'lvm', 'snapshot-x')).toMatch(/^snap-lvm-[0-9a-f]{32}$/);
    expect(deriveId('group', 'rbd', 'g')).toMatch(/^group-rbd-[0-9a-f]{32}$/);
  });

  it('differs by kind, backend and name', () => {
    const base = deriveId('vol', 'loop', 'pvc-1');
    const others = [deriveId('snap', 'loop', 'pvc-1'), deriveId('vol', 'lvm', 'pvc-1'), deriveId('vol', 'loop', 'pvc-2')];
    for (const o of others) expect(o.slice(-32)).not.toBe(base.slice(-32));
  });

  it('does not collide when the separator would be ambiguous', () => {
    expect(deriveId('vol', 'loop', 'a-b')).not.toBe(deriveId('vol', 'loop', 'a_b'));
  });

  it('produces IDs that parseId accepts as the same kind and backend', () => {
    const id = deriveId('snap', 'lvm', 'my-snap');
    expect(parseId(id, 'snapshot_id', 'snap')).toEqual({ prefix: 'snap', backend: 'lvm', id });
  });
});

describe('parseId', () => {
  it('rejects an empty ID with INVALID_ARGUMENT naming the field', () => {
    expect(() => parseId('', 'volume_id', 'vol')).toThrow('volume_id is required');
    expect(codeOfCall(() => parseId('', 'volume_id', 'vol'))).toBe(status.INVALID_ARGUMENT);
  });

  it.each([
    ['../../etc', '../../etc'],
    ['path with slash', 'vol-loop/abc'],
    ['absolute path', '/etc/passwd'],
    ['NUL byte', 'vol-loop-\0abc'],
    ['dot-dot inside', 'vol..loop'],
    ['leading dot', '.hidden'],
    ['space', 'vol loop'],
    ['10 kB string', 'a'.repeat(10_000)],
    ['129 characters', 'a'.repeat(129)],
  ])('rejects %s with INVALID_ARGUMENT', (_label, value) => {
    expect(codeOfCall(() => parseId(value, 'volume_id', 'vol'))).toBe(status.INVALID_ARGUMENT);
    expect(() => parseId(value, 'volume_id', 'vol')).toThrow(/volume_id .* is not a valid ID/);
  });

  it('truncates a huge hostile ID in the error message', () => {
    // The assertion stays outside any catch: a call that does not throw must fail the test.
    let thrown: unknown;
    try {
      parseId('x'.repeat(10_000) + '/', 'volume_id', 'vol');
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(CsiError);
    expect((thrown as Error).message).toMatch(/is not a valid ID/);
    expect((thrown as Error).message.length).toBeLessThan(300);
  });

  it('accepts a 128-character safe ID as well-formed (foreign -> undefined)', () => {
    expect(parseId('a'.repeat(128), 'volume_id', 'vol')).toBeUndefined();
  });

  it.each(['fake-vol-id-123', 'vol-loop-123', 'vol-loop-' + 'g'.repeat(32), 'vol-Loop-' + '0'.repeat(32), 'pvc-1234'])(
    'returns undefined for a well-formed foreign ID %s',
    (value) => {
      expect(parseId(value, 'volume_id', 'vol')).toBeUndefined();
    },
  );

  it('returns undefined when the kind does not match', () => {
    const snap = deriveId('snap', 'loop', 's');
    expect(parseId(snap, 'volume_id', 'vol')).toBeUndefined();
    const vol = deriveId('vol', 'loop', 's');
    expect(parseId(vol, 'snapshot_id', 'snap')).toBeUndefined();
    expect(parseId(vol, 'group_snapshot_id', 'group')).toBeUndefined();
  });

  it('extracts the backend from one of our IDs', () => {
    const id = deriveId('vol', 'rbd', 'pvc');
    expect(parseId(id, 'volume_id', 'vol')).toEqual({ prefix: 'vol', backend: 'rbd', id });
  });
});

describe('IDs that say where the object lives', () => {
  const hashOf = (id: string) => id.slice(id.lastIndexOf('-') + 1);

  it('carry the location as length-prefixed fields before the same name hash as without it', () => {
    const id = deriveId('vol', 'rbd', 'pvc-1', ['test', 'rbd', '']);
    expect(id).toBe(`vol-rbd-04test03rbd00-${hashOf(deriveId('vol', 'rbd', 'pvc-1'))}`);
    expect(deriveId('vol', 'rbd', 'pvc-1', ['test', 'rbd', ''])).toBe(id);
  });

  it('parse back to the same fields, even fields holding "-" and hex digits', () => {
    for (const loc of [['test', 'rbd', ''], ['my-cluster', 'pool-1', 'ns-a'], ['0a', 'ff-ff', '-'], ['c', '', '']]) {
      const id = deriveId('snap', 'rbd', 'snapshot-1', loc);
      expect(parseId(id, 'snapshot_id', 'snap')).toEqual({ prefix: 'snap', backend: 'rbd', id, location: loc });
      expect(locationOf(id)).toEqual(loc);
    }
  });

  it('without their location are the one key of the object (locks, the name taken anywhere)', () => {
    const plain = deriveId('vol', 'rbd', 'pvc-1');
    expect(unlocated(deriveId('vol', 'rbd', 'pvc-1', ['a', 'b', 'c']))).toBe(plain);
    expect(unlocated(deriveId('vol', 'rbd', 'pvc-1', ['x-y', 'z', '']))).toBe(plain);
    expect(unlocated(plain)).toBe(plain);
    expect(unlocated('not-an-id')).toBe('not-an-id');
    expect(locationOf(plain)).toBeUndefined();
  });

  it('an ID whose location does not parse is not one of ours (NOT_FOUND, never a guess)', () => {
    const h = hashOf(deriveId('vol', 'rbd', 'x'));
    for (const bad of [`vol-rbd-zz-${h}`, `vol-rbd-05abc-${h}`, `vol-rbd-0-${h}`, `vol-rbd-03abcd-${h}`]) {
      expect(parseId(bad, 'volume_id', 'vol')).toBeUndefined();
      expect(locationOf(bad)).toBeUndefined();
      expect(unlocated(bad)).toBe(bad);
    }
  });

  it('stay within CSI\'s 128 bytes: a location too long to fit is left out, and locationFits says so', () => {
    const long = ['c'.repeat(64), 'p'.repeat(100), 'n'.repeat(100)];
    const id = deriveId('snap', 'rbd', 'x', long);
    expect(id).toBe(deriveId('snap', 'rbd', 'x'));
    expect(locationFits('snap', 'rbd', long)).toBe(false);
    const edge = ['c'.repeat(39), 'p'.repeat(40), 'n'];
    expect(deriveId('snap', 'rbd', 'x', edge).length).toBe(MAX_ID_LENGTH);
    expect(locationFits('snap', 'rbd', edge)).toBe(true);
    expect(locationFits('snap', 'rbd', [...edge.slice(0, 2), 'nn'])).toBe(false);
  });

  it('refuse a location field a path or option could hide in', () => {
    expect(() => deriveId('vol', 'rbd', 'x', ['a/b', 'p', ''])).toThrow(/location field/);
    expect(() => deriveId('vol', 'rbd', 'x', ['a b', 'p', ''])).toThrow(/location field/);
  });

  it('lock as one object whatever location names it', async () => {
    const locks = new KeyedLocks();
    let release!: () => void;
    const held = locks.with([deriveId('vol', 'rbd', 'pvc-1', ['a', 'pool-a', ''])], 'CreateVolume', () => new Promise<void>((r) => (release = r)));
    const other = locks.with([deriveId('vol', 'rbd', 'pvc-1', ['a', 'pool-b', ''])], 'CreateVolume', async () => 'ran');
    await expect(other).rejects.toThrow(/already in progress/);
    await expect(locks.with([deriveId('vol', 'rbd', 'pvc-1')], 'DeleteVolume', async () => 'ran')).rejects.toThrow(/already in progress/);
    release();
    await held;
  });
});

describe('encodeToken / decodeToken', () => {
  it('round-trips the last ID', () => {
    const id = deriveId('vol', 'loop', 'x');
    expect(decodeToken(encodeToken(id))).toBe(id);
  });

  it('an empty token means "from the start"', () => {
    expect(decodeToken('')).toBeUndefined();
  });

  it.each(['garbage', '!!!', encodeToken(''), Buffer.from('{"after":42}').toString('base64url'), Buffer.from('null').toString('base64url'), Buffer.from('[]').toString('base64url')])(
    'rejects a token this plugin did not issue (%s) with ABORTED',
    (token) => {
      expect(codeOfCall(() => decodeToken(token))).toBe(status.ABORTED);
      expect(() => decodeToken(token)).toThrow(/is not a token this plugin issued/);
    },
  );
});

describe('paginate', () => {
  const items = ['e', 'a', 'd', 'c', 'b'].map((id) => ({ id }));
  const idOf = (x: { id: string }) => x.id;

  it('returns everything in id order with no next_token when max_entries is 0', () => {
    const r = paginate(items, idOf, '', 0);
    expect(r.page.map(idOf)).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect(r.nextToken).toBe('');
  });

  it('does not mutate the input array', () => {
    const copy = items.map(idOf);
    paginate(items, idOf, '', 2);
    expect(items.map(idOf)).toEqual(copy);
  });

  it('walks all items exactly once across pages, next_token empty on the last page', () => {
    for (const size of [1, 2, 3, 4, 5, 6]) {
      const seen: string[] = [];
      let token = '';
      let pages = 0;
      do {
        const r = paginate(items, idOf, token, size);
        expect(r.page.length).toBeLessThanOrEqual(size);
        seen.push(...r.page.map(idOf));
        token = r.nextToken;
        pages++;
        expect(pages).toBeLessThan(10);
      } while (token !== '');
      expect(seen).toEqual(['a', 'b', 'c', 'd', 'e']);
    }
  });

  it('max_entries=2 gives two items and a token for the rest', () => {
    const first = paginate(items, idOf, '', 2);
    expect(first.page.map(idOf)).toEqual(['a', 'b']);
    expect(first.nextToken).not.toBe('');
    const rest = paginate(items, idOf, first.nextToken, 0);
    expect(rest.page.map(idOf)).toEqual(['c', 'd', 'e']);
    expect(rest.nextToken).toBe('');
  });

  it('a page exactly as big as what is left has no next_token', () => {
    const r = paginate(items, idOf, '', 5);
    expect(r.page).toHaveLength(5);
    expect(r.nextToken).toBe('');
  });

  it('rejects negative max_entries with INVALID_ARGUMENT', () => {
    expect(codeOfCall(() => paginate(items, idOf, '', -1))).toBe(status.INVALID_ARGUMENT);
    expect(() => paginate(items, idOf, '', -1)).toThrow('max_entries must not be negative');
  });

  it('rejects a garbage starting_token with ABORTED', () => {
    expect(codeOfCall(() => paginate(items, idOf, 'not-a-token', 2))).toBe(status.ABORTED);
  });

  it('a token still works after the item it points at was deleted', () => {
    const first = paginate(items, idOf, '', 2); // a, b
    const without = items.filter((x) => x.id !== 'b');
    const next = paginate(without, idOf, first.nextToken, 0);
    expect(next.page.map(idOf)).toEqual(['c', 'd', 'e']);
  });

  it('a token past the last item gives an empty last page', () => {
    const r = paginate(items, idOf, encodeToken('z'), 2);
    expect(r.page).toEqual([]);
    expect(r.nextToken).toBe('');
  });

  it('an empty list gives an empty page', () => {
    expect(paginate([], idOf, '', 3)).toEqual({ page: [], nextToken: '' });
  });
});
