// One real Ceph cluster (test/lib/ceph) and a driver serving it through the fuse mapper (these
// VMs have neither krbd nor nbd), for the integration files that need both. stop() takes down
// whatever start() got to, also after a start that failed half-way.
import fs from 'node:fs/promises';
import path from 'node:path';
import { startCeph, stopCeph, cleanupDriverDir, type CephEnv } from './ceph/cluster.js';
import { DriverHarness, type HarnessOptions } from './driver-harness.js';

export class RbdDriverRun {
  root = '';
  ceph!: CephEnv;
  /** The driver's --rbd-config, as written to its file. */
  config!: Record<string, unknown>;
  h?: DriverHarness;

  /** `prefix`: of the run's directory under /tmp; `clusterID`: the Ceph cluster's ID in the config. */
  constructor(
    private readonly prefix: string,
    readonly clusterID: string,
  ) {}

  async start(driver: HarnessOptions['driver'] = {}): Promise<DriverHarness> {
    this.root = await fs.mkdtemp(path.join('/tmp', this.prefix));
    this.ceph = await startCeph(path.join(this.root, 'ceph'));
    const c = this.ceph;
    this.config = { clusters: [{ clusterID: this.clusterID, monitors: [c.mon], pools: [c.pool], user: c.user, keyFile: c.keyFile }], mapper: 'fuse' };
    const file = this.configFile;
    await fs.writeFile(file, JSON.stringify(this.config));
    this.h = await DriverHarness.start({ driver: { rbdConfig: file, rbdMapper: 'fuse', defaultBackend: 'rbd', ...driver } });
    return this.h;
  }

  /** The --rbd-config file (for more drivers on the same cluster). */
  get configFile(): string {
    return path.join(this.root, 'rbd.json');
  }

  async stop(): Promise<void> {
    await this.h?.stopProcess();
    if (this.h) await cleanupDriverDir(this.h.dir);
    await this.h?.cleanup();
    if (this.root) {
      await stopCeph(path.join(this.root, 'ceph'));
      await fs.rm(this.root, { recursive: true, force: true });
    }
  }
}
