// Starts the real driver (dist/) on a private socket and directories, with its loop
// backend on its own XFS pool image, and removes every trace of it afterwards: mounts
// under its directory, loop devices backed by its files, the directory itself.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { CsiClient } from '../../sidecars/common/csi-client.js';
import { optionsToArgv, type DriverOptions } from '../../driver/config.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
export const DRIVER_MAIN = path.join(ROOT, 'dist', 'driver', 'main.js');

export interface HarnessOptions {
  /** More driver options (backends, limits); the harness sets the socket, directories and node ID. */
  driver?: Omit<DriverOptions, 'endpoint' | 'nodeId' | 'dataDir' | 'stateDir' | 'allowedPathRoot'>;
  nodeId?: string;
  /** Where to serve (default: csi.sock in the harness's own directory). */
  socketPath?: string;
  /** TSCSI_FAILPOINTS for the first start only (see startProcess). */
  failpoints?: string;
  /** More --allowed-path-root directories besides the harness's staging/ and pods/. */
  pathRoots?: string[];
  /** false: no data directory (and so, in controller mode, no loop backend). Default: one on its own XFS pool. */
  loop?: boolean;
  /** Environment variables the driver process gets on top of the test's (PATH, for one). */
  env?: Record<string, string>;
}

export class DriverHarness {
  readonly dir: string;
  readonly socket: string;
  readonly dataDir: string;
  readonly stateDir: string;
  readonly logFile: string;
  proc?: ChildProcess;
  client?: CsiClient;

  private constructor(dir: string, private readonly opts: HarnessOptions) {
    this.dir = dir;
    this.socket = opts.socketPath ?? path.join(dir, 'csi.sock');
    this.dataDir = path.join(dir, 'data');
    this.stateDir = path.join(dir, 'node');
    this.logFile = path.join(dir, 'driver.log');
  }

  static async start(opts: HarnessOptions = {}): Promise<DriverHarness> {
    if (!existsSync(DRIVER_MAIN)) throw new Error(`${DRIVER_MAIN} missing: run npm run build first`);
    const h = new DriverHarness(await fs.mkdtemp(path.join(os.tmpdir(), 'tscsi-it-')), opts);
    for (const root of ['staging', 'pods']) await fs.mkdir(path.join(h.dir, root));
    try {
      await h.startProcess(opts.failpoints);
    } catch (err) {
      // A driver that exits during start-up may have mounted its XFS pool (the loop backend is
      // built first) and attached loop devices: the caller gets no harness to clean up with.
      await h.cleanup();
      throw err;
    }
    return h;
  }

  get nodeId(): string {
    return this.opts.nodeId ?? 'it-node';
  }

  /** What the driver runs with: the harness's own socket and directories, then the test's options. */
  driverOptions(): DriverOptions {
    return {
      endpoint: `unix://${this.socket}`,
      nodeId: this.nodeId,
      ...(this.opts.loop === false ? {} : { dataDir: this.dataDir, dataPoolSize: '20Gi' }),
      stateDir: this.stateDir,
      // Tests stage and publish below these, as kubelet does below /var/lib/kubelet; the
      // harness's data and state directories stay outside them.
      allowedPathRoot: [path.join(this.dir, 'staging'), path.join(this.dir, 'pods'), ...(this.opts.pathRoots ?? [])],
      logLevel: 'debug',
      ...this.opts.driver,
    };
  }

  /**
   * failpoints: TSCSI_FAILPOINTS for this start only. The driver then leads its own process
   * group, so a fail point's kill takes its children with it, as a container crash does.
   */
  async startProcess(failpoints?: string): Promise<void> {
    await fs.mkdir(path.dirname(this.socket), { recursive: true });
    const log = await fs.open(this.logFile, 'a');
    const env = { ...process.env, ...this.opts.env };
    delete env.TSCSI_FAILPOINTS;
    if (failpoints) env.TSCSI_FAILPOINTS = failpoints;
    this.proc = spawn(
      process.execPath,
      [DRIVER_MAIN, ...optionsToArgv(this.driverOptions())],
      { stdio: ['ignore', 'ignore', log.fd], env, detached: !!failpoints },
    );
    await log.close();
    // Ready means answering Probe: a socket file alone may be a stale one from a killed run.
    // Node starts many times slower in the guest tier's emulated CPU (TCG; minutes on a busy machine).
    const deadline = Date.now() + (process.env.TSCSI_GUEST ? 600_000 : 20_000);
    for (;;) {
      if (this.proc.exitCode !== null) throw new Error(`driver exited: ${await this.log()}`);
      if (Date.now() > deadline) throw new Error(`driver did not become ready: ${await this.log()}`);
      if (existsSync(this.socket)) {
        const client = new CsiClient(this.socket, 2_000);
        const ready = await client.Identity.Probe({}).then(
          (r) => r.ready?.value === true,
          () => false,
        );
        client.close();
        if (ready) break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    this.client = new CsiClient(this.socket);
  }

  /** Stops the driver with SIGTERM (or SIGKILL to simulate a crash) and waits for it. */
  async stopProcess(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    this.client?.close();
    this.client = undefined;
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return p?.exitCode ?? null;
    const exited = new Promise<number | null>((resolve) => p.once('exit', (code) => resolve(code)));
    p.kill(signal);
    return exited;
  }

  async log(): Promise<string> {
    return fs.readFile(this.logFile, 'utf8').catch(() => '');
  }

  /**
   * Order matters: volume mounts, then the volumes' loop devices (their files live in the
   * pool), then the pool's own mount and loop device. Unmounting the pool first would
   * leave volume devices pointing into a detached filesystem.
   */
  async cleanup(): Promise<void> {
    await this.stopProcess();
    const umountAll = async (targets: string[]) => {
      for (const m of targets.sort().reverse()) {
        const r = await execa('umount', [m], { reject: false });
        if (r.exitCode !== 0) await execa('umount', ['-l', m], { reject: false });
      }
    };
    await umountAll((await mountsUnder(this.dir)).filter((m) => m !== this.dataDir));
    for (const d of await loopDevicesUnder(this.dataDir)) await execa('losetup', ['-d', d], { reject: false });
    await umountAll((await mountsUnder(this.dir)).filter((m) => m === this.dataDir));
    for (const d of await loopDevicesUnder(this.dir)) await execa('losetup', ['-d', d], { reject: false });
    await fs.rm(this.dir, { recursive: true, force: true });
  }
}

/** Every bound loop device on the host and the backing file it shows. */
export async function loopDevices(): Promise<Array<{ name: string; backFile: string }>> {
  const r = await execa('losetup', ['-l', '-n', '-J'], { reject: false });
  if (!String(r.stdout).trim()) return [];
  const j = JSON.parse(String(r.stdout)) as { loopdevices: Array<{ name: string; 'back-file': string | null }> };
  return j.loopdevices.flatMap((d) => (d['back-file'] ? [{ name: d.name, backFile: d['back-file'] }] : []));
}

/** Loop devices whose backing file lies under dir. */
export async function loopDevicesUnder(dir: string): Promise<string[]> {
  return (await loopDevices()).filter((d) => d.backFile.startsWith(dir + '/')).map((d) => d.name);
}

export async function mountsUnder(dir: string): Promise<string[]> {
  const r = await execa('findmnt', ['-rn', '-o', 'TARGET'], { reject: false });
  return String(r.stdout)
    .split('\n')
    .filter((m) => m.startsWith(dir + '/'));
}

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

export function mountCap(fsType = '', mode = 'SINGLE_NODE_WRITER', mountFlags: string[] = []) {
  return { mount: { fs_type: fsType, mount_flags: mountFlags }, access_mode: { mode } };
}

export function blockCap(mode = 'SINGLE_NODE_WRITER') {
  return { block: {}, access_mode: { mode } };
}
