// Node side: turning an RBD image into a block device on this node. Three mappers:
//  - krbd: `rbd device map` (the kernel's rbd driver; production default)
//  - rbd-nbd: `rbd device map -t nbd` (librbd in a userspace daemon behind /dev/nbdX)
//  - fuse: `rbd-fuse` exposes the image as a file, a loop device with direct I/O turns it
//    into a block device (kernels with neither rbd nor nbd, such as the test VMs).
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import { openSync, closeSync } from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { run, CommandError } from '../../host/exec.js';
import * as loop from '../../host/loop.js';
import * as mnt from '../../host/mount.js';
import { implicitMountOptions } from '../../host/fs.js';
import { readJson, writeJsonAtomic, removeFile } from '../../host/atomic.js';
import { BackendError } from '../backend.js';
import type { Logger } from '../../log.js';
import { failpoint } from '../../failpoints.js';
import { CephCli, imageSpec, type Credentials } from './cli.js';
import { PER_MOUNT_FLAGS } from '../../validate.js';
import type { ClusterConfig, PoolRef } from './config.js';

export interface MapTarget {
  cluster: ClusterConfig;
  pool: PoolRef;
  image: string;
}

export interface Mapper {
  /** The --rbd-mapper value that chose it. */
  readonly name: string;
  map(t: MapTarget, creds: Credentials): Promise<string>;
  mapped(t: MapTarget): Promise<string | undefined>;
  unmap(t: MapTarget): Promise<void>;
  /** Makes the device see the image's current size. */
  refresh(t: MapTarget, device: string): Promise<void>;
  /**
   * When this image was mapped afresh after its helper died: containers started before then
   * still hold the dead device (their mounts were copied when they started), which no
   * re-map can reach.
   */
  remappedAt?(t: MapTarget): Promise<string | undefined>;
  /**
   * Why the image's mapping on this node no longer serves I/O (its helper process or its
   * device gone), or undefined: nothing mapped, or mapped and alive.
   */
  mappingProblem(t: MapTarget): Promise<string | undefined>;
  /** After a restart: re-maps what was mapped before and lost its helper. */
  recover(clusters: ClusterConfig[], credsFor: (cluster: ClusterConfig) => Credentials | undefined): Promise<void>;
}

const lastLine = (s: string) => s.trim().split('\n').filter((l) => !/^\d{4}-\d\d-\d\dT/.test(l) && !/did not load config/.test(l)).slice(-2).join(' / ');

/** krbd and rbd-nbd: the rbd CLI does the mapping; the device list says what is mapped. */
export class DeviceMapper implements Mapper {
  constructor(
    readonly name: 'krbd' | 'rbd-nbd',
    private readonly cli: CephCli,
    private readonly options: string[],
  ) {}

  private get type() {
    return this.name === 'krbd' ? 'krbd' : 'nbd';
  }

  async map(t: MapTarget, creds: Credentials): Promise<string> {
    const have = await this.mapped(t);
    if (have) return have;
    const args = ['device', 'map', '-t', this.type, ...(this.options.length ? ['-o', this.options.join(',')] : []), imageSpec(t.pool, t.image)];
    try {
      const r = await this.cli.rbd(t.cluster, creds, args);
      const dev = r.stdout.trim().split('\n').pop() ?? '';
      if (!/^\/dev\/[a-z0-9]+$/.test(dev)) throw new Error(`rbd device map printed ${JSON.stringify(dev.slice(0, 80))}, not a device`);
      return dev;
    } catch (err) {
      if (!(err instanceof CommandError)) throw err;
      const why = lastLine(err.stderr);
      if (this.name === 'krbd') {
        const hasDriver = await fs.access('/sys/bus/rbd').then(() => true, () => false);
        throw new BackendError(
          'precondition',
          hasDriver
            ? `the krbd mapper could not map ${imageSpec(t.pool, t.image)}: ${why}`
            : `the krbd mapper could not map ${imageSpec(t.pool, t.image)}: this node's kernel has no rbd driver (/sys/bus/rbd is missing and the module could not be loaded: ${why}). Load the rbd kernel module on the node, or run the node plugin with --rbd-mapper fuse`,
        );
      }
      const hasNbd = await fs.access('/sys/block/nbd0').then(() => true, () => false);
      throw new BackendError(
        'precondition',
        hasNbd
          ? `the rbd-nbd mapper could not map ${imageSpec(t.pool, t.image)}: ${why}`
          : `the rbd-nbd mapper could not map ${imageSpec(t.pool, t.image)}: this node's kernel has no nbd devices (/dev/nbd0 is missing: ${why}). Load the nbd module, or run the node plugin with --rbd-mapper fuse`,
      );
    }
  }

  async mapped(t: MapTarget): Promise<string | undefined> {
    const r = await run('rbd', ['-c', '/dev/null', 'device', 'list', '-t', this.type, '--format', 'json'], { env: { CEPH_ARGS: '' }, okCodes: [1, 2, 22] });
    if (r.exitCode !== 0) return undefined;
    const list = JSON.parse(r.stdout || '[]') as Array<{ pool: string; namespace?: string; name: string; snap?: string; device: string }>;
    return list.find((d) => d.pool === t.pool.pool && (d.namespace ?? '') === t.pool.namespace && d.name === t.image && (!d.snap || d.snap === '-'))?.device;
  }

  async unmap(t: MapTarget): Promise<void> {
    const dev = await this.mapped(t);
    if (dev) await run('rbd', ['-c', '/dev/null', 'device', 'unmap', '-t', this.type, dev], { env: { CEPH_ARGS: '' } });
  }

  async refresh(): Promise<void> {
    // The kernel driver and rbd-nbd follow resizes by themselves.
  }

  /** The device rbd lists must still be a block device of the kernel, and (krbd) still this image. */
  async mappingProblem(t: MapTarget): Promise<string | undefined> {
    const dev = await this.mapped(t);
    if (!dev) return undefined;
    const name = path.basename(dev);
    if (!(await fs.access(`/sys/block/${name}`).then(() => true, () => false))) return `${dev} (${imageSpec(t.pool, t.image)}) is listed by rbd but gone from /sys/block`;
    if (this.name === 'krbd') {
      const id = /^rbd(\d+)$/.exec(name)?.[1];
      const shown = id ? (await fs.readFile(`/sys/bus/rbd/devices/${id}/name`, 'utf8').catch(() => '')).trim() : '';
      if (id && shown !== t.image) return `${dev} shows image ${JSON.stringify(shown)} in /sys/bus/rbd, not ${t.image}`;
    }
    return undefined;
  }

  async recover(): Promise<void> {
    // Kernel mappings outlive the plugin; rbd-nbd daemons are separate processes.
  }
}

/** What the fuse mapper remembers of one mapping, in its state directory. */
interface FuseMapping {
  clusterID: string;
  pool: string;
  namespace: string;
  image: string;
  pid: number;
  /** Field 22 of /proc/PID/stat: a recycled PID is never taken for ours. */
  startTime: string;
  device?: string;
  /** Set by a re-map after the helper died (see Mapper.remappedAt). */
  remappedAt?: string;
}

async function startTimeOf(pid: number): Promise<string | undefined> {
  const s = await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (!s) return undefined;
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  if (f[0] === 'Z') return undefined; // a zombie has exited
  return f[19];
}

async function alive(m: { pid: number; startTime: string }): Promise<boolean> {
  return m.pid > 0 && (await startTimeOf(m.pid)) === m.startTime;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** How long rbd-fuse may take to show an image after it starts, or to exit after its unmount. */
const FUSE_WAIT_MS = 30_000;
/** How often those waits look. */
const FUSE_POLL_MS = 50;
/** How long rbd-fuse gets to exit after SIGTERM before SIGKILL. */
const FUSE_SIGTERM_GRACE_MS = 5_000;

/** What a re-made mount takes over from the one it replaces: read-only, sync, and the per-mount flags. */
const KEPT_MOUNT_OPTIONS = new Set(['ro', 'sync', 'dirsync', ...PER_MOUNT_FLAGS]);

export class FuseMapper implements Mapper {
  readonly name = 'fuse';

  constructor(
    private readonly stateDir: string,
    private readonly cli: CephCli,
    private readonly log: Logger,
    private readonly waitMs = FUSE_WAIT_MS,
  ) {}

  private dirOf(t: MapTarget): string {
    const key = `${t.cluster.clusterID}\0${t.pool.pool}\0${t.pool.namespace}\0${t.image}`;
    return path.join(this.stateDir, createHash('sha256').update(key).digest('hex').slice(0, 24));
  }
  private mntOf(t: MapTarget) {
    return path.join(this.dirOf(t), 'mnt');
  }
  private fileOf(t: MapTarget) {
    return path.join(this.mntOf(t), t.image);
  }
  private recOf(t: MapTarget) {
    return path.join(this.dirOf(t), 'mapping.json');
  }

  async init(): Promise<void> {
    await fs.mkdir(this.stateDir, { recursive: true, mode: 0o700 });
    await fs.chmod(this.stateDir, 0o700); // rbd-fuse shows images as mode 0666 files: nobody else may reach them
  }

  /** The loop device bound to this image's fuse file, whether or not its helper still runs. */
  private async boundDevice(t: MapTarget, rec: FuseMapping | undefined): Promise<string | undefined> {
    if (!rec?.device) return undefined;
    const d = await loop.describe(rec.device).catch(() => undefined);
    // The kernel keeps the resolved path; the mapping's own directory is an ordinary one (never
    // stat inside the fuse mount: a dead helper makes that fail).
    const dir = await fs.realpath(this.dirOf(t)).catch(() => this.dirOf(t));
    return d && d.backFile === path.join(dir, 'mnt', t.image) ? rec.device : undefined;
  }

  /**
   * Every loop device on this image's fuse file, not only the recorded one: a crash between
   * attaching a device and recording it leaves one the record does not name, and an older
   * version's re-map left such devices behind once their fuse mount was detached (the kernel
   * then shows the file as "/<image>"). Each would hold a dead file for ever.
   */
  private async devicesOnFile(t: MapTarget): Promise<string[]> {
    // The path the kernel keeps is the resolved one (as in boundDevice).
    const dir = await fs.realpath(this.dirOf(t)).catch(() => this.dirOf(t));
    return loop.devicesShowing([path.join(dir, 'mnt', t.image), `/${t.image}`]);
  }

  async mapped(t: MapTarget): Promise<string | undefined> {
    return this.boundDevice(t, await readJson<FuseMapping>(this.recOf(t)));
  }

  async remappedAt(t: MapTarget): Promise<string | undefined> {
    return (await readJson<FuseMapping>(this.recOf(t)).catch(() => undefined))?.remappedAt;
  }

  async map(t: MapTarget, creds: Credentials): Promise<string> {
    const rec = await readJson<FuseMapping>(this.recOf(t));
    const dev = await this.boundDevice(t, rec);
    if (rec && dev && (await alive(rec))) return dev;
    if (rec) await this.teardown(t, rec); // a mapping whose helper died: start over
    const dir = this.dirOf(t);
    const mntDir = this.mntOf(t);
    await fs.mkdir(mntDir, { recursive: true, mode: 0o700 });
    await fs.chmod(dir, 0o700);
    const logFile = path.join(dir, 'rbd-fuse.log');
    const started = await this.cli.withKeyFile(creds, async (keyFile) => {
      const fd = openSync(logFile, 'a', 0o600);
      let child;
      try {
        const args = ['-c', '/dev/null', '-p', t.pool.pool, ...(t.pool.namespace ? ['--namespace', t.pool.namespace] : []), '-r', t.image, mntDir, '-f'];
        // Connection settings through CEPH_ARGS: the key file's path only, never the key.
        child = spawn('rbd-fuse', args, {
          detached: true,
          stdio: ['ignore', fd, fd],
          env: { ...process.env, LC_ALL: 'C', CEPH_ARGS: this.cli.connArgs(t.cluster, creds.user, keyFile).slice(2).join(' ') },
        });
      } finally {
        closeSync(fd);
      }
      child.unref();
      const pid = child.pid ?? -1;
      let exited = false;
      child.once('exit', () => (exited = true));
      child.once('error', () => (exited = true));
      const startTime = (await startTimeOf(pid)) ?? '';
      const m: FuseMapping = { clusterID: t.cluster.clusterID, pool: t.pool.pool, namespace: t.pool.namespace, image: t.image, pid, startTime };
      await writeJsonAtomic(this.recOf(t), m);
      failpoint('rbd.fuse.afterSpawn');
      // The key file must exist until rbd-fuse has connected, i.e. until the image file shows.
      const deadline = Date.now() + this.waitMs;
      for (;;) {
        const st = await fs.stat(this.fileOf(t)).catch(() => undefined);
        const mounted = (await mnt.mountAt(mntDir))?.fstype.startsWith('fuse');
        if (st && mounted) return m;
        if (exited || Date.now() > deadline) {
          const out = await fs.readFile(logFile, 'utf8').catch(() => '');
          await this.teardown(t, m);
          throw new BackendError(
            'precondition',
            `the fuse mapper could not map ${imageSpec(t.pool, t.image)}: rbd-fuse ${exited ? 'exited' : `did not show the image within ${this.waitMs / 1000} s`}${lastLine(out) ? `: ${lastLine(out)}` : ''}`,
          );
        }
        await sleep(FUSE_POLL_MS);
      }
    });
    try {
      started.device = await loop.attach(this.fileOf(t), { directIO: true });
    } catch (err) {
      await this.teardown(t, started);
      throw err;
    }
    failpoint('rbd.fuse.afterLoop');
    await writeJsonAtomic(this.recOf(t), started);
    this.log.info({ image: imageSpec(t.pool, t.image), device: started.device, pid: started.pid }, 'mapped with rbd-fuse');
    return started.device;
  }

  async unmap(t: MapTarget): Promise<void> {
    const rec = await readJson<FuseMapping>(this.recOf(t));
    if (rec) await this.teardown(t, rec);
    await fs.rm(this.dirOf(t), { recursive: true, force: true });
  }

  /**
   * Loop first, then the fuse mount, then wait for rbd-fuse to exit by itself: it closes the
   * image and releases its lock. Killing it first would leave the image locked until the
   * OSDs time its watch out.
   */
  private async teardown(t: MapTarget, rec: FuseMapping): Promise<void> {
    for (const dev of await this.devicesOnFile(t)) {
      const still = await mnt.mountsOf(dev);
      if (still.length > 0) throw new BackendError('precondition', `${dev} (${imageSpec(t.pool, t.image)}) is still mounted at ${still.map((m) => m.target).join(', ')}`);
      await loop.detach(dev);
      failpoint('rbd.fuse.afterDetach');
    }
    const mntDir = this.mntOf(t);
    if (await mnt.mountAt(mntDir)) {
      await mnt.umountOrDetach(mntDir);
      failpoint('rbd.fuse.afterUnmount');
    }
    const deadline = Date.now() + this.waitMs;
    while ((await alive(rec)) && Date.now() < deadline) await sleep(FUSE_POLL_MS);
    if (await alive(rec)) {
      this.log.warn({ pid: rec.pid, image: imageSpec(t.pool, t.image) }, 'rbd-fuse did not exit after its unmount; stopping it');
      process.kill(rec.pid, 'SIGTERM');
      const killDeadline = Date.now() + FUSE_SIGTERM_GRACE_MS;
      while ((await alive(rec)) && Date.now() < killDeadline) await sleep(FUSE_POLL_MS);
      if (await alive(rec)) process.kill(rec.pid, 'SIGKILL');
    }
    await removeFile(this.recOf(t));
  }

  /** The helper named in the mapping record must still run, and the loop device still be bound to its file. */
  async mappingProblem(t: MapTarget): Promise<string | undefined> {
    const rec = await readJson<FuseMapping>(this.recOf(t)).catch(() => undefined);
    if (!rec?.device) return undefined;
    if (!(await alive(rec))) return `its rbd-fuse helper (pid ${rec.pid}) is gone, so every read and write of ${rec.device} fails; unstage and stage the volume again (or restart the node plugin, which maps it again), then restart the pods using it`;
    if (!(await this.boundDevice(t, rec))) return `${rec.device} is no longer bound to the rbd-fuse file of ${imageSpec(t.pool, t.image)}; unstage and stage the volume again`;
    return undefined;
  }

  async refresh(_t: MapTarget, device: string): Promise<void> {
    await loop.refreshCapacity(device); // the file shows a resize once librbd has heard of it (the caller waits for that)
  }

  /**
   * rbd-fuse dies with the node plugin (its container). What was mounted from the dead
   * mapping (the staging mount, bind mounts of it, raw block bind mounts) is unmounted,
   * the image mapped afresh and everything mounted again, in the same order and modes.
   */
  async recover(clusters: ClusterConfig[], credsFor: (cluster: ClusterConfig) => Credentials | undefined): Promise<void> {
    const names = await fs.readdir(this.stateDir).catch(() => [] as string[]);
    for (const n of names) {
      const rec = await readJson<FuseMapping>(path.join(this.stateDir, n, 'mapping.json')).catch(() => undefined);
      if (!rec) {
        // A directory without a mapping: an unmap or a failed map that did not finish.
        const d = path.join(this.stateDir, n);
        if (!(await mnt.mountAt(path.join(d, 'mnt')))) await fs.rm(d, { recursive: true, force: true });
        continue;
      }
      const cluster = clusters.find((c) => c.clusterID === rec.clusterID);
      if (!cluster) {
        this.log.error({ clusterID: rec.clusterID, image: rec.image }, 'a mapped image belongs to a cluster no longer configured; left alone');
        continue;
      }
      const t: MapTarget = { cluster, pool: { pool: rec.pool, namespace: rec.namespace }, image: rec.image };
      const dev = await this.boundDevice(t, rec);
      if (dev && (await alive(rec))) continue;
      const creds = credsFor(cluster);
      if (!creds) {
        this.log.error({ image: imageSpec(t.pool, t.image) }, 'cannot re-map after a restart: the rbd config gives no default credentials for this cluster');
        continue;
      }
      try {
        await this.remap(t, rec, dev, creds);
      } catch (err) {
        this.log.error({ image: imageSpec(t.pool, t.image), err: err instanceof Error ? err.message : String(err) }, 're-mapping after a restart failed');
      }
    }
  }

  private async remap(t: MapTarget, rec: FuseMapping, oldDev: string | undefined, creds: Credentials): Promise<void> {
    const base = oldDev ? path.basename(oldDev) : '';
    const entries = oldDev
      ? (await mnt.mountTable()).filter((m) => m.device === oldDev || ((m.fstype === 'devtmpfs' || m.fstype === 'tmpfs') && m.root === `/${base}`))
      : [];
    for (const m of [...entries].reverse()) await mnt.umountOrDetach(m.target);
    await this.teardown(t, rec);
    const dev = await this.map(t, creds);
    let fsTarget: string | undefined;
    for (const m of entries) {
      const ro = m.options.includes('ro');
      if (m.device === oldDev && m.root === '/' && !fsTarget) {
        const opts = [...implicitMountOptions(m.fstype), ...m.options.filter((o) => KEPT_MOUNT_OPTIONS.has(o))];
        await mnt.mount(dev, m.target, m.fstype, opts);
        fsTarget = m.target;
      } else if (m.device === oldDev && fsTarget) {
        await mnt.bindMount(path.join(fsTarget, m.root), m.target, ro);
      } else if (m.device !== oldDev) {
        await mnt.bindMount(dev, m.target, ro);
      }
    }
    const rec2 = await readJson<FuseMapping>(this.recOf(t));
    if (rec2) await writeJsonAtomic(this.recOf(t), { ...rec2, remappedAt: new Date().toISOString() });
    this.log.warn(
      { image: imageSpec(t.pool, t.image), from: oldDev, to: dev, mounts: entries.map((m) => m.target) },
      're-mapped after its rbd-fuse helper died; the mounts on this node are back, but containers that were running still hold the dead device (I/O errors) and must be restarted',
    );
  }
}
