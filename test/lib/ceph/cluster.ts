// A real single-host Ceph cluster for a test file (test/lib/ceph/cluster.sh), on 127.0.0.1
// (or another address of this machine, e.g. a multi-node test cluster's bridge) with its own
// directory and ports, and its removal: whatever was mounted or looped from
// under the directory, rbd-fuse helpers by recorded PID, the daemons by recorded PID.
import fs from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';

const SCRIPT = path.join(import.meta.dirname, 'cluster.sh');

export interface CephEnv {
  dir: string;
  conf: string;
  mon: string;
  pool: string;
  user: string;
  keyFile: string;
  key: string;
}

export async function installCeph(): Promise<void> {
  const r = await execa('bash', [SCRIPT, 'install'], { reject: false, timeout: 600_000 });
  if (r.exitCode !== 0) throw new Error(`installing ceph failed: ${String(r.stderr).slice(-2000)}`);
}

async function portFree(port: number): Promise<boolean> {
  const r = await execa('ss', ['-Hltn', `sport = :${port}`], { reject: false });
  return !String(r.stdout).trim();
}

/** `addr`: where every daemon listens (an IPv4 address of this machine). */
export async function startCeph(dir: string, addr = '127.0.0.1'): Promise<CephEnv> {
  await installCeph();
  let last = '';
  for (let attempt = 0; attempt < 5; attempt++) {
    // Ports 30000-31999 in steps of 50 (each cluster uses PORT..PORT+40): unlikely to meet another run.
    const port = 30000 + 50 * Math.floor(Math.random() * 40);
    if (!(await portFree(port)) || !(await portFree(port + 1))) continue;
    const r = await execa('bash', [SCRIPT, 'up', dir, String(port), addr], { reject: false, timeout: 300_000 });
    if (r.exitCode === 0) {
      const kv: Record<string, string> = {};
      for (const l of String(r.stdout).split('\n')) {
        const i = l.indexOf('=');
        if (i > 0) kv[l.slice(0, i)] = l.slice(i + 1);
      }
      return {
        dir: kv.CEPH_DIR,
        conf: kv.CEPH_CONF,
        mon: kv.CEPH_MON,
        pool: kv.CEPH_POOL,
        user: kv.CEPH_USER,
        keyFile: kv.CEPH_KEYFILE,
        key: (await fs.readFile(kv.CEPH_KEYFILE, 'utf8')).trim(),
      };
    }
    last = String(r.stderr).slice(-2000);
    await stopCeph(dir);
  }
  throw new Error(`could not start a ceph cluster: ${last}`);
}

export async function stopCeph(dir: string): Promise<void> {
  await execa('bash', [SCRIPT, 'down', dir], { reject: false, timeout: 120_000 });
}

/** How many admin rbd commands ran, so a test can report what its checks cost. */
export const adminRbdRuns = { count: 0 };

/** Admin rbd on the test cluster (the test's own checks, not the driver's). */
export async function adminRbd(env: CephEnv, args: string[]): Promise<string> {
  adminRbdRuns.count++;
  const r = await execa('rbd', ['-c', env.conf, ...args], { reject: false, env: { CEPH_ARGS: '' } });
  if (r.exitCode !== 0) throw new Error(`rbd ${args.join(' ')}: ${String(r.stderr).slice(-500)}`);
  return String(r.stdout);
}

/** Everything a driver left under dir: mounts (deepest first, fuse last), loops, rbd-fuse helpers. */
export async function cleanupDriverDir(dir: string): Promise<void> {
  const mounts = async () =>
    (await fs.readFile('/proc/self/mountinfo', 'utf8'))
      .split('\n')
      .filter(Boolean)
      .map((l) => {
        const f = l.split(' ');
        return { target: f[4].replace(/\\040/g, ' '), fstype: f[f.indexOf('-', 6) + 1] };
      })
      .filter((m) => m.target.startsWith(dir + '/'));
  const umount = async (t: string) => {
    const r = await execa('umount', [t], { reject: false });
    if (r.exitCode !== 0) await execa('umount', ['-l', t], { reject: false });
  };
  for (const m of (await mounts()).filter((x) => !x.fstype.startsWith('fuse')).reverse()) await umount(m.target);
  const r = await execa('losetup', ['-l', '-n', '-J'], { reject: false });
  if (String(r.stdout).trim()) {
    const j = JSON.parse(String(r.stdout)) as { loopdevices: Array<{ name: string; 'back-file': string | null }> };
    for (const d of j.loopdevices) if (d['back-file']?.startsWith(dir + '/')) await execa('losetup', ['-d', d.name], { reject: false });
  }
  for (const m of (await mounts()).reverse()) await umount(m.target);
  // rbd-fuse exits by itself after its unmount; any left are stopped by their recorded PID.
  const files = await execa('find', [dir, '-name', 'mapping.json'], { reject: false });
  for (const f of String(files.stdout).split('\n').filter(Boolean)) {
    const m = JSON.parse(await fs.readFile(f, 'utf8').catch(() => '{}')) as { pid?: number; startTime?: string };
    if (!m.pid) continue;
    for (let i = 0; i < 100; i++) {
      const stat = await fs.readFile(`/proc/${m.pid}/stat`, 'utf8').catch(() => '');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (!stat || fields[19] !== m.startTime || fields[0] === 'Z') break;
      if (i === 60) process.kill(m.pid, 'SIGTERM');
      if (i === 90) process.kill(m.pid, 'SIGKILL');
      await new Promise((res) => setTimeout(res, 50));
    }
  }
}
