import { describe, it, expect } from 'vitest';
import { parseSize } from '../../driver/size.js';

describe('parseSize', () => {
  it.each([
    ['0', 0n],
    ['1073741824', 1073741824n],
    ['1Ki', 1024n],
    ['512Mi', 512n * 1024n * 1024n],
    ['20Gi', 20n * 1024n ** 3n],
    ['1Ti', 1024n ** 4n],
    ['1Pi', 1024n ** 5n],
    ['1k', 1000n],
    ['1K', 1000n],
    ['1M', 1_000_000n],
    ['1G', 1_000_000_000n],
    ['2T', 2n * 1000n ** 4n],
    ['1P', 1000n ** 5n],
    [' 5Gi ', 5n * 1024n ** 3n],
    ['9223372036854775807', 9223372036854775807n],
  ])('parses %j', (s, n) => {
    expect(parseSize(s)).toBe(n);
  });

  it.each(['', 'Gi', '1.5Gi', '-1', '1 Gi', '1gi', '1GB', '1Ei', 'abc', '0x10'])('rejects %j with a message giving examples', (s) => {
    expect(() => parseSize(s)).toThrow(/^not a size: .*examples: 1073741824, 512Mi, 20Gi/);
  });
});
