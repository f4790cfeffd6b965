// wipe() decides from sysfs whether a discard leaves zeros; where it does not, the whole
// device is zeroed. The tools are a recording fake and sysfs a directory tree made here
// (a device whose discard keeps old data cannot be made on these VMs); the real wipe on
// real lvm2 is in test/integration/lvm.test.ts.
import { describe, it, expect, beforeEach, afterEach, vi } from 'vitest';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

vi.mock('../../driver/host/exec.js', async (orig) => (await import('./exec-recorder.js')).recordingExec(orig));
import { recorder, resetRecorder } from './exec-recorder.js';

let discardFails = false;
const answer = (file: string, args: string[]) => {
  if (file === 'blockdev') return { stdout: String(64 * 1024 * 1024), stderr: '', exitCode: 0 };
  if (file === 'blkdiscard' && !args.includes('-z') && discardFails) return { stdout: '', stderr: 'Operation not supported', exitCode: 1 };
  return undefined;
};
const calls = recorder.calls;

const { wipe } = await import('../../driver/host/block.js');

// Any device node will do for the major:minor lookup; the sysfs entries are the test's.
const DEVICE = '/dev/null';
let sys: string;
let devDir: string;

beforeEach(async () => {
  sys = await fs.mkdtemp(path.join(os.tmpdir(), 'tscsi-unit-sys-'));
  devDir = path.join(sys, 'dev', 'block', '1:3');
  await fs.mkdir(path.join(devDir, 'queue'), { recursive: true });
  resetRecorder(answer);
  discardFails = false;
});

afterEach(async () => {
  await fs.rm(sys, { recursive: true, force: true });
});

describe('wipe', () => {
  it('zeroes the whole device when its discard does not promise zeros (discard_zeroes_data 0)', async () => {
    await fs.writeFile(path.join(devDir, 'queue', 'discard_zeroes_data'), '0\n');
    await wipe(DEVICE, sys);
    expect(calls).toEqual([`blkdiscard -f ${DEVICE}`, `blkdiscard -f -z ${DEVICE}`]);
  });

  it('trusts the discard of a loop device (a punched hole reads as zeros)', async () => {
    await fs.mkdir(path.join(devDir, 'loop'));
    await fs.writeFile(path.join(devDir, 'loop', 'backing_file'), '/var/lib/pv.img\n');
    await fs.writeFile(path.join(devDir, 'queue', 'discard_zeroes_data'), '0\n');
    await wipe(DEVICE, sys);
    expect(calls).toEqual([`blkdiscard -f ${DEVICE}`]);
  });

  it('zeroes a loop device whose discard failed', async () => {
    await fs.mkdir(path.join(devDir, 'loop'));
    await fs.writeFile(path.join(devDir, 'loop', 'backing_file'), '/var/lib/pv.img\n');
    discardFails = true;
    await wipe(DEVICE, sys);
    expect(calls).toEqual([`blkdiscard -f ${DEVICE}`, `blkdiscard -f -z ${DEVICE}`]);
  });
});
