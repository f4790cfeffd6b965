// Reports reused between lvm writes: which lookups run lvm and which are answered from the
// last report, with a recorded lvm and the PVs' metadata state given by the test.
import { describe, it, expect, beforeEach, afterEach, vi } from 'vitest';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Lvm, REPORT_REUSE_MS } from '../../driver/backends/lvm/lvm.js';

const seg = (name: string, tags = '') => ({ vg_name: 'vg0', lv_name: name, lv_size: '4194304', lv_tags: tags, lv_attr: '-wi-------', pool_lv: '', seg_start_pe: '0', seg_size_pe: '1', seg_pe_ranges: '/dev/sdb:0-0', data_percent: '', metadata_percent: '' });

let dir: string;
let lvsRuns: number;
let state: string | undefined;
let rows: Array<ReturnType<typeof seg>>;
/** Resolves the write in flight, when a test holds one. */
let finishWrite: (() => void) | undefined;
let lvm: Lvm;

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tscsi-unit-lvm-reuse-'));
  lvsRuns = 0;
  state = 'commit-1';
  rows = [seg('a'), seg('b')];
  const runner = async (args: string[]) => {
    if (args[0] === 'lvs') {
      lvsRuns++;
      return { stdout: JSON.stringify({ report: [{ seg: rows }] }), stderr: '', exitCode: 0 };
    }
    if (args.includes('--hold')) await new Promise<void>((r) => (finishWrite = r));
    return { stdout: '', stderr: '', exitCode: 0 };
  };
  lvm = new Lvm(dir, false, runner, undefined, async () => state);
  await lvm.configure(['/dev/sdb']);
});
afterEach(async () => {
  vi.useRealTimers();
  await fs.rm(dir, { recursive: true, force: true });
});

describe('lvm reports reused between writes', () => {
  it('answers lookups of the same VGs from one report, one LV by name picked from it', async () => {
    expect((await lvm.lvs(['vg0'])).map((l) => l.name)).toEqual(['a', 'b']);
    expect((await lvm.lvs(['vg0'], 'lv_name=b')).map((l) => l.name)).toEqual(['b']);
    expect(await lvm.lvs(['vg0'], 'lv_name=c')).toEqual([]);
    expect(lvsRuns).toBe(1);
  });

  it("reads again after the driver's own write", async () => {
    await lvm.lvs(['vg0']);
    rows = [seg('a', 'tscsi.x')];
    await lvm.run(['lvchange', '--addtag', 'tscsi.x', 'vg0/a']);
    expect((await lvm.lvs(['vg0'], 'lv_name=a'))[0].tags).toEqual(['tscsi.x']);
    expect(lvsRuns).toBe(2);
  });

  it('reads again when the PVs show a metadata commit it did not make (another writer)', async () => {
    await lvm.lvs(['vg0']);
    rows = [seg('a')];
    state = 'commit-2';
    expect((await lvm.lvs(['vg0'])).map((l) => l.name)).toEqual(['a']);
    expect(lvsRuns).toBe(2);
  });

  it('never reuses a report while a write runs, nor one read across a write', async () => {
    await lvm.lvs(['vg0']);
    const write = lvm.run(['lvcreate', '--hold', '-n', 'c', 'vg0']);
    await vi.waitFor(() => expect(finishWrite).toBeDefined());
    await lvm.lvs(['vg0']);
    await lvm.lvs(['vg0']);
    expect(lvsRuns).toBe(3);
    finishWrite!();
    await write;
    rows = [seg('a'), seg('b'), seg('c')];
    expect((await lvm.lvs(['vg0'])).map((l) => l.name)).toEqual(['a', 'b', 'c']);
    expect(lvsRuns).toBe(4);
  });

  it('reads again once a report is older than the reuse period (activation and fill are not in the metadata), on the monotonic clock', async () => {
    vi.useFakeTimers({ toFake: ['Date', 'performance'] });
    await lvm.lvs(['vg0']);
    vi.setSystemTime(Date.now() - 3_600_000); // the wall clock stepped back (NTP) does not stretch the period
    vi.advanceTimersByTime(REPORT_REUSE_MS - 1);
    await lvm.lvs(['vg0']);
    expect(lvsRuns).toBe(1);
    vi.advanceTimersByTime(2);
    await lvm.lvs(['vg0']);
    expect(lvsRuns).toBe(2);
  });

  it('reuses nothing when the PVs cannot be read', async () => {
    state = undefined;
    await lvm.lvs(['vg0']);
    await lvm.lvs(['vg0']);
    expect(lvsRuns).toBe(2);
  });
});
