// What a cluster run can leave on the host (processes, mounts, loop devices, cgroups), for
// the e2e tests that check `cluster down` leaves none of it.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

/** PIDs of live processes whose command line mentions `needle`. */
export function processesMentioning(needle: string): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid) || pid === String(process.pid)) continue;
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
      if (cmd.includes(needle)) found.push(`${pid}: ${cmd.slice(0, 200)}`);
    } catch {
      /* process exited */
    }
  }
  return found;
}

export function mountsBelow(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((m): m is string => m !== undefined && (m === dir || m.startsWith(dir + '/')));
}

export function loopDevicesBackedBelow(dir: string): string[] {
  const out: string[] = [];
  if (!existsSync('/sys/block')) return out;
  for (const dev of readdirSync('/sys/block')) {
    if (!dev.startsWith('loop')) continue;
    try {
      const back = readFileSync(`/sys/block/${dev}/loop/backing_file`, 'utf8').trim();
      if (back.startsWith(dir + '/')) out.push(`${dev}: ${back}`);
    } catch {
      /* not attached */
    }
  }
  return out;
}

export function cgroupDirs(name: string): string[] {
  return readdirSync('/sys/fs/cgroup')
    .map((h) => join('/sys/fs/cgroup', h, name))
    .filter((p) => existsSync(p));
}
