// Kill the driver at a named fail point (driver/failpoints.ts) and prove it died there.
import { once } from 'node:events';
import { expect } from 'vitest';
import type { DriverHarness } from './driver-harness.js';
import { codeName } from '../../sidecars/common/csi-client.js';
import { within } from './wait.js';

export interface Fired {
  failpoint: string;
  toolRunning?: boolean;
  tool?: string;
}

/** Where a crash's time went: stop and start armed, the call until the death, the start after it. */
export interface CrashTimes {
  armedStart: number;
  untilDeath: number;
  restart: number;
}

/**
 * Restarts the driver with one fail point armed, runs act until the driver dies, and
 * requires that it died by SIGKILL at exactly that point (its log names the point; a
 * :during kill also says the tool was still running). Then restarts it without fail
 * points (after beforeRestart). Returns how the killed call ended and the fail point's log line.
 */
export async function crashAt(
  h: DriverHarness,
  point: string,
  act: () => Promise<unknown>,
  /** Looks at what the kill left, before the restarted driver reconciles it. */
  beforeRestart?: () => Promise<void>,
): Promise<{ first: string; fired: Fired; ms: CrashTimes }> {
  const t0 = Date.now();
  await h.stopProcess();
  const logFrom = (await h.log()).length;
  await h.startProcess(point);
  const t1 = Date.now();
  const proc = h.proc!;
  const exited = once(proc, 'exit');
  const first = await act().then(
    () => 'OK',
    (e) => codeName(e) ?? String(e),
  );
  const died = await within(exited.then(() => true), 5_000, false);
  const t2 = Date.now();
  expect(died, `the driver did not die at ${point}; the call answered ${first}`).toBe(true);
  expect(proc.signalCode).toBe('SIGKILL');
  const fired = (await h.log())
    .slice(logFrom)
    .split('\n')
    .filter((l) => l.includes('"failpoint"'))
    .map((l) => JSON.parse(l) as Fired);
  expect(fired.map((f) => f.failpoint)).toEqual([point.replace(/=\d+$/, '')]);
  if (point.includes(':during')) expect(fired[0].toolRunning, `${fired[0].tool} had finished before the kill`).toBe(true);
  await beforeRestart?.();
  const t3 = Date.now();
  await h.startProcess();
  return { first, fired: fired[0], ms: { armedStart: t1 - t0, untilDeath: t2 - t1, restart: Date.now() - t3 } };
}
