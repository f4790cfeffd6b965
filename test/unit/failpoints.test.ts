import { describe, it, expect } from 'vitest';
import { FAILPOINTS, parseFailpoints } from '../../driver/failpoints.js';

describe('TSCSI_FAILPOINTS parsing', () => {
  it('is empty (inert) when unset', () => {
    expect(parseFailpoints(undefined).size).toBe(0);
    expect(parseFailpoints('').size).toBe(0);
  });
  it('arms steps and tools, with an optional delay for :during', () => {
    const m = parseFailpoints('loop.create.afterImage, host.copy:during=300,host.mkfs:during');
    expect(m.get('loop.create.afterImage')).toEqual({ during: false, delayMs: 0 });
    expect(m.get('host.copy')).toEqual({ during: true, delayMs: 300 });
    expect(m.get('host.mkfs')).toEqual({ during: true, delayMs: 0 });
  });
  it('refuses unknown names (a typo must not pass as a survived crash) and :during on a step', () => {
    expect(() => parseFailpoints('loop.create.afterImagee')).toThrow(/unknown fail point/);
    expect(() => parseFailpoints('loop.create.afterImage:during')).toThrow(/does not run a tool/);
    expect(() => parseFailpoints('host.copy:during=x')).toThrow(/unknown fail point/);
  });
  it('marks exactly the host.* points as tools', () => {
    for (const [name, p] of Object.entries(FAILPOINTS)) expect('tool' in p, name).toBe(name.startsWith('host.'));
  });
});
