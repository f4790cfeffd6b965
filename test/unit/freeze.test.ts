// withFrozen's bookkeeping around fsfreeze: every member is thawed even when one thaw
// fails, and the journal keeps a freeze until all of it is thawed. fsfreeze itself is a
// recording fake here (a real thaw that fails cannot be provoked on purpose); the real
// freeze, kill and start-up thaw are in test/integration/freeze.test.ts.
import { describe, it, expect, beforeEach, afterEach, vi } from 'vitest';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';

vi.mock('../../driver/host/exec.js', async (orig) => (await import('./exec-recorder.js')).recordingExec(orig));
import { recorder, resetRecorder, type Answer } from './exec-recorder.js';

let failThawOf = '';
const answer: Answer = (file, args, real) => {
  if (file === 'fsfreeze' && args[0] === '-u' && args[1] === failThawOf) throw new real.CommandError(`fsfreeze -u ${args[1]}`, undefined, '', true);
  return undefined;
};
const calls = recorder.calls;

const { withFrozen, initFreezeJournal } = await import('../../driver/host/freeze.js');

let dir: string;
let a: string;
let b: string;
let journal: string;

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tscsi-unit-freeze-'));
  a = path.join(dir, 'a');
  b = path.join(dir, 'b');
  journal = path.join(dir, 'journal');
  await fs.mkdir(a);
  await fs.mkdir(b);
  await initFreezeJournal(journal, pino({ level: 'silent' }));
  resetRecorder(answer);
  failThawOf = '';
});

afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

const entries = async () => (await fs.readdir(journal)).filter((n) => n.endsWith('.json'));

describe('withFrozen', () => {
  it('journals the freeze before fsfreeze runs and removes the entry once all is thawed', async () => {
    let seen: string[] = [];
    await withFrozen([a, b], async () => {
      seen = await entries();
    });
    expect(seen).toHaveLength(1);
    expect(calls).toEqual([`fsfreeze -f ${a}`, `fsfreeze -f ${b}`, `fsfreeze -u ${b}`, `fsfreeze -u ${a}`]);
    expect(await entries()).toEqual([]);
  });

  it('thaws every member when one thaw fails, fails the call and keeps the journal entry', async () => {
    failThawOf = b;
    await expect(withFrozen([a, b], async () => 'cut')).rejects.toThrow(/thawing failed/);
    expect(calls).toContain(`fsfreeze -u ${a}`);
    expect(await entries()).toHaveLength(1);
    // The next start thaws what the journal still names.
    failThawOf = '';
    calls.length = 0;
    await initFreezeJournal(journal, pino({ level: 'silent' }));
    expect(calls).toEqual([`fsfreeze -u ${a}`, `fsfreeze -u ${b}`]);
    expect(await entries()).toEqual([]);
  });

  it('thaws what it froze when the cut itself fails', async () => {
    await expect(withFrozen([a, b], async () => Promise.reject(new Error('cut failed')))).rejects.toThrow('cut failed');
    expect(calls.slice(2)).toEqual([`fsfreeze -u ${b}`, `fsfreeze -u ${a}`]);
    expect(await entries()).toEqual([]);
  });
});
