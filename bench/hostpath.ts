// The kubernetes-csi hostpath driver, installed by name from the Go module proxy into
// /var/cache/tscsi (like csi-sanity/run), at the newest v1.x tag the proxy lists.
// HOSTPATH_PLUGIN=/path/to/hostpathplugin (and HOSTPATH_TAG) skip the install.
import fs from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';

const MODULE = 'github.com/kubernetes-csi/csi-driver-host-path';

export type HostpathResult = { ok: true; binary: string; tag: string } | { ok: false; reason: string };

function goEnv(): Record<string, string> {
  const p = process.env.PATH ?? '';
  return { PATH: p.split(':').includes('/usr/local/go/bin') ? p : `${p}:/usr/local/go/bin` };
}

/** The newest vMAJOR.MINOR.PATCH with major 1 from a `go list -m -versions` line. */
export function newestV1(versionsLine: string): string | undefined {
  const tags = versionsLine
    .trim()
    .split(/\s+/)
    .filter((v) => /^v1\.\d+\.\d+$/.test(v));
  const key = (v: string) => v.slice(1).split('.').map(Number);
  tags.sort((a, b) => {
    const [x, y] = [key(a), key(b)];
    return x[0] - y[0] || x[1] - y[1] || x[2] - y[2];
  });
  return tags[tags.length - 1];
}

export async function ensureHostpath(cacheRoot = process.env.TSCSI_CACHE ?? '/var/cache/tscsi'): Promise<HostpathResult> {
  if (process.env.HOSTPATH_PLUGIN) {
    return existsSync(process.env.HOSTPATH_PLUGIN)
      ? { ok: true, binary: process.env.HOSTPATH_PLUGIN, tag: process.env.HOSTPATH_TAG ?? 'unknown' }
      : { ok: false, reason: `HOSTPATH_PLUGIN=${process.env.HOSTPATH_PLUGIN} does not exist` };
  }
  const env = { ...process.env, ...goEnv() };
  const list = await execa('go', ['list', '-m', '-versions', MODULE], { reject: false, env, cwd: '/tmp', timeout: 120_000 });
  const tag = list.exitCode === 0 ? newestV1(String(list.stdout).split(/\s+/).slice(1).join(' ')) : undefined;
  if (!tag) {
    // The proxy would not list versions: use a binary a previous run cached, if any.
    const cached = (await fs.readdir(cacheRoot).catch(() => [] as string[])).filter((d) => d.startsWith('hostpath-v1.')).sort();
    const last = cached[cached.length - 1];
    if (last && existsSync(path.join(cacheRoot, last, 'hostpathplugin'))) return { ok: true, binary: path.join(cacheRoot, last, 'hostpathplugin'), tag: last.slice('hostpath-'.length) };
    const why = String(list.stderr || list.stdout).trim().split('\n').slice(0, 2).join(' / ');
    return { ok: false, reason: `\`go list -m -versions ${MODULE}\` failed: ${why}` };
  }
  const dir = path.join(cacheRoot, `hostpath-${tag}`);
  const binary = path.join(dir, 'hostpathplugin');
  if (existsSync(binary)) return { ok: true, binary, tag };
  await fs.mkdir(cacheRoot, { recursive: true });
  const tmp = `${dir}.tmp.${process.pid}`;
  process.stderr.write(`bench: installing hostpathplugin ${tag} into ${dir}\n`);
  const inst = await execa('go', ['install', `${MODULE}/cmd/hostpathplugin@${tag}`], {
    reject: false,
    env: { ...env, GOBIN: tmp, GOFLAGS: '-buildvcs=false' },
    cwd: '/tmp',
    timeout: 900_000,
  });
  if (inst.exitCode !== 0) {
    await fs.rm(tmp, { recursive: true, force: true });
    return { ok: false, reason: `go install ${MODULE}/cmd/hostpathplugin@${tag} failed: ${String(inst.stderr).trim().split('\n').slice(-3).join(' / ')}` };
  }
  await fs.mkdir(dir, { recursive: true });
  await fs.rename(path.join(tmp, 'hostpathplugin'), binary);
  await fs.rm(tmp, { recursive: true, force: true });
  return { ok: true, binary, tag };
}
