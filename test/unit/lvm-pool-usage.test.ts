// How full the LVM backend's pools are, as the metrics export them, from lvm's JSON reports.
// A thin pool needs device-mapper to exist, which this machine's kernel lacks (see the LVM
// backend's no-device-mapper mode), so the reports here are lvm2 2.03's own output for an
// active and an inactive thin pool, answered by a recording runner: an inactive pool prints
// "" for data_percent and metadata_percent, which is unknown, not 0 % used.
import { describe, it, expect } from 'vitest';
import { pino } from 'pino';
import { LvmBackend } from '../../driver/backends/lvm/index.js';
import { Lvm, percentOf } from '../../driver/backends/lvm/lvm.js';

const MiB = 1024n * 1024n;
const GiB = 1024n * MiB;

function backendWithReports(thinRows: Array<Record<string, string>>): { b: LvmBackend; calls: string[][] } {
  const calls: string[][] = [];
  const b = new LvmBackend({ volumeGroups: ['vg0'], devices: ['/dev/sdb'], mode: 'dm', stateDir: '/nonexistent', log: pino({ level: 'silent' }) });
  b.lvm = new Lvm('/nonexistent', true, async (args) => {
    calls.push(args);
    const out = (key: string, rows: object[]) => ({ stdout: JSON.stringify({ report: [{ [key]: rows }] }), stderr: '', exitCode: 0 });
    if (args[0] === 'vgs') return out('vg', [{ vg_name: 'vg0', vg_extent_size: String(4n * MiB), vg_free: String(6n * GiB), vg_size: String(40n * GiB) }]);
    if (args[0] === 'lvs' && args.includes('segtype=thin-pool')) return out('lv', thinRows);
    throw new Error(`unexpected lvm ${args.join(' ')}`);
  });
  return { b, calls };
}

describe('lvm pool usage', () => {
  it('an inactive thin pool has its size but no free bytes (unknown), an active one both', async () => {
    const { b } = backendWithReports([
      { vg_name: 'vg0', lv_name: 'busy', lv_size: String(10n * GiB), data_percent: '75.00', lv_metadata_size: String(64n * MiB), metadata_percent: '12.50' },
      { vg_name: 'vg0', lv_name: 'idle', lv_size: String(20n * GiB), data_percent: '', lv_metadata_size: String(128n * MiB), metadata_percent: '' },
    ]);
    expect(await b.poolUsage()).toEqual([
      { pool: 'vg0', part: 'data', capacityBytes: 40n * GiB, freeBytes: 6n * GiB },
      { pool: 'vg0/busy', part: 'data', capacityBytes: 10n * GiB, freeBytes: (10n * GiB) / 4n },
      { pool: 'vg0/busy', part: 'metadata', capacityBytes: 64n * MiB, freeBytes: 56n * MiB },
      { pool: 'vg0/idle', part: 'data', capacityBytes: 20n * GiB, freeBytes: undefined },
      { pool: 'vg0/idle', part: 'metadata', capacityBytes: 128n * MiB, freeBytes: undefined },
    ]);
  });

  it('reads percent columns: a number is itself, empty or garbage is unknown', () => {
    expect(percentOf('0.00')).toBe(0);
    expect(percentOf('99.99')).toBe(99.99);
    expect(percentOf('')).toBeUndefined();
    expect(percentOf(' ')).toBeUndefined();
    expect(percentOf(undefined)).toBeUndefined();
    expect(percentOf('n/a')).toBeUndefined();
  });
});
