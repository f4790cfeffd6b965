// The three things the benchmark drives through the same operations:
//   ours      tscsi on its loop backend (node dist/driver/main.js), over CSI gRPC
//   hostpath  the kubernetes-csi hostpath driver (hostpathplugin), over CSI gRPC
//   raw       the host tools themselves (truncate, losetup, mkfs, mount, cp, rm), no gRPC
// Each step is named after the CSI RPC it stands for, so the figures line up.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { CsiClient, codeName } from '../sidecars/common/csi-client.js';
import { tool, makeXfsPool, cleanupDir } from './host.js';
import { optionsToArgv } from '../driver/config.js';

export type SubjectKey = 'ours' | 'hostpath' | 'raw';

export interface Subject {
  readonly key: SubjectKey;
  readonly label: string;
  /** The process whose RSS and CPU are the subject's (undefined: no long-lived process). */
  readonly pid: number | undefined;
  start(): Promise<void>;
  /** Stops the process (if any) and removes every mount, loop device and file it made. */
  cleanup(): Promise<void>;
  createVolume(name: string): Promise<string>;
  deleteVolume(id: string): Promise<void>;
  stage(id: string, staging: string): Promise<void>;
  publish(id: string, staging: string, target: string): Promise<void>;
  unpublish(id: string, target: string): Promise<void>;
  unstage(id: string, staging: string): Promise<void>;
  createSnapshot(name: string, sourceId: string): Promise<string>;
  deleteSnapshot(id: string): Promise<void>;
  /** Where staging and target paths go. */
  readonly workDir: string;
}

/** The error class of a failed step: a gRPC status name, or HOST_TOOL for a raw tool failure. */
export function errorCode(err: unknown): string {
  return codeName(err) ?? 'HOST_TOOL';
}

export interface CommonOptions {
  /** Work directory of this subject (created; removed by cleanup). */
  dir: string;
  volumeBytes: number;
  fsType: string;
  /** Size of the XFS pool image holding the subject's data. */
  poolBytes: number;
  /** Extra node flags for the driver process (e.g. --cpu-prof). */
  nodeFlags?: string[];
}

/** A CSI driver process on its own socket, driven through the project's CSI client. */
abstract class CsiSubject implements Subject {
  abstract readonly key: SubjectKey;
  abstract readonly label: string;
  proc?: ChildProcess;
  client?: CsiClient;
  readonly socket: string;
  readonly logFile: string;
  readonly workDir: string;

  constructor(readonly opts: CommonOptions) {
    this.socket = path.join(opts.dir, 'csi.sock');
    this.logFile = path.join(opts.dir, 'driver.log');
    this.workDir = path.join(opts.dir, 'work');
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  protected abstract command(): Promise<{ file: string; args: string[] }>;
  protected async prepare(): Promise<void> {}

  async start(): Promise<void> {
    await fs.mkdir(this.workDir, { recursive: true });
    await this.prepare();
    const { file, args } = await this.command();
    const log = await fs.open(this.logFile, 'a');
    this.proc = spawn(file, args, { stdio: ['ignore', log.fd, log.fd] });
    await log.close();
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (this.proc.exitCode !== null) throw new Error(`${this.label} exited at start: ${(await this.log()).slice(-2000)}`);
      if (Date.now() > deadline) throw new Error(`${this.label} did not become ready: ${(await this.log()).slice(-2000)}`);
      if (existsSync(this.socket)) {
        const c = new CsiClient(this.socket, 2_000);
        const ready = await c.Identity.Probe({}).then(
          (r) => r.ready?.value !== false,
          () => false,
        );
        c.close();
        if (ready) break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    this.client = new CsiClient(this.socket, 300_000);
  }

  async log(): Promise<string> {
    return fs.readFile(this.logFile, 'utf8').catch(() => '');
  }

  async stopProcess(): Promise<void> {
    this.client?.close();
    this.client = undefined;
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => p.once('exit', () => resolve()));
    p.kill('SIGTERM');
    const t = setTimeout(() => p.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(t);
  }

  async cleanup(): Promise<void> {
    await this.stopProcess();
    await cleanupDir(this.opts.dir);
  }

  protected cap() {
    return { mount: { fs_type: this.opts.fsType, mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
  }

  private get c(): CsiClient {
    if (!this.client) throw new Error(`${this.label} is not running`);
    return this.client;
  }

  async createVolume(name: string): Promise<string> {
    const r = await this.c.Controller.CreateVolume({
      name,
      capacity_range: { required_bytes: String(this.opts.volumeBytes) },
      volume_capabilities: [this.cap()],
    });
    return r.volume.volume_id as string;
  }
  async deleteVolume(id: string): Promise<void> {
    await this.c.Controller.DeleteVolume({ volume_id: id });
  }
  async stage(id: string, staging: string): Promise<void> {
    await this.c.Node.NodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: this.cap() });
  }
  async publish(id: string, staging: string, target: string): Promise<void> {
    await this.c.Node.NodePublishVolume({ volume_id: id, staging_target_path: staging, target_path: target, volume_capability: this.cap() });
  }
  async unpublish(id: string, target: string): Promise<void> {
    await this.c.Node.NodeUnpublishVolume({ volume_id: id, target_path: target });
  }
  async unstage(id: string, staging: string): Promise<void> {
    await this.c.Node.NodeUnstageVolume({ volume_id: id, staging_target_path: staging });
  }
  async createSnapshot(name: string, sourceId: string): Promise<string> {
    const r = await this.c.Controller.CreateSnapshot({ name, source_volume_id: sourceId });
    return r.snapshot.snapshot_id as string;
  }
  async deleteSnapshot(id: string): Promise<void> {
    await this.c.Controller.DeleteSnapshot({ snapshot_id: id });
  }
}

// From dist/bench/ (npm run bench) the driver is ../driver/main.js; from bench/ (vitest on
// the sources) it is the built ../dist/driver/main.js.
const UP = path.resolve(import.meta.dirname, '..');
export const DRIVER_MAIN = existsSync(path.join(UP, 'package.json')) ? path.join(UP, 'dist', 'driver', 'main.js') : path.join(UP, 'driver', 'main.js');

/** tscsi: the loop backend with its data directory on its own XFS pool. */
export class OursSubject extends CsiSubject {
  readonly key = 'ours' as const;
  readonly label = 'tscsi (loop)';

  protected async command() {
    return {
      file: process.execPath,
      args: [
        ...(this.opts.nodeFlags ?? []),
        // TSCSI_BENCH_DRIVER: another build of the driver (an experiment), else dist/driver/main.js.
        process.env.TSCSI_BENCH_DRIVER ?? DRIVER_MAIN,
        ...optionsToArgv({
          endpoint: `unix://${this.socket}`,
          nodeId: 'bench-node',
          dataDir: path.join(this.opts.dir, 'data'),
          dataPoolSize: String(this.opts.poolBytes),
          stateDir: path.join(this.opts.dir, 'node'),
          allowedPathRoot: [this.workDir],
          maxVolumesPerNode: 0,
          defaultFsType: this.opts.fsType,
          logLevel: 'warn',
        }),
      ],
    };
  }
}

/** kubernetes-csi hostpath: volumes are directories (mount) or files on loop devices (block). */
export class HostpathSubject extends CsiSubject {
  readonly key = 'hostpath' as const;
  readonly label: string;

  constructor(
    opts: CommonOptions,
    readonly binary: string,
    readonly tag: string,
  ) {
    super(opts);
    this.label = `hostpath ${tag}`;
  }

  protected override async prepare(): Promise<void> {
    // Its state directory on the same kind of XFS pool as ours, for a like-for-like disk.
    await makeXfsPool(path.join(this.opts.dir, 'data'), this.opts.poolBytes);
  }

  protected async command() {
    return {
      file: this.binary,
      args: [
        `--endpoint=unix://${this.socket}`,
        '--nodeid=bench-node',
        '--drivername=hostpath.csi.k8s.io',
        `--statedir=${path.join(this.opts.dir, 'data')}`,
        '--v=0',
      ],
    };
  }
}

/** The host tools doing what a loop-backed driver must do, from the same harness, no gRPC. */
export class RawSubject implements Subject {
  readonly key = 'raw' as const;
  readonly label = 'raw tools';
  readonly pid = undefined;
  readonly workDir: string;
  private readonly data: string;
  private readonly devices = new Map<string, string>();

  constructor(readonly opts: CommonOptions) {
    this.data = path.join(opts.dir, 'data');
    this.workDir = path.join(opts.dir, 'work');
  }

  async start(): Promise<void> {
    await fs.mkdir(this.workDir, { recursive: true });
    await makeXfsPool(this.data, this.opts.poolBytes);
  }

  async cleanup(): Promise<void> {
    await cleanupDir(this.opts.dir);
  }

  private file(id: string): string {
    return path.join(this.data, `${id}.img`);
  }

  async createVolume(name: string): Promise<string> {
    await tool('truncate', ['-s', String(this.opts.volumeBytes), this.file(name)]);
    return name;
  }
  async deleteVolume(id: string): Promise<void> {
    await tool('rm', ['-f', '--', this.file(id)]);
  }
  async stage(id: string, staging: string): Promise<void> {
    const dev = (await tool('losetup', ['-f', '--show', '--sector-size', '4096', '--direct-io=on', this.file(id)])).trim();
    this.devices.set(id, dev);
    const fsType = this.opts.fsType;
    if (fsType === 'ext4' || fsType === 'ext3') await tool(`mkfs.${fsType}`, ['-q', '-F', '-E', 'lazy_itable_init=1,lazy_journal_init=1', dev]);
    else await tool(`mkfs.${fsType}`, ['-q', '-f', dev]);
    await fs.mkdir(staging, { recursive: true });
    await tool('mount', ['-t', fsType, dev, staging]);
  }
  async publish(_id: string, staging: string, target: string): Promise<void> {
    await fs.mkdir(target, { recursive: true, mode: 0o750 });
    await tool('mount', ['--bind', staging, target]);
  }
  async unpublish(_id: string, target: string): Promise<void> {
    await tool('umount', [target]);
    await fs.rmdir(target);
  }
  async unstage(id: string, staging: string): Promise<void> {
    await tool('umount', [staging]);
    const dev = this.devices.get(id);
    if (dev) {
      await tool('losetup', ['-d', dev]);
      this.devices.delete(id);
    }
  }
  async createSnapshot(name: string, sourceId: string): Promise<string> {
    await tool('cp', ['--reflink=always', '--', this.file(sourceId), this.file(`snap-${name}`)]);
    return `snap-${name}`;
  }
  async deleteSnapshot(id: string): Promise<void> {
    await tool('rm', ['-f', '--', this.file(id)]);
  }
}
