// Runs the device-mapper LVM tests (test/guest/*.guest.ts) inside the real-kernel guest
// (test/guest/run), both files in one boot (TCG boots slowly): NodeStage/NodeUnstage
// activating and deactivating linear and thin LVs (lvm-dm), and thin snapshots and clones,
// a full thin pool, online growth and the wipe of reused extents (lvm-dm-ops), on a kernel
// with device-mapper, which the host's kernel lacks. The
// guest's vitest run must pass every test it has, and have them all: a guest that does not
// boot fails here, saying why.
import { describe, it, expect } from 'vitest';
import path from 'node:path';
import { execa } from 'execa';

const ROOT = path.resolve(import.meta.dirname, '../..');

describe('inside the guest: the LVM backend in device-mapper mode', () => {
  it('test/guest/lvm-dm.guest.ts and lvm-dm-ops.guest.ts pass, every test of them', { timeout: 1_800_000 }, async () => {
    const r = await execa(
      path.join(ROOT, 'test/guest/run'),
      ['--timeout', '1500', 'npx', 'vitest', 'run', '--config', 'test/guest/vitest.config.ts', 'test/guest/lvm-dm.guest.ts', 'test/guest/lvm-dm-ops.guest.ts'],
      { cwd: ROOT, reject: false, all: true },
    );
    const out = r.all ?? '';
    console.log(out);
    expect(out).toMatch(/^\s*Tests\s+11 passed \(11\)\s*$/m);
    expect(r.exitCode, out).toBe(0);
  });
});
