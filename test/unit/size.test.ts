// The one size grammar (lib/size.ts) that the driver's flags, the sidecars (claims, PVs) and
// the CLI share: a Kubernetes quantity in bytes, rounded up, at most int64.
import { describe, it, expect } from 'vitest';
import { parseSize, formatSize, MAX_SIZE_BYTES } from '../../lib/size.js';

describe('parseSize', () => {
  it.each([
    ['0', 0n],
    ['1073741824', 1073741824n],
    ['1Ki', 1024n],
    ['512Mi', 512n * 1024n * 1024n],
    ['20Gi', 20n * 1024n ** 3n],
    ['1Ti', 1024n ** 4n],
    ['1Pi', 1024n ** 5n],
    ['1Ei', 1024n ** 6n],
    ['1k', 1000n],
    ['1M', 1_000_000n],
    ['1G', 1_000_000_000n],
    ['2T', 2n * 1000n ** 4n],
    ['1P', 1000n ** 5n],
    ['1E', 1000n ** 6n],
    [' 5Gi ', 5n * 1024n ** 3n],
    ['1.5Gi', 3n * 512n * 1024n * 1024n],
    ['.5Ki', 512n],
    ['1e9', 1_000_000_000n],
    ['1E3', 1000n],
    ['15e-1', 2n],
    ['1500m', 2n],
    ['0.1', 1n],
    ['9223372036854775807', MAX_SIZE_BYTES],
  ])('parses %j', (s, n) => {
    expect(parseSize(s)).toBe(n);
  });

  it.each(['', 'Gi', '-1', '+1', '1 Gi', '1gi', '1K', '1GB', 'abc', '0x10', '1e', '1.5.5', '.', '8Ei', '9223372036854775808', '1e400'])(
    'rejects %j with a message giving examples',
    (s) => {
      expect(() => parseSize(s)).toThrow(/^not a size: .*examples: 1073741824, 512Mi, 20Gi/);
    },
  );
});

describe('formatSize', () => {
  it.each([
    [0n, '0'],
    [1000n, '1000'],
    [1024n, '1Ki'],
    [3n << 29n, '1536Mi'],
    [1n << 30n, '1Gi'],
    [5n << 40n, '5Ti'],
  ])('formats %s as %j, which parses back to it', (b, s) => {
    expect(formatSize(b)).toBe(s);
    expect(parseSize(s)).toBe(b);
  });
});
