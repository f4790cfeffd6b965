// The sidecars' work queue: a key whose work fails comes back; a 409 (the object changed
// since it was read) is logged as the retry it is, at info, not as a failure at warn.
import { describe, it, expect } from 'vitest';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { WorkQueue } from '../../sidecars/common/workqueue.js';

/** A real pino logger writing its JSON lines into `lines`. */
function capture(lines: Array<Record<string, any>>) {
  const out = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(l));
      cb();
    },
  });
  return pino({ level: 'info' }, out);
}

/** Runs `key` through a queue whose first attempt throws `err` and whose second succeeds; resolves after the second. */
async function failOnceWith(err: unknown, lines: Array<Record<string, any>>): Promise<number> {
  let attempts = 0;
  let done!: () => void;
  const second = new Promise<void>((r) => (done = r));
  const q = new WorkQueue(
    async () => {
      attempts++;
      if (attempts === 1) throw err;
      done();
    },
    { workers: 1, baseDelayMs: 1 },
    capture(lines),
  );
  q.add('ns/claim');
  await second;
  q.stop();
  return attempts;
}

describe('the work queue', () => {
  it('retries a 409 conflict and logs it at info as a retry, not at warn', async () => {
    const lines: Array<Record<string, any>> = [];
    const conflict = Object.assign(new Error('Operation cannot be fulfilled on persistentvolumeclaims "claim": the object has been modified'), { code: 409 });
    expect(await failOnceWith(conflict, lines)).toBe(2);
    expect(lines.filter((l) => l.level >= 40)).toEqual([]);
    expect(lines).toContainEqual(expect.objectContaining({ level: 30, key: 'ns/claim', msg: 'object changed meanwhile (409 conflict); retrying with the current one' }));
  });

  it('retries any other failure and logs it at warn', async () => {
    const lines: Array<Record<string, any>> = [];
    expect(await failOnceWith(Object.assign(new Error('Internal error'), { code: 500 }), lines)).toBe(2);
    expect(lines).toContainEqual(expect.objectContaining({ level: 40, key: 'ns/claim', err: 'Internal error', msg: 'work failed; will retry' }));
  });
});
