// test/guest/run: the QEMU guest on Debian's kernel that the real-kernel tier runs in. What
// the host tier cannot do: load modules at all (this kernel has CONFIG_MODULES unset), so
// device-mapper, thin pools, krbd and nbd exist only in the guest. The tier is only as
// trustworthy as this wrapper: the command's exit code must come back, and a guest that
// dies, hangs or is interrupted must fail the run and leave no qemu behind.
import { describe, it, expect } from 'vitest';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { execa } from 'execa';
import { waitFor } from '../lib/wait.js';

const RUN = path.resolve(import.meta.dirname, '../guest/run');
// A TCG guest boots in ~10 s on an idle machine, several times that on a loaded one.
const GUEST_MS = 600_000;

interface Outcome {
  code: number | null;
  output: string;
  pid: number;
}

function guest(args: string[], onStart?: (pid: number) => void): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const p = spawn(RUN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    p.stdout.on('data', (b: Buffer) => (output += b.toString()));
    p.stderr.on('data', (b: Buffer) => (output += b.toString()));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, output, pid: p.pid! }));
    onStart?.(p.pid!);
  });
}

/** The qemu of the run with this PID, if it is still there: the qemu process itself (its command
 *  line starts with the binary), not the setpriv and timeout wrappers that carry the same arguments. */
async function qemuOf(runPid: number): Promise<string> {
  const r = await execa('pgrep', ['-f', '--', `^qemu-system-x86_64 .*-name tscsi-guest-${runPid} `], { reject: false });
  return r.stdout.trim();
}

describe('test/guest/run', () => {
  it('boots Debian\'s kernel and loads dm-mod, dm-thin-pool, dm-snapshot, rbd and nbd there', { timeout: GUEST_MS }, async () => {
    const r = await guest([
      'bash', '-c',
      'set -e; modprobe -a dm-mod dm-thin-pool dm-snapshot rbd nbd; ' +
        'for m in dm_mod dm_thin_pool dm_snapshot rbd nbd loop; do test -d /sys/module/$m && echo "loaded $m"; done; ' +
        'grep -w device-mapper /proc/misc; dmsetup targets | sort',
    ]);
    expect(r.output).toMatch(/tscsi-guest: up after [\d.]+s, kernel \d+\.\d+\.\d+-\d+-amd64/);
    for (const m of ['dm_mod', 'dm_thin_pool', 'dm_snapshot', 'rbd', 'nbd', 'loop']) expect(r.output).toContain(`loaded ${m}\n`);
    expect(r.output).toMatch(/^\s*\d+ device-mapper$/m);
    expect(r.output).toMatch(/^thin-pool\s+v/m);
    expect(r.code, r.output).toBe(0);
  });

  it('returns the command\'s exit code: a failing script fails the run, and what follows the failure does not run', { timeout: GUEST_MS }, async () => {
    const r = await guest(['bash', '-c', 'set -e; echo "before, in $PWD"; (exit 7); echo after']);
    expect(r.output).toContain(`before, in ${process.cwd()}\n`);
    expect(r.output).not.toContain('after\n');
    expect(r.code, r.output).toBe(7);
  });

  it('fails, saying why, when the guest ends without an exit code', { timeout: GUEST_MS }, async () => {
    // The command resets the machine under itself: what a guest crash looks like from outside.
    const r = await guest(['/bin/busybox', 'reboot', '-f']);
    expect(r.output).toMatch(/the guest ended \(qemu exit \d+, \d+s\) without the command's exit code/);
    expect(r.code).toBe(125);
  });

  it('stops the guest at its timeout', { timeout: GUEST_MS }, async () => {
    let seen = '';
    let ended = false;
    // Watched until the run ends, not for a fixed time: on a loaded machine the set-up before
    // qemu starts (apt-cache, the /tmp disk's mkfs) alone can take seconds.
    const r = await guest(['--timeout', '5', 'sleep', 'infinity'], (pid) => {
      void waitFor('the guest to start', async () => ended || (seen = await qemuOf(pid)), { everyMs: 100, timeoutMs: GUEST_MS }).catch(() => undefined);
    });
    ended = true;
    expect(seen, 'its qemu was seen running').not.toBe('');
    expect(r.output).toContain('the guest did not finish within 5s (stopped)');
    expect(r.code).toBe(125);
    expect(await qemuOf(r.pid)).toBe('');
  });

  it('stops the guest when the run is interrupted (SIGTERM)', { timeout: GUEST_MS }, async () => {
    const r = await guest(['sleep', 'infinity'], (pid) => {
      void waitFor('the guest to start', () => qemuOf(pid)).then(() => process.kill(pid, 'SIGTERM'));
    });
    expect(r.code).toBe(143);
    expect(await qemuOf(r.pid)).toBe('');
  });
});
